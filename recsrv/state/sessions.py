"""Live shopping sessions in a numpy slot table, on session time.

Each session owns a slot: ring buffers of its last `max_events` item events (item
index, type code, ts) kept in `ts` order whatever order they arrived in, its newest
`ts` (`last_ts`), the model clock when its last event arrived (`touched`), its user
and the serial of its record in the session index. Carts and purchases are dicts
kept only for the sessions that have them.

Two clocks, as a stream processor with watermarks has them:
- Membership is session time. An event joins its session when it lies within
  `ttl_s` of the session's own events; one more than `ttl_s` after the session's
  newest event starts the session over, and one more than `ttl_s` before its oldest
  belongs to no live visit (open returns None).
- Liveness is the model clock (the newest `ts` applied). A session is served until
  the clock is `ttl_s` past its last arrival, and its state is held `allowed_lateness_s`
  longer so that late events still join it; occasional vectorised sweeps then free its
  slot, and an event of a freed session starts it afresh.

At most `max_sessions` are held at once; when full, the reclaimable ones go first,
then the least recently touched few percent. Freed slots are reused.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from recsrv.config import SessionsConfig
from recsrv.state.items import grown
from recsrv.state.long_lived import LongLivedDict

INITIAL_SLOTS = 1024
# Bytes of the widest ring buffer (times) in one block that KeptRows hands out.
KEPT_BLOCK_BYTES = 4 * 1024 * 1024
# Share of max_sessions evicted at once when the table is full (at most SWEEP_BATCH),
# so eviction (an argpartition over every slot) runs once per many new sessions.
EVICT_FRACTION = 0.02
# Event time between sweeps of expired sessions, as a share of the TTL.
SWEEP_EVERY_TTL = 0.25
# Most slots one sweep frees, so that a sweep stays within a few milliseconds.
SWEEP_BATCH = 5000
FREE = -np.inf


class Sessions:
    # The per-slot arrays, as to_arrays names them.
    ARRAYS: Final = (
        "items",
        "types",
        "times",
        "heads",
        "lengths",
        "last_ts",
        "touched",
        "users",
        "records",
        "active",
    )

    def __init__(self, config: SessionsConfig) -> None:
        self.ttl_s = config.ttl_s
        # A session held past this much clock time since its last arrival is reclaimed.
        self.hold_s = config.ttl_s + config.allowed_lateness_s
        self.max_sessions = config.max_sessions
        self.max_events = config.max_events
        capacity = min(INITIAL_SLOTS, self.max_sessions)
        self.slot_of: dict[str, int] = {}
        self.session_ids: list[str] = []  # slot → id ("" while free)
        self.free_slots: list[int] = []
        self.items = np.full((capacity, self.max_events), -1, dtype=np.int32)
        self.types = np.zeros((capacity, self.max_events), dtype=np.int8)
        self.times = np.zeros((capacity, self.max_events), dtype=np.float64)
        self.heads = np.zeros(capacity, dtype=np.int32)  # next write position
        self.lengths = np.zeros(capacity, dtype=np.int32)
        self.last_ts = np.full(capacity, FREE, dtype=np.float64)
        self.touched = np.full(capacity, FREE, dtype=np.float64)
        # Serial of the session's record in the session index (-1: none yet).
        self.records = np.full(capacity, -1, dtype=np.int64)
        self.users = np.full(capacity, -1, dtype=np.int32)
        self.active = np.zeros(capacity, dtype=np.bool_)
        # slot → {item: quantity} and slot → {item: quantity purchased}, insertion-ordered.
        self.carts: dict[int, dict[int, int]] = LongLivedDict()
        self.purchased: dict[int, dict[int, int]] = LongLivedDict()
        self.next_sweep = -np.inf
        # While a checkpoint reads the ring buffers (keep_rows), what it must still see.
        self.kept: KeptRows | None = None
        self._flat_views()

    def __len__(self) -> int:
        """Sessions holding a slot, expired-but-not-yet-swept ones included."""
        return len(self.slot_of)

    # -- reads ---------------------------------------------------------------------

    def lookup(self, session_id: str, now: float) -> int | None:
        """The slot of a live session; None if unknown or expired at `now`."""
        slot = self.slot_of.get(session_id)
        if slot is None or self.touched[slot] < now - self.ttl_s:
            return None
        return slot

    def live_count(self, now: float) -> int:
        used = len(self.session_ids)
        live = self.active[:used] & (self.touched[:used] >= now - self.ttl_s)
        return int(np.count_nonzero(live))

    def recent(self, slot: int) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int8]]:
        """Item indices and type codes of the session's events, newest first."""
        length = int(self.lengths[slot])
        head = int(self.heads[slot])
        items, types = self.items[slot], self.types[slot]
        # Reversed slices of the ring row, copied (the positions (head - 1 - i) % width
        # without an index array: two gathers of a few entries cost more than this).
        if length <= head:
            return items[head - length : head][::-1].copy(), types[head - length : head][
                ::-1
            ].copy()
        wrapped = self.max_events - (length - head)
        return (
            np.concatenate((items[:head][::-1], items[wrapped:][::-1])),
            np.concatenate((types[:head][::-1], types[wrapped:][::-1])),
        )

    def around(
        self, slot: int, newer: int, item: int, limit: int
    ) -> tuple[list[int], list[tuple[int, int, float]]]:
        """The distinct items (other than `item`) older and newer than the event that
        `record` placed with `newer` events after it, each list nearest first and at
        most `limit` long; the newer ones with the type code and ts of their event.
        newer = -1 means no event was placed: all are older; for an event too old to
        be kept, newer = the number kept: all are newer."""
        width = self.max_events
        items, base, head = self._flat_items, slot * width, self._flat_heads[slot]
        length = self._flat_lengths[slot]
        after: dict[int, tuple[int, int, float]] = {}
        for back in range(newer, 0, -1):  # the newer events, nearest (oldest) first
            at = base + (head - back) % width
            other = items[at]
            if other != item and other not in after:
                after[other] = (other, self._flat_types[at], self._flat_times[at])
                if len(after) == limit:
                    break
        before: list[int] = []
        for back in range(newer + 2, length + 1):
            other = items[base + (head - back) % width]
            if other != item and other not in before:
                before.append(other)
                if len(before) == limit:
                    break
        return before, list(after.values())

    def steps_around(
        self, slot: int, newer: int, item: int, limit: int
    ) -> tuple[list[tuple[int, int]], list[tuple[int, int, int, float]]]:
        """The events within `limit` steps before and after the event that `record`
        placed with `newer` events after it, nearest first, other than `item`'s own:
        (item, distance) before, (item, distance, type code, ts) after. Every kept event
        is a step, so an item seen twice in reach is there twice, as sequential rules
        count it (Ludewig & Jannach 2018); `around` gives distinct items instead."""
        width = self.max_events
        items, base, head = self._flat_items, slot * width, self._flat_heads[slot]
        length = self._flat_lengths[slot]
        after: list[tuple[int, int, int, float]] = []
        for distance, back in enumerate(range(newer, max(newer - limit, 0), -1), 1):
            at = base + (head - back) % width
            other = items[at]
            if other != item:
                after.append((other, distance, self._flat_types[at], self._flat_times[at]))
        before: list[tuple[int, int]] = []
        last = min(length, newer + 1 + limit)
        for distance, back in enumerate(range(newer + 2, last + 1), 1):
            other = items[base + (head - back) % width]
            if other != item:
                before.append((other, distance))
        return before, after

    def sequence(self, slot: int) -> list[int]:
        """The session's distinct items in `ts` order, oldest first; a repeated item
        stands at its latest position."""
        width = self.max_events
        items, base, head = self._flat_items, slot * width, self._flat_heads[slot]
        newest_first = dict.fromkeys(
            items[base + (head - back) % width] for back in range(1, self._flat_lengths[slot] + 1)
        )
        return list(reversed(newest_first))

    def basket(self, slot: int, limit: int | None = None) -> list[int]:
        """Distinct items purchased or in the cart, in that order; the last `limit` of them."""
        cart = self.carts.get(slot)
        bought = self.purchased.get(slot)
        if cart is None and bought is None:
            return []
        items = list(dict.fromkeys([*(bought or ()), *(cart or ())]))
        if limit is not None and len(items) > limit:
            del items[: len(items) - limit]
        return items

    def has_events(self, slot: int) -> bool:
        """Whether the session recorded an item event, a cart or a purchase."""
        return bool(self.lengths[slot]) or slot in self.carts or slot in self.purchased

    def user_of(self, slot: int) -> int:
        return self._flat_users[slot]

    def to_arrays(self) -> dict[str, npt.NDArray[Any]]:
        """The per-slot arrays of the slots ever used (views, valid until the next write),
        the slot capacity and next_sweep. The Python-side state (session_ids, free_slots,
        carts, purchased) is read from the attributes."""
        used = len(self.session_ids)
        arrays: dict[str, npt.NDArray[Any]] = {
            name: getattr(self, name)[:used] for name in self.ARRAYS
        }
        arrays["capacity"] = np.array([len(self.active)], dtype=np.int64)
        arrays["next_sweep"] = np.array([self.next_sweep], dtype=np.float64)
        return arrays

    def restore(
        self,
        arrays: Mapping[str, npt.NDArray[Any]],
        session_ids: list[str],
        free_slots: list[int],
        carts: dict[int, dict[int, int]],
        purchased: dict[int, dict[int, int]],
    ) -> None:
        """Take over what to_arrays gave and the Python-side state, into a new table."""
        capacity = max(int(arrays["capacity"][0]), len(session_ids))
        if capacity > len(self.active):
            self._grow(capacity)
        for name in self.ARRAYS:
            source = arrays[name]
            getattr(self, name)[: len(source)] = source
        self.session_ids = session_ids
        self.free_slots = free_slots
        live = np.flatnonzero(self.active[: len(session_ids)]).tolist()
        self.slot_of = {session_ids[slot]: slot for slot in live}
        self.carts = LongLivedDict(carts)
        self.purchased = LongLivedDict(purchased)
        self.next_sweep = float(arrays["next_sweep"][0])

    # -- writes --------------------------------------------------------------------

    def open(self, session_id: str, ts: float, now: float) -> int | None:
        """The slot for an event of `session_id` at `ts`, creating or renewing the session;
        None when the event lies more than `ttl_s` before the session's oldest event kept
        (an earlier visit under the same id, long gone: it joins nothing).

        An event more than `ttl_s` after the session's newest one starts it over empty,
        and so does any event of a session held past its lateness bound at `now`.
        """
        if now >= self.next_sweep:
            self.sweep(now)
        slot = self.slot_of.get(session_id)
        if slot is None:
            slot = self._allocate(session_id, now)  # may grow the arrays: new views
        elif (
            ts > self._flat_last_ts[slot] + self.ttl_s
            or self._flat_touched[slot] < now - self.hold_s
        ):
            self._clear(slot)
        elif self._flat_lengths[slot] and ts < self._oldest_ts(slot) - self.ttl_s:
            return None
        last_ts = self._flat_last_ts
        if ts > last_ts[slot]:
            last_ts[slot] = ts
        self._flat_touched[slot] = now
        return slot

    def _oldest_ts(self, slot: int) -> float:
        width = self.max_events
        head, length = self._flat_heads[slot], self._flat_lengths[slot]
        return self._flat_times[slot * width + (head - length) % width]

    def record(self, slot: int, item: int, code: int, ts: float) -> int:
        """Place an item event in the session's ring buffer at its `ts` (after events of
        the same ts). Returns how many kept events are newer than it (0 for one in
        order), or -1 when the buffer is full of newer events and it is not kept."""
        if self.kept is not None:
            self.kept.keep(slot)
        # Flat views: per-event scalar access costs a fraction of numpy indexing.
        width = self.max_events
        base, head = slot * width, self._flat_heads[slot]
        length = self._flat_lengths[slot]
        items, types, times = self._flat_items, self._flat_types, self._flat_times
        newer = 0
        while newer < length and times[base + (head - 1 - newer) % width] > ts:
            newer += 1
        if newer == length == width:
            return -1
        for back in range(newer):  # shift the newer events one place up, newest first
            source = base + (head - 1 - back) % width
            target = base + (head - back) % width
            items[target], types[target], times[target] = (
                items[source],
                types[source],
                times[source],
            )
        at = base + (head - newer) % width
        items[at] = item
        types[at] = code
        times[at] = ts
        self._flat_heads[slot] = (head + 1) % width
        if length < width:
            self._flat_lengths[slot] = length + 1
        return newer

    def set_user(self, slot: int, user: int) -> None:
        self.users[slot] = user

    def add_to_cart(self, slot: int, item: int, quantity: int) -> bool:
        """Put `quantity` of `item` in the cart; True if it was not in the cart before."""
        cart = self.carts.setdefault(slot, {})
        before = cart.get(item, 0)
        cart[item] = before + quantity
        return before == 0

    def remove_from_cart(self, slot: int, item: int, quantity: int) -> None:
        cart = self.carts.get(slot)
        if cart is None or item not in cart:
            return
        left = cart[item] - quantity
        if left > 0:
            cart[item] = left
            return
        del cart[item]
        if not cart:
            del self.carts[slot]

    def purchase(self, slot: int, item: int, quantity: int) -> None:
        """Record a purchase; the item leaves the cart."""
        bought = self.purchased.setdefault(slot, {})
        bought[item] = bought.get(item, 0) + quantity
        cart = self.carts.get(slot)
        if cart is not None and cart.pop(item, None) is not None and not cart:
            del self.carts[slot]

    def forget_user(self, user: int) -> int:
        """Remove every session of `user`; returns how many."""
        used = len(self.session_ids)
        slots = np.flatnonzero(self.active[:used] & (self.users[:used] == user))
        self._release(slots)
        return len(slots)

    def sweep(self, now: float) -> int:
        """Free the slots of sessions held past their lateness bound at `now`, at most
        SWEEP_BATCH of them so that one call stays short; the next event continues a
        partial sweep. Returns how many were freed."""
        used = len(self.session_ids)
        expired = np.flatnonzero(self.active[:used] & (self.touched[:used] < now - self.hold_s))
        partial = len(expired) > SWEEP_BATCH
        self._release(expired[:SWEEP_BATCH])
        self.next_sweep = now if partial else now + SWEEP_EVERY_TTL * self.ttl_s
        return min(len(expired), SWEEP_BATCH)

    # -- slots ---------------------------------------------------------------------

    def _allocate(self, session_id: str, now: float) -> int:
        if len(self.slot_of) >= self.max_sessions:
            self.sweep(now)
            if len(self.slot_of) >= self.max_sessions:
                self._evict_least_recent()
        if self.free_slots:
            slot = self.free_slots.pop()
            self.session_ids[slot] = session_id
        else:
            slot = len(self.session_ids)
            if slot >= len(self.active):
                self._grow(min(2 * len(self.active), self.max_sessions))
            self.session_ids.append(session_id)
        self.slot_of[session_id] = slot
        self.active[slot] = True
        return slot

    def _evict_least_recent(self) -> None:
        used = len(self.session_ids)
        count = min(max(1, math.ceil(EVICT_FRACTION * self.max_sessions)), SWEEP_BATCH, used)
        last = np.where(self.active[:used], self.touched[:used], np.inf)
        victims = np.argpartition(last, count - 1)[:count]
        self._release(victims[self.active[victims]])

    def _release(self, slots: npt.NDArray[np.intp]) -> None:
        """Free the slots of live sessions (vectorised where numpy can do it)."""
        self.active[slots] = False
        self._reset(slots)
        for slot in slots.tolist():
            del self.slot_of[self.session_ids[slot]]
            self.session_ids[slot] = ""
            self.carts.pop(slot, None)
            self.purchased.pop(slot, None)
        self.free_slots.extend(slots.tolist())

    def _clear(self, slot: int) -> None:
        """Empty a session that starts over in its own slot."""
        self._reset(np.array([slot]))
        self.carts.pop(slot, None)
        self.purchased.pop(slot, None)

    def _reset(self, slots: npt.NDArray[np.intp]) -> None:
        self.heads[slots] = 0
        self.lengths[slots] = 0
        self.last_ts[slots] = FREE
        self.touched[slots] = FREE
        self.records[slots] = -1
        self.users[slots] = -1

    def keep_rows(self) -> KeptRows:
        """From now until stop_keeping, the ring buffers as they are now, readable block
        by block while events go on (recsrv.checkpointer: taken under the consumer's
        lock, so no event is half applied)."""
        if self.kept is not None:
            raise RuntimeError("the ring buffers are already kept for a checkpoint")
        self.kept = KeptRows(self)
        return self.kept

    def stop_keeping(self) -> None:
        self.kept = None

    def _grow(self, capacity: int) -> None:
        self.items = grown(self.items, capacity, -1)
        self.types = grown(self.types, capacity, 0)
        self.times = grown(self.times, capacity, 0.0)
        self.heads = grown(self.heads, capacity, 0)
        self.lengths = grown(self.lengths, capacity, 0)
        self.last_ts = grown(self.last_ts, capacity, FREE)
        self.touched = grown(self.touched, capacity, FREE)
        self.records = grown(self.records, capacity, -1)
        self.users = grown(self.users, capacity, -1)
        self.active = grown(self.active, capacity, False)
        self._flat_views()

    def _flat_views(self) -> None:
        """1-D memoryviews of the arrays the per-event path touches (after each _grow)."""
        self._flat_items = self.items.data.cast("B").cast("i")
        self._flat_types = self.types.data.cast("B").cast("b")
        self._flat_times = self.times.data.cast("B").cast("d")
        self._flat_heads = self.heads.data.cast("B").cast("i")
        self._flat_lengths = self.lengths.data.cast("B").cast("i")
        self._flat_last_ts = self.last_ts.data.cast("B").cast("d")
        self._flat_touched = self.touched.data.cast("B").cast("d")
        self._flat_records = self.records.data.cast("B").cast("q")
        self._flat_users = self.users.data.cast("B").cast("i")


