"""SKNN (session-kNN): items of the past sessions most similar to the current one
(Jannach & Ludewig 2017; Ludewig & Jannach 2018).

sim(s, n) = |s ∩ n| / (√|s| · √|n|) over distinct items (cosine of binary vectors),
among the `sample` sessions with the latest ts that share an item with s; the
`neighbors` most similar each add their similarity to every item they hold.
Defaults kept from recsrv's first SKNN: 100 neighbours, a sample of 500.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Set

import numpy as np

from recsrv.evaluation.baselines.base import Step, best
from recsrv.evaluation.baselines.pop import Pop
from recsrv.evaluation.baselines.sessions import SessionIndex, nearest


class SessionKnn:
    """Items of the `neighbors` most similar sessions among the `sample` most recent
    ones that share an item with the current session (cosine over item sets)."""

    name = "sknn"

    def __init__(self, pop: Pop, neighbors: int = 100, sample: int = 500) -> None:
        self.pop = pop
        self.neighbors = neighbors
        self.index = SessionIndex(sample)

    def observe(self, step: Step) -> None:
        self.index.add(step)

    def scores(self, session_id: str, user_id: str | None, now: float) -> dict[str, float]:
        current = self.index.of(session_id)
        if current < 0:
            return {}
        items = self.index.item_sets[current]
        sessions, overlap = self.index.candidates(current, dict.fromkeys(items, 1.0))
        similarity = overlap / (math.sqrt(len(items)) * np.sqrt(self.index.sizes[sessions]))
        scores: dict[str, float] = defaultdict(float)
        for other, sim in nearest(sessions, similarity, self.neighbors):
            for item in self.index.item_sets[other]:
                scores[item] += sim
        return scores

    def recommend(
        self, session_id: str, user_id: str | None, k: int, exclude: Set[str], now: float
    ) -> list[str]:
        scores = self.scores(session_id, user_id, now)
        return self.pop.fill(best(scores, k, exclude), k, exclude)
