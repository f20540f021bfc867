"""Live shopping sessions in a numpy slot table.

Each session owns a slot: ring buffers of its last `max_events` item events (item
index, type code, ts), its last activity time and its user. Carts and purchases are
dicts kept only for the sessions that have them. Sessions expire `ttl_s` after their
last event on the model clock (event time): a read of an expired session finds
nothing, and occasional vectorised sweeps free their slots. At most `max_sessions`
live at once; when full, the expired ones go first, then the least recently active
few percent. Freed slots are reused.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from recsrv.config import SessionsConfig
from recsrv.state.items import grown

INITIAL_SLOTS = 1024
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
    ARRAYS: Final = ("items", "types", "times", "heads", "lengths", "last_ts", "users", "active")

    def __init__(self, config: SessionsConfig) -> None:
        self.ttl_s = config.ttl_s
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
        self.users = np.full(capacity, -1, dtype=np.int32)
        self.active = np.zeros(capacity, dtype=np.bool_)
        # slot → {item: quantity} and slot → {item: quantity purchased}, insertion-ordered.
        self.carts: dict[int, dict[int, int]] = {}
        self.purchased: dict[int, dict[int, int]] = {}
        self.next_sweep = -np.inf
        self._flat_views()

    def __len__(self) -> int:
        """Sessions holding a slot, expired-but-not-yet-swept ones included."""
        return len(self.slot_of)

    # -- reads ---------------------------------------------------------------------

    def lookup(self, session_id: str, now: float) -> int | None:
        """The slot of a live session; None if unknown or expired at `now`."""
        slot = self.slot_of.get(session_id)
        if slot is None or self.last_ts[slot] < now - self.ttl_s:
            return None
        return slot

    def live_count(self, now: float) -> int:
        used = len(self.session_ids)
        live = self.active[:used] & (self.last_ts[:used] >= now - self.ttl_s)
        return int(np.count_nonzero(live))

    def recent(self, slot: int) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int8]]:
        """Item indices and type codes of the session's events, newest first."""
        length = int(self.lengths[slot])
        positions = (int(self.heads[slot]) - 1 - np.arange(length)) % self.max_events
        return self.items[slot, positions], self.types[slot, positions]

    def previous_items(self, slot: int, item: int, limit: int) -> list[int]:
        """Up to `limit` distinct items of the session, newest first, other than `item`."""
        width = self.max_events
        items, base, head = self._flat_items, slot * width, self._flat_heads[slot]
        found: list[int] = []
        for back in range(1, self._flat_lengths[slot] + 1):
            other = items[base + (head - back) % width]
            if other != item and other not in found:
                found.append(other)
                if len(found) == limit:
                    break
        return found

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
        self.carts = carts
        self.purchased = purchased
        self.next_sweep = float(arrays["next_sweep"][0])

    # -- writes --------------------------------------------------------------------

    def open(self, session_id: str, ts: float, now: float) -> int:
        """The slot for an event of `session_id` at `ts`, creating or renewing the session.

        A session idle for longer than the TTL at `now` starts over empty.
        """
        if now >= self.next_sweep:
            self.sweep(now)
        slot = self.slot_of.get(session_id)
        if slot is None:
            slot = self._allocate(session_id, now)  # may grow the arrays: new views
        elif self._flat_last_ts[slot] < now - self.ttl_s:
            self._clear(slot)
        last_ts = self._flat_last_ts
        if ts > last_ts[slot]:
            last_ts[slot] = ts
        return slot

    def record(self, slot: int, item: int, code: int, ts: float) -> None:
        """Append an item event to the session's ring buffer."""
        # Flat views: per-event scalar access costs a fraction of numpy indexing.
        width = self.max_events
        head = self._flat_heads[slot]
        at = slot * width + head
        self._flat_items[at] = item
        self._flat_types[at] = code
        self._flat_times[at] = ts
        self._flat_heads[slot] = (head + 1) % width
        if self._flat_lengths[slot] < width:
            self._flat_lengths[slot] += 1

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
        """Free the slots of sessions expired at `now`, at most SWEEP_BATCH of them so
        that one call stays short; the next event continues a partial sweep. Returns
        how many were freed."""
        used = len(self.session_ids)
        expired = np.flatnonzero(self.active[:used] & (self.last_ts[:used] < now - self.ttl_s))
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
        last = np.where(self.active[:used], self.last_ts[:used], np.inf)
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
        self.users[slots] = -1

    def _grow(self, capacity: int) -> None:
        self.items = grown(self.items, capacity, -1)
        self.types = grown(self.types, capacity, 0)
        self.times = grown(self.times, capacity, 0.0)
        self.heads = grown(self.heads, capacity, 0)
        self.lengths = grown(self.lengths, capacity, 0)
        self.last_ts = grown(self.last_ts, capacity, FREE)
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
        self._flat_users = self.users.data.cast("B").cast("i")
