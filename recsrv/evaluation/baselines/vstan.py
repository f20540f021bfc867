"""VSTAN: STAN with V-SKNN's IDF and a decay by where the match lies in the current
session (Ludewig et al., "Empirical analysis of session-based recommendation
algorithms", 2021; session-rec's `algorithms/knn/vstan.py`).

On top of `stan.Stan`, each item y of neighbour n is multiplied by
(1 + λ_idf · idf(y)), idf(y) = ln(#sessions / #events of y) over all steps seen so far,
and by exp((j - L) / λ_ipw), j the latest position in the current session s (length L)
of an item n holds.

Defaults from session-rec's vstan.py constructor: sample_size=5000, λ_spw=1.02,
λ_snh=5 days, λ_inh=2.05, λ_ipw=1.02, λ_idf=5, similarity "cosine" (as in STAN);
k=100, the documented default (the constructor needs it).
"""

from __future__ import annotations

import math

from recsrv.evaluation.baselines.pop import Pop
from recsrv.evaluation.baselines.stan import DAY, Stan


class Vstan(Stan):
    """STAN, times IDF and the position in the session of the neighbour's latest match."""

    name = "vstan"

    def __init__(
        self,
        pop: Pop,
        k: int = 100,
        sample_size: int = 5000,
        lambda_spw: float = 1.02,
        lambda_snh: float = 5 * DAY,
        lambda_inh: float = 2.05,
        lambda_ipw: float = 1.02,
        lambda_idf: float = 5.0,
    ) -> None:
        super().__init__(pop, k, sample_size, lambda_spw, lambda_snh, lambda_inh)
        self.lambda_ipw = lambda_ipw
        self.lambda_idf = lambda_idf

    def neighbour_weight(
        self, position: dict[str, int], length: int, neighbour: dict[str, int]
    ) -> float:
        latest = max(i for item, i in position.items() if item in neighbour)
        return math.exp((latest - length) / self.lambda_ipw)

    def item_weight(self, item: str) -> float:
        return 1.0 + self.lambda_idf * self.index.idf(item)
