"""STAN: sequence and time aware neighbourhood (Garg et al., SIGIR 2019), as session-rec's
`algorithms/knn/stan.py` computes it.

For the current session s of length L (repeats included), item positions i = 1…L; an
item seen twice keeps its later position.

- w(x) = exp((i(x) - L) / λ_spw), the session's recent items weigh more.
- sim(s, n) = Σ_{x ∈ s ∩ n} w(x) / (√Σ_{x ∈ s} w(x)² · √|n|) · exp(-|now - t(n)| / λ_snh),
  sums over distinct items, |n| the distinct items of n and t(n) its latest ts. The
  age is absolute (session-rec: signed), since in an unsorted file a neighbour may be
  later than `now`.
- Candidates: the `sample_size` sessions with the latest ts sharing an item with s;
  the `k` most similar are the neighbours.
- Each item y of neighbour n adds sim(s, n) · exp(-|p_n(y) - p*| / λ_inh), with p_n(y)
  the last position of y in n and p* the last position in n of any item s holds (as
  session-rec's `pos_i_star`: the shared item latest in n, not the one latest in s).

Defaults from session-rec's stan.py constructor: sample_size=5000, λ_spw=1.02,
λ_snh=5 days, λ_inh=2.05; k=100, the documented default (the constructor needs it).
session-rec gives λ_spw and λ_inh as plain numbers, not multiples of the mean session
length, so none is computed here.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Set

import numpy as np

from recsrv.evaluation.baselines.base import Step, best
from recsrv.evaluation.baselines.pop import Pop
from recsrv.evaluation.baselines.sessions import SessionIndex, nearest

DAY = 24 * 3600.0


class Stan:
    """Session-kNN with exponential position, recency and neighbour-position decays."""

    name = "stan"

    def __init__(
        self,
        pop: Pop,
        k: int = 100,
        sample_size: int = 5000,
        lambda_spw: float = 1.02,
        lambda_snh: float = 5 * DAY,
        lambda_inh: float = 2.05,
    ) -> None:
        self.pop = pop
        self.k = k
        self.lambda_spw = lambda_spw
        self.lambda_snh = lambda_snh
        self.lambda_inh = lambda_inh
        self.index = SessionIndex(sample_size)

    def observe(self, step: Step) -> None:
        self.index.add(step)

    def scores(self, session_id: str, user_id: str | None, now: float) -> dict[str, float]:
        current = self.index.of(session_id)
        position, length = self.index.positions(current)
        if not length:
            return {}
        weights = {item: math.exp((i - length) / self.lambda_spw) for item, i in position.items()}
        norm = math.sqrt(sum(w * w for w in weights.values()))
        sessions, overlap = self.index.candidates(current, weights)
        ages = np.abs(now - self.index.last_ts[sessions])
        similarity = (
            overlap / (norm * np.sqrt(self.index.sizes[sessions])) * np.exp(-ages / self.lambda_snh)
        )
        scores: dict[str, float] = defaultdict(float)
        for other, sim in nearest(sessions, similarity, self.k):
            neighbour = self.index.sequences[other]
            last = {item: p for p, item in enumerate(neighbour, 1)}
            anchor = max(p for item, p in last.items() if item in position)
            weight = sim * self.neighbour_weight(position, length, last)
            for item, p in last.items():
                factor = math.exp(-abs(p - anchor) / self.lambda_inh)
                scores[item] += weight * factor * self.item_weight(item)
        return scores

    def neighbour_weight(
        self, position: dict[str, int], length: int, neighbour: dict[str, int]
    ) -> float:
        """A factor for all items of one neighbour; none in STAN."""
        return 1.0

    def item_weight(self, item: str) -> float:
        """A factor for one candidate item; none in STAN."""
        return 1.0

    def recommend(
        self, session_id: str, user_id: str | None, k: int, exclude: Set[str], now: float
    ) -> list[str]:
        scores = self.scores(session_id, user_id, now)
        return self.pop.fill(best(scores, k, exclude), k, exclude)
