"""V-SKNN: session-kNN that weighs the current session's recent items more, and the items
of neighbours that match a recent item more (Ludewig & Jannach 2018, session-rec's
`VMContextKNN` in `algorithms/knn/vsknn.py`).

For the current session s of length L (repeats included), item positions i = 1…L; an
item seen twice keeps its later position.

- w(i) = i / L (session-rec's `weighting="div"`).
- sim(s, n) = Σ_{x ∈ s ∩ n} w(x) / |s|, |s| the distinct items of s (session-rec's `vec`).
- Candidates: the `sample_size` sessions with the latest ts sharing an item with s;
  the `k` most similar are the neighbours.
- score(y) = Σ_{n ∋ y} sim(s, n) / step(n) · (1 + λ_idf · idf(y)), step(n) = L - j + 1
  for j the latest position in s of an item n holds (`weighting_score="div"`), and
  idf(y) = ln(#sessions / #events of y), both counted over all steps seen so far.

Defaults: k=100 (the documented default of session-rec's vsknn.py, whose constructor
needs it), sample_size=1000 (session-rec's vsknn.py default), λ_idf=5 (session-rec's
vstan.py `lambda_idf` default; vsknn.py's `idf_weighting` is off by default and tuned in
{1, 2, 5, 10} in its configurations, so the VSTAN value is used for both).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Set

from recsrv.evaluation.baselines.base import Step, best
from recsrv.evaluation.baselines.pop import Pop
from recsrv.evaluation.baselines.sessions import SessionIndex, nearest


class VSessionKnn:
    """Session-kNN with linear position weights, 1/step decay and IDF."""

    name = "vsknn"

    def __init__(
        self, pop: Pop, k: int = 100, sample_size: int = 1000, lambda_idf: float = 5.0
    ) -> None:
        self.pop = pop
        self.k = k
        self.lambda_idf = lambda_idf
        self.index = SessionIndex(sample_size)

    def observe(self, step: Step) -> None:
        self.index.add(step)

    def scores(self, session_id: str, user_id: str | None, now: float) -> dict[str, float]:
        current = self.index.of(session_id)
        position, length = self.index.positions(current)
        if not length:
            return {}
        weights = {item: i / length for item, i in position.items()}
        sessions, overlap = self.index.candidates(current, weights)
        scores: dict[str, float] = defaultdict(float)
        boost: dict[str, float] = {}
        for other, sim in nearest(sessions, overlap / len(position), self.k):
            items = self.index.item_sets[other]
            latest = max(i for item, i in position.items() if item in items)
            decayed = sim / (length - latest + 1)
            for item in items:
                factor = boost.get(item)
                if factor is None:
                    factor = boost[item] = 1.0 + self.lambda_idf * self.index.idf(item)
                scores[item] += decayed * factor
        return scores

    def recommend(
        self, session_id: str, user_id: str | None, k: int, exclude: Set[str], now: float
    ) -> list[str]:
        scores = self.scores(session_id, user_id, now)
        return self.pop.fill(best(scores, k, exclude), k, exclude)
