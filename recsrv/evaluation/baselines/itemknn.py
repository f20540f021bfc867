"""Item-kNN: items co-occurring in sessions with the session's last item (by ts), by
cosine similarity of their session vectors (Ludewig & Jannach, "Evaluation of
session-based recommendation algorithms", 2018).

cos(a, b) = #sessions with a and b / √(#sessions with a · #sessions with b).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Set

from recsrv.evaluation.baselines.base import Step, best
from recsrv.evaluation.baselines.pop import Pop
from recsrv.evaluation.baselines.sessions import Sequences


class ItemKnn:
    """Cosine similarity of items over sessions, from the session's last item."""

    name = "itemknn"

    def __init__(self, pop: Pop) -> None:
        self.pop = pop
        self.sequences = Sequences()
        self.item_sets: dict[str, set[str]] = defaultdict(set)
        self.co_counts: dict[str, Counter[str]] = defaultdict(Counter)
        self.session_counts: Counter[str] = Counter()

    def observe(self, step: Step) -> None:
        self.sequences.add(step)
        items = self.item_sets[step.session_id]
        item_id = step.item_id
        if item_id in items:
            return
        for other in items:
            self.co_counts[item_id][other] += 1
            self.co_counts[other][item_id] += 1
        self.session_counts[item_id] += 1
        items.add(item_id)

    def scores(self, session_id: str, user_id: str | None, now: float) -> dict[str, float]:
        last = self.sequences.last(session_id)
        if last is None:
            return {}
        norm = self.session_counts[last]
        return {
            other: count / math.sqrt(norm * self.session_counts[other])
            for other, count in self.co_counts.get(last, Counter()).items()
        }

    def recommend(
        self, session_id: str, user_id: str | None, k: int, exclude: Set[str], now: float
    ) -> list[str]:
        scores = self.scores(session_id, user_id, now)
        return self.pop.fill(best(scores, k, exclude), k, exclude)
