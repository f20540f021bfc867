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

Writes are queued and applied by `flush`, in the order they were queued, with exactly
the result of applying them one at a time: the model queues the pairs of a whole
batch of events and flushes once. A long queue is applied in vectorised steps: step j
takes the j-th queued pair of every row at once (rows are independent, and within a
step no row appears twice), so the per-pair Python work disappears while each row
still sees its own pairs in order.
"""

from __future__ import annotations

import operator
import sys
from array import array
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from recsrv.state.decay import ExpScale

# Queued pairs from which a flush works in vectorised steps. Each step costs some 20
# numpy calls whatever its size, so a shorter queue is as fast or faster one pair at a
# time (on the ingest benchmark's events: steps win by ~20 % from ~2,000 pairs, that
# is a 256-event slice, and break even near 500).
STEP_MIN_PAIRS: Final = 500
# A step with fewer rows than this ends the vectorised work: the pairs left belong to
# a few busy rows, and numpy's per-call cost would exceed the per-pair loop's.
STEP_MIN_ROWS: Final = 32

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]


class NeighborTable:
    def __init__(self, width: int, half_life_s: float, capacity: int) -> None:
        self.width = width
        self.scale = ExpScale(half_life_s)
        self._allocate(capacity, None)
        # Queued writes: row, partner, weight and the write factor of its time; a
        # queued weight counts as weight * factor, as an immediate write would.
        self._rows: list[int] = []
        self._partners: list[int] = []
        self._weights: list[float] = []
        self._factors: list[float] = []

    def grow(self, capacity: int) -> None:
        self._allocate(capacity, (self.ids, self.weights, self.sizes, self._floors))

    def _allocate(
        self,
        capacity: int,
        old: tuple[npt.NDArray[np.int32], Floats, npt.NDArray[np.int32], array[float]] | None,
    ) -> None:
        """(Re)build the arrays with `capacity` rows, keeping the `old` rows."""
        # The ids live in a bytearray so that the per-pair path can search a row's
        # bytes in place; the numpy array is a view of it.
        self._id_bytes = bytearray(capacity * self.width * 4)
        self.ids = np.frombuffer(self._id_bytes, dtype=np.int32).reshape(capacity, self.width)
        self.ids.fill(-1)
        self.weights = np.zeros((capacity, self.width), dtype=np.float64)
        self.sizes = np.zeros(capacity, dtype=np.int32)
        # A lower bound of each full row's smallest weight (0 when unknown): a new
        # partner at or below it cannot get in, and no argmin is needed to see that.
        # Weights only grow between rebases, so a bound once right stays right. An
        # array, not a list: a list of a float object per item is what a full garbage
        # collection walked longest (18 ms of 50 for 100,000 items).
        self._floors = array("d", bytes(8 * capacity))
        if old is not None:
            ids, weights, sizes, floors = old
            rows = len(sizes)
            self.ids[:rows] = ids
            self.weights[:rows] = weights
            self.sizes[:rows] = sizes
            self._floors[:rows] = floors
        # Flat views for scalar access, several times cheaper than numpy indexing.
        self._flat_ids = memoryview(self._id_bytes).cast("i")
        self._flat_weights = self.weights.data.cast("B").cast("d")
        self._flat_sizes = self.sizes.data.cast("B").cast("i")

    def to_arrays(self, n: int) -> dict[str, npt.NDArray[Any]]:
        """The rows of the first n items and t_ref (views, valid until the next write).
        Nothing may be queued: the model flushes at the end of every batch it applies."""
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
        self._floors = array("d", bytes(8 * len(self.sizes)))

    # -- writes --------------------------------------------------------------------

    def add(self, a: int, partners: Sequence[int], weights: Sequence[float], ts: float) -> None:
        """Add weight to the pairs a→partner observed at `ts` (partners distinct, != a)."""
        self.queue(a, partners, weights, ts)
        self.flush()

    def add_to_rows(
        self, rows: Sequence[int], partner: int, weights: Sequence[float], ts: float
    ) -> None:
        """Add weight to the pairs row→partner for several rows (the forward direction)."""
        self.queue_to_rows(rows, partner, weights, ts)
        self.flush()

    def queue(self, a: int, partners: Sequence[int], weights: Sequence[float], ts: float) -> None:
        """`add`, applied at the next flush."""
        if len(partners) != len(weights):
            raise ValueError("one weight per partner")
        factor = self._write_factor(ts)
        self._rows.extend([a] * len(partners))
        self._partners.extend(partners)
        self._weights.extend(weights)
        self._factors.extend([factor] * len(partners))

    def queue_to_rows(
        self, rows: Sequence[int], partner: int, weights: Sequence[float], ts: float
    ) -> None:
        """`add_to_rows`, applied at the next flush."""
        if len(rows) != len(weights):
            raise ValueError("one weight per row")
        factor = self._write_factor(ts)
        self._rows.extend(rows)
        self._partners.extend([partner] * len(rows))
        self._weights.extend(weights)
        self._factors.extend([factor] * len(rows))

    def queue_sequence(
        self,
        item: int,
        previous: Sequence[int],
        forward: Sequence[float],
        backward: Sequence[float],
        ts: float,
    ) -> None:
        """`queue_to_rows(previous, item, forward)` then `queue(item, previous, backward)`
        (weights beyond len(previous) unused): the ingest hot path, in one call."""
        count = len(previous)
        factor = self._write_factor(ts)
        self._rows.extend(previous)
        self._rows.extend([item] * count)
        self._partners.extend([item] * count)
        self._partners.extend(previous)
        self._weights.extend(forward[:count])
        self._weights.extend(backward[:count])
        self._factors.extend([factor] * (2 * count))

    def flush(self) -> None:
        """Apply the queued writes, in order."""
        if not self._rows:
            return
        rows, partners = self._rows, self._partners
        weights, factors = self._weights, self._factors
        self._rows, self._partners, self._weights, self._factors = [], [], [], []
        if len(rows) < STEP_MIN_PAIRS:
            self._add_pairs(zip(rows, partners, map(operator.mul, weights, factors), strict=True))
            return
        self._add_in_steps(
            np.array(rows, dtype=np.int64),
            np.array(partners, dtype=np.int64),
            np.array(weights, dtype=np.float64) * np.array(factors, dtype=np.float64),
        )

    def _add_pairs(self, pairs: Iterable[tuple[int, int, float]]) -> None:
        """Add each (row, partner, scaled weight), in order, one at a time.

        The per-pair path, with every name it needs bound once. A partner is found by
        a byte search of its row's int32s in place, which costs a fraction of numpy's
        per-call overhead; empty slots hold -1, which no partner matches. Rows start at
        multiples of 4 bytes, so a match at a multiple of 4 is an entry (one straddling
        two entries is not) and its byte offset / 4 is its flat index.
        """
        width, row_bytes, byteorder = self.width, 4 * self.width, sys.byteorder
        id_bytes, flat_ids = self._id_bytes, self._flat_ids
        flat_weights, flat_sizes, floors = self._flat_weights, self._flat_sizes, self._floors
        for a, partner, scaled in pairs:
            if scaled <= 0.0:
                continue
            key, begin = partner.to_bytes(4, byteorder), a * row_bytes
            at = id_bytes.find(key, begin, begin + row_bytes)
            while at & 3 and at >= 0:
                at = id_bytes.find(key, at + 1, begin + row_bytes)
            if at >= 0:
                flat_weights[at >> 2] += scaled
                continue
            start, size = a * width, flat_sizes[a]
            if size < width:
                flat_ids[start + size] = partner
                flat_weights[start + size] = scaled
                flat_sizes[a] = size + 1
            elif scaled > floors[a]:
                smallest = start + int(self.weights[a].argmin())
                floors[a] = flat_weights[smallest]  # the row's true smallest weight
                if scaled > flat_weights[smallest]:
                    flat_ids[smallest] = partner
                    flat_weights[smallest] = scaled

    def _add_in_steps(self, rows: Ints, partners: Ints, scaled: Floats) -> None:
        """_add_pair for every queued pair, in order, a step of distinct rows at a time."""
        keep = scaled > 0.0
        rows, partners, scaled = rows[keep], partners[keep], scaled[keep]
        if not len(rows):
            return
        # Rank of each pair among its row's pairs (0 for the row's first), then the
        # pairs ordered by rank: step j is the run of rank j. A stable sort keeps the
        # queue order within a row.
        by_row = np.argsort(rows, kind="stable")
        grouped = rows[by_row]
        starts = np.flatnonzero(np.concatenate(([True], grouped[1:] != grouped[:-1])))
        sizes = np.diff(np.append(starts, len(grouped)))
        rank = np.empty(len(rows), dtype=np.int64)
        rank[by_row] = np.arange(len(rows)) - np.repeat(starts, sizes)
        by_step = np.argsort(rank, kind="stable")
        ends = np.cumsum(np.bincount(rank))
        begin = 0
        for end in ends.tolist():
            if end - begin < STEP_MIN_ROWS:
                # The rest, one pair at a time: each row's pairs are still in order.
                rest = by_step[begin:]
                self._add_pairs(
                    zip(
                        rows[rest].tolist(),
                        partners[rest].tolist(),
                        scaled[rest].tolist(),
                        strict=True,
                    )
                )
                return
            step = by_step[begin:end]
            self._step(rows[step], partners[step], scaled[step])
            begin = end

    def _step(self, rows: Ints, partners: Ints, scaled: Floats) -> None:
        """One pair for each of several distinct rows, as _add_pair would apply it."""
        match = self.ids[rows] == partners[:, None]
        found = match.any(axis=1)
        if found.any():
            self.weights[rows[found], match[found].argmax(axis=1)] += scaled[found]
        new = ~found
        rows, partners, scaled = rows[new], partners[new], scaled[new]
        if not len(rows):
            return
        sizes = self.sizes[rows]
        room = sizes < self.width
        if room.any():
            at_rows, at = rows[room], sizes[room]
            self.ids[at_rows, at] = partners[room]
            self.weights[at_rows, at] = scaled[room]
            self.sizes[at_rows] = at + 1
        full = ~room
        if full.any():
            rows, partners, scaled = rows[full], partners[full], scaled[full]
            row_weights = self.weights[rows]
            smallest = row_weights.argmin(axis=1)
            beats = scaled > row_weights[np.arange(len(rows)), smallest]
            self.ids[rows[beats], smallest[beats]] = partners[beats]
            self.weights[rows[beats], smallest[beats]] = scaled[beats]

    def rescale(self, factor: float) -> None:
        """Multiply every weight by `factor` > 0 (the owner of the scale moved t_ref)."""
        self.weights *= factor
        # Rounding is monotonic: a scaled bound is still below the scaled weights.
        floors = np.frombuffer(self._floors, dtype=np.float64)
        floors *= factor

    # -- reads ---------------------------------------------------------------------

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
        # take, not fancy indexing: about half the cost on the few rows of a request.
        return self.ids.take(rows, axis=0), self.weights.take(rows, axis=0)

    def _write_factor(self, ts: float) -> float:
        if self.scale.due(ts):
            # Queued weights were scaled to the old t_ref: apply them before rebasing.
            self.flush()
            self.rescale(self.scale.rebase(ts))
        return self.scale.write_factor(ts)