class KeptRows:
    """The sessions' ring buffers (RING_ARRAYS) as they were when a checkpoint began,
    read block by block later, while events go on, instead of copied whole while the
    consumer waits: they are two thirds of a checkpoint.

    `record` is the only writer of ring rows, and it calls `keep` first: the first
    change to a row since the start saves the row's old values. `blocks` copies rows
    from the live arrays (numpy lets the GIL go meanwhile, so a row may be read while
    it changes) and then puts every saved row of the block back over its copy. A row
    changed before or during that copy was saved before its change, so each block is
    the rows as they were. Growing the table replaces the arrays, and the ones kept
    here are then changed no more. Rows saved cost about 1 KB each, once a checkpoint.
    """

    RING_ARRAYS: Final = ("items", "types", "times")

    def __init__(self, sessions: Sessions) -> None:
        self.rows = len(sessions.session_ids)  # the slots the checkpoint holds
        self._arrays = [getattr(sessions, name) for name in self.RING_ARRAYS]
        row_bytes = max(array.itemsize for array in self._arrays) * sessions.max_events
        self.block_rows = max(1, KEPT_BLOCK_BYTES // row_bytes)
        self._saved: dict[int, list[npt.NDArray[Any]]] = {}
        self._saved_in_block: dict[int, list[int]] = {}

    def __len__(self) -> int:
        """Rows saved so far."""
        return len(self._saved)

    def keep(self, slot: int) -> None:
        """Save the row's values before its first change (the event loop's thread)."""
        if slot >= self.rows or slot in self._saved:
            return
        self._saved[slot] = [array[slot].copy() for array in self._arrays]
        # After the row is saved: a block that finds the slot here finds its values.
        self._saved_in_block.setdefault(slot // self.block_rows, []).append(slot)

    def blocks(self, name: str) -> Iterator[npt.NDArray[Any]]:
        """The rows of ring buffer `name` as they were at the start, block_rows at a
        time, in order (any thread)."""
        column = self.RING_ARRAYS.index(name)
        live = self._arrays[column]
        for number, start in enumerate(range(0, self.rows, self.block_rows)):
            block = live[start : min(start + self.block_rows, self.rows)].copy()
            for slot in list(self._saved_in_block.get(number, ())):
                block[slot - start] = self._saved[slot][column]
            yield block
