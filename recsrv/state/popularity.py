"""Time-decayed popularity of every item, on event time.

One float per item, stored with the ExpScale trick so an event updates one entry and
an older event simply adds less. Ranking compares stored values directly; the decay
factor is applied only to the scores that are reported.

Stored values only ever grow (a rebase scales them all alike), so the set of the
LEADERS most popular items can be kept exactly, one event at a time: an item enters
it only when its own score rises past the set's floor. Most reads then rank a few
hundred leaders instead of partitioning every item.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from recsrv.state.decay import ExpScale
from recsrv.state.items import grown, top_k

LEADERS: Final = 512

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]


class Popularity:
    def __init__(self, half_life_s: float, capacity: int) -> None:
        self.scores = np.zeros(capacity, dtype=np.float64)
        self.scale = ExpScale(half_life_s)
        # The most popular items (unordered; the first leader_count are used) and the
        # smallest stored score among them once the set is full.
        self.leaders = np.full(LEADERS, -1, dtype=np.int64)
        self.leader_count = 0
        self.floor = 0.0
        self._leader_set: set[int] = set()
        # A flat view for the per-event path: scalar access without numpy's overhead.
        self._flat_scores = self.scores.data.cast("B").cast("d")

    def grow(self, capacity: int) -> None:
        self.scores = grown(self.scores, capacity, 0.0)
        self._flat_scores = self.scores.data.cast("B").cast("d")

    def to_arrays(self, n: int) -> dict[str, npt.NDArray[Any]]:
        """Scores of the first n items, the leaders in their slot order, t_ref and the
        floor (views where possible, valid until the next write)."""
        return {
            "scores": self.scores[:n],
            "leaders": self.leaders[: self.leader_count],
            "t_ref": np.array([self.scale.t_ref]),
            "floor": np.array([self.floor]),
        }

    def restore(self, arrays: Mapping[str, npt.NDArray[Any]]) -> None:
        """Take over what to_arrays gave; scores must already have room for the items."""
        scores = arrays["scores"]
        self.scores[: len(scores)] = scores
        leaders = arrays["leaders"]
        self.leaders[: len(leaders)] = leaders
        self.leader_count = len(leaders)
        self._leader_set = set(leaders.tolist())
        self.scale.t_ref = float(arrays["t_ref"][0])
        self.floor = float(arrays["floor"][0])

    def add(self, idx: int, weight: float, ts: float) -> None:
        if weight <= 0.0:
            return
        if self.scale.due(ts):
            shrink = self.scale.rebase(ts)
            self.scores *= shrink
            self.floor *= shrink
        scores = self._flat_scores
        scores[idx] += weight * self.scale.write_factor(ts)
        if idx in self._leader_set:
            return
        if self.leader_count < LEADERS:
            self.leaders[self.leader_count] = idx
            self.leader_count += 1
            self._leader_set.add(idx)
        elif scores[idx] > self.floor:
            self._replace_weakest_leader(idx)

    def current(self, idx: int, now: float) -> float:
        """Decayed popularity of one item at `now`."""
        return float(self.scores[idx]) * self.scale.read_factor(now)

    def top(self, k: int, eligible: npt.NDArray[np.bool_], now: float) -> tuple[Ints, Floats]:
        """The k most popular items among `eligible` (a mask over the first n items).

        Items with no popularity at all come last, in index order, so a shop whose
        items have no events yet still gets a stable list.
        """
        if k <= 0 or len(eligible) == 0:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
        picked = self._top_leaders(k, eligible)
        if picked is None:
            picked = self._top_by_scan(k, eligible)
        if len(picked) < k:
            stored = self.scores[: len(eligible)]
            cold = np.flatnonzero(eligible & (stored <= 0.0))[: k - len(picked)]
            picked = np.concatenate((picked, cold))
        return picked, self.scores[picked] * self.scale.read_factor(now)

    def _top_leaders(self, k: int, eligible: npt.NDArray[np.bool_]) -> Ints | None:
        """Top k from the leaders; None if too few of them are eligible to be sure."""
        leaders = self.leaders[: self.leader_count]
        # Sorted, so that ties go to the lower index as in a full scan.
        leaders = np.sort(leaders[eligible[leaders] & (self.scores[leaders] > 0.0)])
        if len(leaders) < k and self.leader_count == LEADERS:
            return None  # an item outside the set may qualify
        # While the set is not full, every item with a positive score is in it.
        return leaders[top_k(self.scores[leaders], k)]

    def _top_by_scan(self, k: int, eligible: npt.NDArray[np.bool_]) -> Ints:
        stored = self.scores[: len(eligible)]
        candidates = np.flatnonzero(eligible & (stored > 0.0))
        return candidates[top_k(stored[candidates], k)]

    def _replace_weakest_leader(self, idx: int) -> None:
        scores = self.scores[self.leaders]
        weakest = int(scores.argmin())
        # The floor can be stale low (leaders only gain): compare with the true minimum.
        if self.scores[idx] > scores[weakest]:
            self._leader_set.discard(int(self.leaders[weakest]))
            self._leader_set.add(idx)
            self.leaders[weakest] = idx
            scores[weakest] = self.scores[idx]
        self.floor = float(scores.min())
