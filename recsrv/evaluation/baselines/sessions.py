"""Sessions as the baselines see them: items in `ts` order, whatever order steps arrive in.

`Sequences` is each session's item sequence, enough for the methods that look at the
last items only (item-kNN, SR). `SessionIndex` adds what the session-kNN family needs:
dense session indices, item sets, each session's latest ts, item → recent sessions
bounded to the sample size, and event counts for IDF.

A step that arrives late (its ts earlier than steps already seen for its session) is
inserted at its own time position; steps with equal ts keep their arrival order.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from recsrv.evaluation.baselines.base import Step

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]


def insert_in_time(items: list[str], times: list[float], item: str, ts: float) -> int:
    """Put `item` at its ts position (after equal ts) in the parallel lists; its index."""
    if not times or ts >= times[-1]:
        items.append(item)
        times.append(ts)
        return len(items) - 1
    at = bisect_right(times, ts)
    items.insert(at, item)
    times.insert(at, ts)
    return at


class Sequences:
    """Each session's items in ts order."""

    def __init__(self) -> None:
        self.items: dict[str, list[str]] = {}
        self.times: dict[str, list[float]] = {}

    def add(self, step: Step) -> int:
        """Place the step's item in its session; the index it went to."""
        items = self.items.setdefault(step.session_id, [])
        times = self.times.setdefault(step.session_id, [])
        return insert_in_time(items, times, step.item_id, step.ts)

    def get(self, session_id: str) -> list[str]:
        return self.items.get(session_id, [])

    def last(self, session_id: str) -> str | None:
        sequence = self.items.get(session_id)
        return sequence[-1] if sequence else None


class SessionIndex:
    """Sessions by dense index, and for each item the `recent` sessions that last took it up.

    `item_sessions[x]` lists sessions in the order they first reached x, trimmed to the
    last `recent` (amortised: trimmed when twice as long). Among the sessions sharing an
    item with the current one, `candidates` keeps the `recent` with the latest ts, as
    session-rec's `most_recent_sessions` does; a session that took x up long ago and
    was pushed out of x's list is not seen through x (it still is through its other items).
    """

    def __init__(self, recent: int) -> None:
        self.recent = recent
        self.index: dict[str, int] = {}
        self.sequences: list[list[str]] = []
        self.times: list[list[float]] = []
        self.item_sets: list[set[str]] = []
        self.last_ts: Floats = np.full(1024, -np.inf)
        self.sizes: Floats = np.zeros(1024)  # distinct items per session
        self.item_sessions: dict[str, list[int]] = {}
        self.item_events: dict[str, int] = {}

    def add(self, step: Step) -> None:
        idx = self.index.get(step.session_id)
        if idx is None:
            idx = self.index[step.session_id] = len(self.sequences)
            self.sequences.append([])
            self.times.append([])
            self.item_sets.append(set())
            if idx == len(self.last_ts):
                self.last_ts = np.concatenate((self.last_ts, np.full(idx, -np.inf)))
                self.sizes = np.concatenate((self.sizes, np.zeros(idx)))
        item = step.item_id
        insert_in_time(self.sequences[idx], self.times[idx], item, step.ts)
        self.last_ts[idx] = max(self.last_ts[idx], step.ts)
        self.item_events[item] = self.item_events.get(item, 0) + 1
        items = self.item_sets[idx]
        if item in items:
            return
        items.add(item)
        self.sizes[idx] += 1.0
        sessions = self.item_sessions.setdefault(item, [])
        sessions.append(idx)
        if len(sessions) > 2 * self.recent:
            del sessions[: -self.recent]

    def of(self, session_id: str) -> int:
        """The session's index, -1 if it has no step yet."""
        return self.index.get(session_id, -1)

    def sequence(self, idx: int) -> list[str]:
        return self.sequences[idx] if idx >= 0 else []

    def positions(self, idx: int) -> tuple[dict[str, int], int]:
        """Each distinct item's 1-based position in the session (a repeated item keeps
        its later one) and the session's length; ({}, 0) for no session."""
        sequence = self.sequence(idx)
        return {item: i for i, item in enumerate(sequence, 1)}, len(sequence)

    def idf(self, item: str) -> float:
        """ln(#sessions / #events of the item), session-rec's `idf` on what was seen so far."""
        return math.log(len(self.sequences) / self.item_events[item])

    def candidates(self, current: int, weights: Mapping[str, float]) -> tuple[Ints, Floats]:
        """The `recent` latest sessions sharing an item of `weights` with session `current`
        (itself left out), and for each the summed weight of the items it shares."""
        parts: list[Ints] = []
        shares: list[Floats] = []
        for item, weight in weights.items():
            sessions = self.item_sessions.get(item)
            if sessions:
                part = np.asarray(sessions[-self.recent :], dtype=np.int64)
                parts.append(part)
                shares.append(np.full(len(part), weight))
        if not parts:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        found, inverse = np.unique(np.concatenate(parts), return_inverse=True)
        overlap = np.bincount(inverse, weights=np.concatenate(shares))
        keep = found != current
        found, overlap = found[keep], overlap[keep]
        if len(found) > self.recent:
            latest = np.argpartition(-self.last_ts[found], self.recent - 1)[: self.recent]
            found, overlap = found[latest], overlap[latest]
        return found, overlap


def nearest(sessions: Ints, similarity: Floats, k: int) -> list[tuple[int, float]]:
    """The k most similar sessions, best first (equal similarity: lower index first)."""
    if len(sessions) > k:
        top = np.argpartition(-similarity, k - 1)[:k]
        sessions, similarity = sessions[top], similarity[top]
    order = np.lexsort((sessions, -similarity))
    return [(int(sessions[i]), float(similarity[i])) for i in order]
