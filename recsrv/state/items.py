"""Dense integer indices for item ids, and growth of the per-item arrays.

Every per-item array in the state is indexed by the position an item id got when it
was first mentioned. Positions are never reused (a deleted item keeps its index), so
arrays only grow, by doubling.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

DEFAULT_CAPACITY = 1024
# top_k orders this many picked values or fewer with Python's sort, more with np.lexsort.
SORT_IN_PYTHON = 64

ScalarT = TypeVar("ScalarT", bound=np.generic)


class ItemIndex:
    """item id str ↔ dense int index, in order of first mention."""

    __slots__ = ("_index", "capacity", "ids")

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.ids: list[str] = []
        self._index: dict[str, int] = {}
        # Rows the per-item arrays have; doubles when an index reaches it.
        self.capacity = max(1, capacity)

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._index

    def get(self, item_id: str) -> int | None:
        return self._index.get(item_id)

    def add(self, item_id: str) -> int:
        """The index of `item_id`, assigning the next one if it is new."""
        idx = self._index.get(item_id)
        if idx is None:
            idx = len(self.ids)
            self._index[item_id] = idx
            self.ids.append(item_id)
            while idx >= self.capacity:
                self.capacity *= 2
        return idx

    def restore(self, ids: list[str]) -> None:
        """Take over the ids of a snapshot, in index order (the capacity is set by the
        constructor; it grows here only if the ids need more rows)."""
        self.ids = ids
        self._index = {item_id: idx for idx, item_id in enumerate(ids)}
        while len(ids) > self.capacity:
            self.capacity *= 2

    def known(self, item_ids: Iterable[str]) -> npt.NDArray[np.int64]:
        """Indices of the ids that are known; unknown ones are left out."""
        found = [i for i in map(self._index.get, item_ids) if i is not None]
        return np.array(found, dtype=np.int64)


def grown(array: npt.NDArray[ScalarT], capacity: int, fill: Any) -> npt.NDArray[ScalarT]:
    """A copy of `array` with `capacity` rows; the new rows hold `fill`."""
    new = np.full((capacity, *array.shape[1:]), fill, dtype=array.dtype)
    new[: len(array)] = array
    return new


def top_k(values: npt.NDArray[np.float64], k: int) -> npt.NDArray[np.int64]:
    """Positions of the k largest finite values, descending; ties go to the lower position.

    argpartition, then a sort of the k only; -inf marks what must not be picked.
    """
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    n = len(values)
    # Partitioning at n-k is markedly faster than at k-1 of the negated values.
    picked = np.argpartition(values, n - k)[n - k :] if k < n else np.arange(n)
    chosen = values.take(picked)
    finite = np.isfinite(chosen)
    if not finite.all():
        picked, chosen = picked[finite], chosen[finite]
    if len(picked) > SORT_IN_PYTHON:
        return picked[np.lexsort((picked, -chosen))].astype(np.int64, copy=False)
    # A list's k (ten, usually): Python's sort of (-value, position) pairs gives the
    # same order as np.lexsort for a fraction of its fixed cost.
    ranked = sorted(zip((-chosen).tolist(), picked.tolist(), strict=True))
    return np.array([position for _, position in ranked], dtype=np.int64)


def stable_order(
    indices: npt.NDArray[np.integer],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """A stable argsort of non-negative indices (below 2**31), and the indices sorted.

    One sort of packed keys (index << bits | position): on the few hundred entries of
    a request, several times faster than `argsort(kind="stable")`.
    """
    bits = max(len(indices).bit_length(), 1)
    keys = (indices.astype(np.int64) << bits) | np.arange(len(indices), dtype=np.int64)
    keys.sort()
    return keys & ((1 << bits) - 1), keys >> bits


def positions_held(ordered: npt.NDArray[Any], values: npt.NDArray[Any]) -> npt.NDArray[np.intp]:
    """Positions in `ordered` (ascending, distinct) of the entries of `values` it holds.

    A binary search per value: for the few dozen values of a session against a list's
    few thousand candidates, a fraction of `np.isin`, which sorts both."""
    at = ordered.searchsorted(values)
    inside = (at < len(ordered)).nonzero()[0]
    at = at.take(inside)
    held: npt.NDArray[np.intp] = at[ordered.take(at) == values.take(inside)]
    return held


def run_firsts(ordered: npt.NDArray[Any]) -> npt.NDArray[np.bool_]:
    """Which entries of a sorted (or grouped) array start a run of equal values."""
    first = np.empty(len(ordered), dtype=np.bool_)
    first[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    return first


def run_starts(ordered: npt.NDArray[Any]) -> npt.NDArray[np.int64]:
    """Where each run of equal values of a sorted (or grouped) array starts."""
    # nonzero, not np.flatnonzero: its wrapper costs a microsecond, and this runs a few
    # times for every list.
    return run_firsts(ordered).nonzero()[0]
