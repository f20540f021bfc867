"""What every reference algorithm of `recsrv evaluate` implements, and shared helpers.

A baseline learns online from every replayed interaction (a `Step`), exactly what
recsrv's model sees, and answers a top-k list for a session. Each session's items are
kept in the order of their `ts`: a step that arrives late is placed at its own time,
so a baseline is measured on the same sessions whatever order the file is in.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Set
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Step:
    """One interaction that moves a session to an item."""

    session_id: str
    user_id: str | None
    item_id: str
    kind: str  # view, click, add_to_cart or purchase
    ts: float


class Baseline(Protocol):
    name: str

    def observe(self, step: Step) -> None:
        """Learn one interaction."""

    def recommend(
        self, session_id: str, user_id: str | None, k: int, exclude: Set[str], now: float
    ) -> list[str]:
        """The top k next items for the session (of `user_id`, if known) at time `now`,
        best first, none of `exclude`."""


def best(scores: Mapping[str, float], k: int, exclude: Set[str]) -> list[str]:
    """The k highest-scored items not excluded (ties by id, for reproducible runs)."""
    candidates = ((score, item) for item, score in scores.items() if item not in exclude)
    return [item for _, item in heapq.nsmallest(k, ((-s, i) for s, i in candidates))]
