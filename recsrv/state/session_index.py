"""Recent sessions as item sequences, and for every item the sessions that hold it.

What session-based kNN scoring needs, kept beyond a session's life in the slot table:

- `capacity` records in a ring, each the distinct items of one session in `ts` order
  (at most `width`, a repeated item at its latest position), its newest `ts` and a
  serial. A new session takes the oldest record; a session keeps a record while the
  serial it holds is the record's.
- per item, the records it entered most recently (`per_item` of them, a ring per
  item). An entry can go stale when its record is reused; readers check membership
  against the record's items, which they read anyway.
- per item, how many sessions it entered (for IDF), and how many sessions there were.

Pure code: numpy only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from recsrv.state.items import grown, run_firsts

Ints = npt.NDArray[np.int64]


class SessionIndex:
    ARRAYS: Final = (
        "items",
        "lengths",
        "last_ts",
        "serials",
        "item_records",
        "item_heads",
        "item_sessions",
    )

    def __init__(self, capacity: int, width: int, per_item: int, item_capacity: int) -> None:
        self.capacity = capacity
        self.width = width
        self.per_item = per_item
        self.items = np.full((capacity, width), -1, dtype=np.int32)
        self.lengths = np.zeros(capacity, dtype=np.int32)
        self.last_ts = np.full(capacity, -np.inf, dtype=np.float64)
        self.serials = np.full(capacity, -1, dtype=np.int64)
        self.next_serial = 0
        self.length_sum = 0  # of every record's length, for the mean
        self._allocate_items(item_capacity)
        self._flat_views()

    def _allocate_items(self, item_capacity: int) -> None:
        self.item_records = np.full((item_capacity, self.per_item), -1, dtype=np.int32)
        self.item_heads = np.zeros(item_capacity, dtype=np.int32)
        self.item_sessions = np.zeros(item_capacity, dtype=np.int64)

    def _flat_views(self) -> None:
        self._flat_items = self.items.data.cast("B").cast("i")
        self._flat_lengths = self.lengths.data.cast("B").cast("i")
        self._flat_item_records = self.item_records.data.cast("B").cast("i")
        self._flat_item_heads = self.item_heads.data.cast("B").cast("i")
        self._flat_item_sessions = self.item_sessions.data.cast("B").cast("q")

    def grow(self, item_capacity: int) -> None:
        self.item_records = grown(self.item_records, item_capacity, -1)
        self.item_heads = grown(self.item_heads, item_capacity, 0)
        self.item_sessions = grown(self.item_sessions, item_capacity, 0)
        self._flat_views()

    @property
    def sessions(self) -> int:
        """Sessions ever indexed (the IDF's numerator)."""
        return self.next_serial

    # -- writes --------------------------------------------------------------------

    def new_record(self) -> int:
        """A serial for a new session; its record starts empty."""
        serial = self.next_serial
        self.next_serial += 1
        record = serial % self.capacity
        self.serials[record] = serial
        self.items[record] = -1
        self.length_sum -= int(self.lengths[record])
        self.lengths[record] = 0
        self.last_ts[record] = -np.inf
        return serial

    def holds(self, serial: int) -> bool:
        return serial >= 0 and int(self.serials[serial % self.capacity]) == serial

    def write(
        self, serial: int, sequence: Sequence[int], entered: Sequence[int], ts: float
    ) -> None:
        """Set the record's items (distinct, oldest first; the last `width` are kept) and
        newest ts; `entered` are the items new to this session, each counted once."""
        record = serial % self.capacity
        kept = sequence[-self.width :]
        row = self.items[record]
        row[: len(kept)] = kept
        row[len(kept) :] = -1
        self.length_sum += len(kept) - int(self.lengths[record])
        self.lengths[record] = len(kept)
        if ts > self.last_ts[record]:
            self.last_ts[record] = ts
        for item in entered:
            self._enter(record, item)

    def append(self, serial: int, item: int, ts: float) -> None:
        """`write` for an event in ts order, without rebuilding the record: the item
        moves to the end of the record (or joins it there, the oldest leaving a full one)."""
        record = serial % self.capacity
        width, items = self.width, self._flat_items
        base, length = record * width, self._flat_lengths[record]
        found = -1
        for at in range(base, base + length):
            if items[at] == item:
                found = at
                break
        if found < 0 and length < width:
            items[base + length] = item
            self._flat_lengths[record] = length + 1
            self.length_sum += 1
        else:
            start = found if found >= 0 else base  # close the gap, or drop the oldest
            for at in range(start, base + length - 1):
                items[at] = items[at + 1]
            items[base + length - 1] = item
        if ts > self.last_ts[record]:
            self.last_ts[record] = ts
        if found < 0:
            self._enter(record, item)

    def _enter(self, record: int, item: int) -> None:
        """The item joined the record's session: into its ring, and counted once."""
        head = self._flat_item_heads[item]
        self._flat_item_records[item * self.per_item + head] = record
        self._flat_item_heads[item] = (head + 1) % self.per_item
        self._flat_item_sessions[item] += 1

    # -- reads ---------------------------------------------------------------------

    def mean_length(self) -> float:
        """Mean number of items of the indexed sessions (0 before the first)."""
        held = min(self.next_serial, self.capacity)
        return self.length_sum / held if held else 0.0

    def candidates(self, items: Ints, exclude: int) -> Ints:
        """Distinct records that recently took any of `items`, `exclude` left out."""
        records = self.item_records.take(items, axis=0).ravel()
        records.sort()
        keep = run_firsts(records)  # distinct
        keep &= records >= 0  # empty ring places
        if exclude >= 0:
            keep &= records != exclude % self.capacity
        return records[keep].astype(np.int64)

    # -- checkpoints ---------------------------------------------------------------

    def to_arrays(self, n: int) -> dict[str, npt.NDArray[Any]]:
        """The records ever used, the per-item rings of the first n items and the serial
        counter (views, valid until the next write)."""
        used = min(self.next_serial, self.capacity)
        return {
            "items": self.items[:used],
            "lengths": self.lengths[:used],
            "last_ts": self.last_ts[:used],
            "serials": self.serials[:used],
            "item_records": self.item_records[:n],
            "item_heads": self.item_heads[:n],
            "item_sessions": self.item_sessions[:n],
            "next_serial": np.array([self.next_serial], dtype=np.int64),
        }

    def restore(self, arrays: Mapping[str, npt.NDArray[Any]]) -> None:
        """Take over what to_arrays gave (same capacity, width and per_item; the arrays
        must already have room for the items)."""
        for name in self.ARRAYS:
            source = arrays[name]
            getattr(self, name)[: len(source)] = source
        self.next_serial = int(arrays["next_serial"][0])
        self.length_sum = int(self.lengths.sum())
