"""Per-item top-N neighbour lists with time-decayed weights.

A NeighborTable keeps, for every item a, at most `width` partner items and a weight
for each: `ids[a]` (int32, -1 = empty) and `weights[a]` (float64), with the used
entries packed at the front (`sizes[a]` of them). Memory is items x width, never
items x items. Weights are stored with the ExpScale trick (half-life on event time),
so an update touches only the entries it changes and every weight of the table is
comparable with every other without a read factor.

When a row is full, a new partner replaces the row's smallest entry if its weight
beats it; pairs that keep recurring therefore stay, one-off pairs fade and get pushed
out.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from recsrv.state.decay import ExpScale
from recsrv.state.items import grown


class NeighborTable:
    def __init__(self, width: int, half_life_s: float, capacity: int) -> None:
        self.width = width
        self.ids = np.full((capacity, width), -1, dtype=np.int32)
        self.weights = np.zeros((capacity, width), dtype=np.float64)
        self.sizes = np.zeros(capacity, dtype=np.int32)
        self.scale = ExpScale(half_life_s)

    def grow(self, capacity: int) -> None:
        self.ids = grown(self.ids, capacity, -1)
        self.weights = grown(self.weights, capacity, 0.0)
        self.sizes = grown(self.sizes, capacity, 0)

    def to_arrays(self, n: int) -> dict[str, npt.NDArray[Any]]:
        """The rows of the first n items and t_ref (views, valid until the next write)."""
        return {
            "ids": self.ids[:n],
            "weights": self.weights[:n],
            "sizes": self.sizes[:n],
            "t_ref": np.array([self.scale.t_ref]),
        }

    def restore(self, arrays: Mapping[str, npt.NDArray[Any]]) -> None:
        """Take over what to_arrays gave; the table must already have room for the rows
        and the same width."""
        for name in ("ids", "weights", "sizes"):
            source = arrays[name]
            getattr(self, name)[: len(source)] = source
        self.scale.t_ref = float(arrays["t_ref"][0])

    def add(self, a: int, partners: Sequence[int], weights: Sequence[float], ts: float) -> None:
        """Add weight to the pairs a→partner observed at `ts` (partners distinct, != a)."""
        factor = self._write_factor(ts)
        for partner, weight in zip(partners, weights, strict=True):
            self._add_pair(a, partner, weight * factor)

    def add_to_rows(
        self, rows: Sequence[int], partner: int, weights: Sequence[float], ts: float
    ) -> None:
        """Add weight to the pairs row→partner for several rows (the forward direction)."""
        factor = self._write_factor(ts)
        for row, weight in zip(rows, weights, strict=True):
            self._add_pair(row, partner, weight * factor)

    def _add_pair(self, a: int, partner: int, scaled: float) -> None:
        if scaled <= 0.0:
            return
        # The ingest hot path: a byte search of the row's int32s costs a fraction of
        # numpy's per-call overhead or of converting the row to Python ints. Empty
        # slots hold -1, which no partner matches.
        found = _position(self.ids[a].tobytes(), int(partner).to_bytes(4, sys.byteorder))
        if found >= 0:
            self.weights[a, found] += scaled
            return
        size = int(self.sizes[a])
        if size < self.width:
            self.ids[a, size] = partner
            self.weights[a, size] = scaled
            self.sizes[a] = size + 1
            return
        row_weights = self.weights[a]
        smallest = int(row_weights.argmin())
        if scaled > row_weights[smallest]:
            self.ids[a, smallest] = partner
            row_weights[smallest] = scaled

    def row(self, a: int, now: float) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """Partners of `a` and their weights decayed to `now`, heaviest first.

        Entries whose weight underflowed to 0 (after a rebase) are left out.
        """
        size = int(self.sizes[a])
        ids = self.ids[a, :size].astype(np.int64)
        weights = self.weights[a, :size]
        live = weights > 0.0
        ids, weights = ids[live], weights[live]
        order = np.lexsort((ids, -weights))
        return ids[order], weights[order] * self.scale.read_factor(now)

    def gather(
        self, rows: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float64]]:
        """Raw (ids, stored weights) of several rows: shape (len(rows), width), -1 = empty.

        Stored weights share one scale, so ratios within the table need no decay factor.
        """
        return self.ids[rows], self.weights[rows]

    def _write_factor(self, ts: float) -> float:
        if self.scale.due(ts):
            self.weights *= self.scale.rebase(ts)
        return self.scale.write_factor(ts)


def _position(row: bytes, key: bytes) -> int:
    """Index of the 4-byte `key` in `row` at a 4-byte boundary, or -1."""
    at = row.find(key)
    while at > 0 and at & 3:  # a match straddling two entries is not one
        at = row.find(key, at + 1)
    return at >> 2 if at >= 0 else -1
