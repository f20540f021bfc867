"""POP: the most interacted-with items so far, and the fill-in every baseline tops up with.

A count per item in a numpy array for fast top-k; the order of steps does not matter.
"""

from __future__ import annotations

from collections.abc import Set

import numpy as np
import numpy.typing as npt

from recsrv.evaluation.baselines.base import Step


class Pop:
    """Most popular so far."""

    name = "pop"

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.ids: list[str] = []
        self.counts: npt.NDArray[np.float64] = np.zeros(1024)

    def observe(self, step: Step) -> None:
        idx = self.index.get(step.item_id)
        if idx is None:
            idx = self.index[step.item_id] = len(self.ids)
            self.ids.append(step.item_id)
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
