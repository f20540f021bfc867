"""Reference next-item algorithms, to measure recsrv against in the same run.

Simple, standard formulations from the session-based recommendation literature
(Ludewig & Jannach, "Evaluation of session-based recommendation algorithms", 2018):

- POP: the most interacted-with items so far;
- item-kNN: items co-occurring in sessions with the session's last item, by cosine
  similarity of their session vectors;
- SR (sequential rules): items that followed the last item within a few steps in
  other sessions, weighted 1/distance;
- SKNN (session-kNN): items of the past sessions most similar to the current one
  (cosine over item sets, among the most recent sessions sharing an item).

Each learns online from every interaction as it is replayed, exactly what recsrv's
model sees, and tops a short list up with POP, as recsrv tops up with popular items.
Pure Python and numpy; not on the serving path.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Set

import numpy as np
import numpy.typing as npt

from recsrv.evaluation.baselines.base import Step, best


class Pop:
    """Most popular so far: a count per item, in a numpy array for fast top-k."""

    name = "pop"

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.ids: list[str] = []
        self.counts: npt.NDArray[np.float64] = np.zeros(1024)

    def observe(self, step: Step) -> None:
        _session_id, item_id = step.session_id, step.item_id
        idx = self.index.get(item_id)
        if idx is None:
            idx = self.index[item_id] = len(self.ids)
            self.ids.append(item_id)
            if idx == len(self.counts):
                self.counts = np.concatenate((self.counts, np.zeros(len(self.counts))))
        self.counts[idx] += 1.0

    def recommend(
        self, session_id: str, user_id: str | None, k: int, exclude: Set[str], now: float
    ) -> list[str]:
        n = len(self.ids)
        if n == 0 or k <= 0:
            return []
        scores = self.counts[:n].copy()
        for item in exclude:
            idx = self.index.get(item)
            if idx is not None:
                scores[idx] = -1.0
        take = min(k, n)
        top = np.argpartition(-scores, take - 1)[:take]
        # Highest count first; equal counts in order of first appearance.
        top = top[np.lexsort((top, -scores[top]))]
        return [self.ids[i] for i in top if scores[i] > 0.0]

    def fill(self, items: list[str], k: int, exclude: Set[str]) -> list[str]:
        """`items` topped up to k with popular items not excluded and not listed yet."""
        if len(items) >= k:
            return items
        listed = set(items)
        more = self.recommend("", None, k + len(listed), exclude | listed, 0.0)
        return items + more[: k - len(items)]


class _Sessions:
    """What each session did so far: its item sequence and its set of items."""

    def __init__(self) -> None:
        self.sequences: dict[str, list[str]] = defaultdict(list)
        self.item_sets: dict[str, set[str]] = defaultdict(set)

    def last(self, session_id: str) -> str | None:
        sequence = self.sequences.get(session_id)
        return sequence[-1] if sequence else None


class ItemKnn:
    """Cosine similarity of items over sessions, from the session's last item."""

    name = "itemknn"

    def __init__(self, pop: Pop) -> None:
        self.pop = pop
        self.sessions = _Sessions()
        self.co_counts: dict[str, Counter[str]] = defaultdict(Counter)
        self.session_counts: Counter[str] = Counter()

    def observe(self, step: Step) -> None:
        session_id, item_id = step.session_id, step.item_id
        self.sessions.sequences[session_id].append(item_id)
        items = self.sessions.item_sets[session_id]
        if item_id in items:
            return
        for other in items:
            self.co_counts[item_id][other] += 1
            self.co_counts[other][item_id] += 1
        self.session_counts[item_id] += 1
        items.add(item_id)

    def recommend(
        self, session_id: str, user_id: str | None, k: int, exclude: Set[str], now: float
    ) -> list[str]:
        last = self.sessions.last(session_id)
        scores: dict[str, float] = {}
        if last is not None:
            norm = self.session_counts[last]
            for other, count in self.co_counts[last].items():
                scores[other] = count / math.sqrt(norm * self.session_counts[other])
        return self.pop.fill(best(scores, k, exclude), k, exclude)


class SequentialRules:
    """Rules a → b for b following a within `steps` positions, weighted 1/distance."""

    name = "sr"

    def __init__(self, pop: Pop, steps: int = 10) -> None:
        self.pop = pop
        self.steps = steps
        self.sessions = _Sessions()
        self.rules: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))

    def observe(self, step: Step) -> None:
        session_id, item_id = step.session_id, step.item_id
        sequence = self.sessions.sequences[session_id]
        for distance in range(1, min(self.steps, len(sequence)) + 1):
            earlier = sequence[-distance]
            if earlier != item_id:
                self.rules[earlier][item_id] += 1.0 / distance
        sequence.append(item_id)

    def recommend(
        self, session_id: str, user_id: str | None, k: int, exclude: Set[str], now: float
    ) -> list[str]:
        last = self.sessions.last(session_id)
        scores: Mapping[str, float] = self.rules[last] if last is not None else {}
        return self.pop.fill(best(scores, k, exclude), k, exclude)


class SessionKnn:
    """Items of the `neighbors` most similar sessions among the `sample` most recent
    ones that share an item with the current session (cosine over item sets)."""

    name = "sknn"

    def __init__(self, pop: Pop, neighbors: int = 100, sample: int = 500) -> None:
        self.pop = pop
        self.neighbors = neighbors
        self.sample = sample
        self.session_index: dict[str, int] = {}
        self.item_sets: list[set[str]] = []
        # item → indices of the sessions holding it, oldest first.
        self.item_sessions: dict[str, list[int]] = defaultdict(list)

    def observe(self, step: Step) -> None:
        session_id, item_id = step.session_id, step.item_id
        idx = self.session_index.get(session_id)
        if idx is None:
            idx = self.session_index[session_id] = len(self.item_sets)
            self.item_sets.append(set())
        items = self.item_sets[idx]
        if item_id not in items:
            items.add(item_id)
            self.item_sessions[item_id].append(idx)

    def recommend(
        self, session_id: str, user_id: str | None, k: int, exclude: Set[str], now: float
    ) -> list[str]:
        idx = self.session_index.get(session_id, -1)
        current = self.item_sets[idx] if idx >= 0 else set()
        overlap: Counter[int] = Counter()
        for item in current:
            overlap.update(self.item_sessions[item][-self.sample :])
        overlap.pop(idx, None)
        recent = heapq.nlargest(self.sample, overlap)  # higher index = more recent
        size = math.sqrt(len(current)) if current else 1.0
        similarity = {
            other: overlap[other] / (size * math.sqrt(len(self.item_sets[other])))
            for other in recent
        }
        nearest = heapq.nlargest(self.neighbors, similarity, key=similarity.__getitem__)
        scores: dict[str, float] = defaultdict(float)
        for other in nearest:
            for item in self.item_sets[other]:
                scores[item] += similarity[other]
        return self.pop.fill(best(scores, k, exclude), k, exclude)
