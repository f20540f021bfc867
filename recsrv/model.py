"""The in-memory model: applies typed events to the state parts, in stream order.

A thin coordinator. Each part lives in its own module under recsrv/state:
ItemIndex (ids ↔ indices), Catalog (fields, availability, counters), Popularity,
three NeighborTables (`similar`, learnt from browsing sequences both ways,
`successors`, what follows an item within `sr_steps`, and `bought_together`, learnt
from carts and purchases), Sessions, the SessionIndex of recent sessions, and Users.
The Blend of the scoring components learns its weights from the stream itself
(Prequential). The model's clock is event time, so the state is a pure function of
the events applied, in the order applied.

Events are learnt in session time: a late event takes its place among its session's
events by `ts`, and is paired with the items before and after it there.

Pure code: numpy only, no I/O, no asyncio.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from recsrv.blend import Blend
from recsrv.config import ModelConfig, SessionsConfig
from recsrv.events import (
    CatalogDelete,
    CatalogUpsert,
    Event,
    Interaction,
    LineItem,
    UserForget,
)
from recsrv.prequential import Prequential
from recsrv.scoring import components
from recsrv.state.catalog import TYPE_CODE, Catalog
from recsrv.state.items import DEFAULT_CAPACITY, ItemIndex, positions_held
from recsrv.state.neighbors import NeighborTable
from recsrv.state.popularity import Popularity
from recsrv.state.session_index import SessionIndex
from recsrv.state.sessions import Sessions
from recsrv.state.users import CART_WEIGHT, PURCHASE_WEIGHT, Users

VIEW, CLICK, ADD_TO_CART, REMOVE_FROM_CART, PURCHASE = (
    TYPE_CODE[name] for name in ("view", "click", "add_to_cart", "remove_from_cart", "purchase")
)


class RecentIds:
    """The last `size` event ids applied, for de-duplication (size 0 turns it off)."""

    __slots__ = ("_order", "_seen", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self._seen: set[str] = set()
        self._order: deque[str] = deque()

    def __len__(self) -> int:
        return len(self._order)

    def __iter__(self) -> Iterator[str]:
        """The remembered ids, oldest first."""
        return iter(self._order)

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._seen

    def restore(self, ids: Sequence[str]) -> None:
        """Remember `ids` (oldest first) in place of the current ones; only the last
        `size` of them if the window is smaller than when they were remembered."""
        kept = ids[-self.size :] if self.size else ()
        self._order = deque(kept)
        self._seen = set(self._order)

    def add(self, event_id: str) -> bool:
        """Remember `event_id`; False if it is already remembered."""
        if event_id in self._seen:
            return False
        if self.size:
            self._seen.add(event_id)
            self._order.append(event_id)
            if len(self._order) > self.size:
                self._seen.discard(self._order.popleft())
        return True


class Applied:
    """What a batch of events did, per event type: how many were applied and how many
    were ignored as duplicates (an event that failed counts in neither)."""

    __slots__ = ("applied", "duplicates")

    def __init__(self) -> None:
        self.applied: dict[str, int] = {}
        self.duplicates: dict[str, int] = {}

    @property
    def count(self) -> int:
        return sum(self.applied.values())

    def record(self, event_type: str, applied: bool) -> None:
        counts = self.applied if applied else self.duplicates
        counts[event_type] = counts.get(event_type, 0) + 1


# Called with (position in the batch, event, error) for an event that raised.
OnError = Callable[[int, Event, Exception], None]


class Model:
    def __init__(
        self,
        model_config: ModelConfig,
        sessions_config: SessionsConfig,
        *,
        initial_capacity: int = DEFAULT_CAPACITY,
    ) -> None:
        self.config = model_config
        self.sessions_config = sessions_config
        self.offset = -1
        self.events = 0
        self.clock = 0.0
        # What reads derive from the state alone, kept until the next event is applied
        # (the popular candidates: the same for every request in between).
        self.derived: dict[str, Any] = {}
        self.items = ItemIndex(initial_capacity)
        capacity = self.items.capacity
        self.catalog = Catalog(capacity)
        self.popularity = Popularity(model_config.popularity_half_life_s, capacity)
        self.similar = NeighborTable(
            model_config.neighbors, model_config.similarity_half_life_s, capacity
        )
        self.bought_together = NeighborTable(
            model_config.neighbors, model_config.similarity_half_life_s, capacity
        )
        self.successors = NeighborTable(
            model_config.neighbors, model_config.similarity_half_life_s, capacity
        )
        self.sessions = Sessions(sessions_config)
        self.session_index = SessionIndex(
            model_config.index_sessions,
            sessions_config.max_events,
            model_config.knn_per_item,
            capacity,
        )
        self.blend = Blend(len(components.COMPONENTS))
        self.prequential = Prequential(model_config.blend_every)
        self.users = Users(sessions_config.max_user_items)
        self.recent_ids = RecentIds(model_config.dedup_window)
        self._capacity = capacity
        self._type_weight = _type_weights(model_config)
        # Pair weights by distance d = 1..window, per type code: forward, then backward.
        position = [model_config.position_decay**d for d in range(model_config.window)]
        self._forward = {code: [w * p for p in position] for code, w in self._type_weight.items()}
        self._backward = {
            code: [weight * model_config.backward_weight for weight in forward]
            for code, forward in self._forward.items()
        }
        # Sequential rules: 1/distance, the same for every interaction type.
        self._successor_weights = [1.0 / d for d in range(1, model_config.sr_steps + 1)]

    # -- ingest --------------------------------------------------------------------

    def apply_message(self, offset: int, events: Sequence[Event]) -> int:
        """Apply the events of one stream message; a message whose offset <= self.offset is
        skipped entirely (returns 0). Sets self.offset = offset. Returns the number of
        events applied."""
        if offset <= self.offset:
            return 0
        applied = self.apply_events(events)
        self.offset = offset
        return applied.count

    def apply(self, event: Event) -> bool:
        """Apply one event; False if it was ignored as a duplicate event_id."""
        try:
            return self._apply(event)
        finally:
            self._flush()

    def apply_events(self, events: Sequence[Event], on_error: OnError | None = None) -> Applied:
        """Apply events in order, with exactly the state `apply` one by one would give.

        Neighbour-table writes are queued and applied together at the end, or before
        a prequential measurement reads the tables, which lets a long batch use
        vectorised steps. Without `on_error`, an event that raises stops the batch (what
        came before it stays applied); with it, the error is handed over with the
        event's position (from inside the except block, so a logger can show the
        traceback) and the batch goes on. Either way the writes queued so far, a
        failed event's partial ones included, are applied as `apply` would have.
        """
        applied = Applied()
        try:
            for position, event in enumerate(events):
                if on_error is None:
                    ok = self._apply(event)
                else:
                    try:
                        ok = self._apply(event)
                    except Exception as exc:
                        on_error(position, event, exc)
                        continue
                applied.record(event.type, ok)
        finally:
            self._flush()
        return applied

    def _apply(self, event: Event) -> bool:
        if event.event_id is not None and not self.recent_ids.add(event.event_id):
            return False
        self.derived.clear()
        ts = event.ts if math.isfinite(event.ts) else self.clock
        if ts > self.clock:
            self.clock = ts
        if type(event) is Interaction:
            self._interaction(event, ts)
        elif type(event) is CatalogUpsert:
            self.catalog.upsert(self._item(event.item.item_id), event.item)
        elif type(event) is CatalogDelete:
            idx = self.items.get(event.item_id)
            if idx is not None:
                self.catalog.delete(idx)
        elif type(event) is UserForget:
            self._forget(event.user_id)
        self.events += 1
        return True

    def _flush(self) -> None:
        self.similar.flush()
        self.successors.flush()
        self.bought_together.flush()

    # -- reads ---------------------------------------------------------------------

    def item_info(self, item_id: str) -> dict[str, Any] | None:
        """Catalog entry, counters and popularity; None if never seen or deleted."""
        idx = self.items.get(item_id)
        if idx is None or self.catalog.deleted[idx]:
            return None
        info = {"item_id": item_id, **self.catalog.info(idx)}
        info["popularity"] = self.popularity.current(idx, self.clock)
        return info

    def blend_report(self) -> dict[str, Any]:
        """The blend's learnt weight per scoring component and the live prequential
        HR@20 / MRR@20 of the served lists, with the number of predictions behind them."""
        quality = self.prequential
        weights = self.blend.weights.tolist()
        return {
            "weights": dict(zip(components.COMPONENTS, weights, strict=True)),
            "hr": quality.hr,
            "mrr": quality.mrr,
            "recent_hr": quality.recent_hr,
            "recent_mrr": quality.recent_mrr,
            "predictions": quality.predictions,
            "every": quality.every,
        }

    def stats(self) -> dict[str, int]:
        """Items (seen, not deleted), live sessions and known users."""
        n = len(self.items)
        deleted = int(self.catalog.deleted[:n].sum())
        return {
            "items": n - deleted,
            "sessions": self.sessions.live_count(self.clock),
            "users": len(self.users),
        }

    # -- interactions --------------------------------------------------------------

    def _interaction(self, event: Interaction, ts: float) -> None:
        code = TYPE_CODE[event.type]
        slot = self.sessions.open(event.session_id, ts, self.clock)
        user = self._session_user(slot, event.user_id)
        if event.item_id is not None:
            idx = self._item(event.item_id)
            self._count(idx, code, ts)
            if slot is not None:
                # Measured only when it is the session's newest event: what a shopper
                # does next, given what they did before, as lists are served. A late
                # event's place is in the middle of what the session already holds.
                if code in self._forward and ts >= self.sessions.last_ts[slot]:
                    self._measure(slot, user, idx)
                newer = self.sessions.record(slot, idx, code, ts)
                placed = newer >= 0
                if not placed:  # older than every event the full buffer keeps
                    newer = int(self.sessions.lengths[slot])
                if code in self._forward:
                    self._learn_sequence(slot, idx, code, ts, newer)
                if placed:
                    self._index(slot, idx, newer, ts)
            self._cart_effect(slot, user, idx, code, event.quantity, ts)
        if event.items and code == PURCHASE:
            self._purchase_lines(slot, user, event.items, ts)

    def _session_user(self, slot: int | None, user_id: str | None) -> int:
        """The user of the session (linked or relinked by this event); -1 if anonymous."""
        if user_id is None:
            return self.sessions.user_of(slot) if slot is not None else -1
        user = self.users.add(user_id)
        if slot is not None:
            self.sessions.set_user(slot, user)
        return user

    def _count(self, idx: int, code: int, ts: float) -> None:
        self.catalog.count(idx, code)
        weight = self._type_weight.get(code)
        if weight is not None:
            self.popularity.add(idx, weight, ts)

    def _measure(self, slot: int, user: int, idx: int) -> None:
        """Prequential: on a sampled event that moves a session with items to an item
        new to it, rank that item with the blend as served now, then let the blend learn."""
        if not self.sessions.lengths[slot] or not self.prequential.due():
            return
        self._flush()  # the scorers read the neighbour tables: queued pairs first
        context = components.context(self, slot, user)
        if idx in context.sequence:
            self.prequential.countdown = 0  # not eligible: measure the next one instead
            return
        blended = self.blend.combine(components.score_all(self, context))
        eligible = self.catalog.available[blended.items].copy()
        seen = np.concatenate((context.sequence, context.basket))
        eligible[positions_held(blended.items, seen)] = False
        self.prequential.record(self.blend.learn(blended, eligible, idx))

    def _learn_sequence(self, slot: int, idx: int, code: int, ts: float, newer: int) -> None:
        """Pair the item with its session's events around it in ts order.

        What a shopper looks at after A is a better guess for "similar to A" than what
        came before it: the forward pair prev→item gets the full weight, the backward
        pair item→prev `backward_weight` of it, over the `window` nearest distinct
        items. `successors` learns the forward pairs only, at 1/distance, over the
        `sr_steps` nearest events: an item seen twice in reach counts twice, as
        sequential rules count it (on the Diginetica-like clickstream, where half the
        sessions revisit an item, the sequence component alone rose from MRR@20 .418 to
        .421 against distinct items). A late event (newer > 0) is also paired forward
        with the events after it; the pairs between those neighbours keep the distance
        they were learnt at.
        """
        window = self.config.window
        before, after = self.sessions.around(slot, newer, idx, window)
        steps_before, steps_after = self.sessions.steps_around(
            slot, newer, idx, self.config.sr_steps
        )
        successor_weights = self._successor_weights
        if before:
            forward, backward = self._forward[code], self._backward[code]
            self.similar.queue_sequence(idx, before, forward, backward, ts)
        if steps_before:
            self.successors.queue_to_rows(
                [earlier for earlier, _ in steps_before],
                idx,
                [successor_weights[distance - 1] for _, distance in steps_before],
                ts,
            )
        # Each later item weighs and dates its pair as its own event would have, had it
        # come after this one.
        for distance, (later, later_code, later_ts) in enumerate(after):
            if later_code not in self._forward:
                continue  # a removal or search pairs with nothing
            ahead = self._forward[later_code][distance]
            back = self._backward[later_code][distance]
            self.similar.queue(idx, [later], [ahead], later_ts)
            self.similar.queue(later, [idx], [back], later_ts)
        for later, distance, later_code, later_ts in steps_after:
            if later_code in self._forward:
                self.successors.queue(idx, [later], [successor_weights[distance - 1]], later_ts)

    def _index(self, slot: int, idx: int, newer: int, ts: float) -> None:
        """Bring the session's record in the session index up to date: the event's item
        goes last (in ts order), or the record is rebuilt around a late one."""
        sessions, index = self.sessions, self.session_index
        serial = int(sessions.records[slot])
        if not index.holds(serial):
            serial = index.new_record()
            sessions.records[slot] = serial
            index.write(serial, sessions.sequence(slot), [idx], ts)
        elif newer == 0:
            index.append(serial, idx, ts)
        else:
            record = serial % index.capacity
            kept = index.items[record, : index.lengths[record]]
            entered = [] if idx in kept else [idx]
            index.write(serial, sessions.sequence(slot), entered, ts)

    def _cart_effect(
        self, slot: int | None, user: int, idx: int, code: int, quantity: int, ts: float
    ) -> None:
        """A cart or purchase: the session's basket (when the event joined a session)
        and the user's profile."""
        if code == ADD_TO_CART:
            if slot is not None and self.sessions.add_to_cart(slot, idx, quantity):
                self._pair_with_basket(slot, [idx], self._type_weight[code], ts)
            if user >= 0:
                self.users.credit(user, idx, CART_WEIGHT)
        elif code == REMOVE_FROM_CART:
            if slot is not None:
                self.sessions.remove_from_cart(slot, idx, quantity)
        elif code == PURCHASE:
            if slot is not None:
                self._pair_with_basket(slot, [idx], self._type_weight[code], ts)
                self.sessions.purchase(slot, idx, quantity)
            if user >= 0:
                self.users.credit(user, idx, PURCHASE_WEIGHT)

    def _purchase_lines(
        self, slot: int | None, user: int, lines: Sequence[LineItem], ts: float
    ) -> None:
        """A purchase with `items`: each line counts as a purchase of its item."""
        basket: dict[int, int] = {}
        for line in lines:
            idx = self._item(line.item_id)
            self._count(idx, PURCHASE, ts)
            basket[idx] = basket.get(idx, 0) + line.quantity
        if slot is not None:
            paired = list(basket)[: self.config.max_basket_lines]
            self._pair_with_basket(slot, paired, self._type_weight[PURCHASE], ts)
        for idx, quantity in basket.items():
            if slot is not None:
                self.sessions.purchase(slot, idx, quantity)
            if user >= 0:
                self.users.credit(user, idx, PURCHASE_WEIGHT)

    def _pair_with_basket(self, slot: int, new: list[int], weight: float, ts: float) -> None:
        """Pair `new` items with each other and with the session's cart and purchases."""
        if weight <= 0.0:
            return
        limit = self.config.max_basket_lines
        others = [i for i in self.sessions.basket(slot, limit + len(new)) if i not in new]
        others = others[-limit:]
        for a in new:
            partners = [b for b in new if b != a] + others
            if partners:
                self.bought_together.queue(a, partners, [weight] * len(partners), ts)
        for other in others:
            self.bought_together.queue(other, new, [weight] * len(new), ts)

    # -- items and users -----------------------------------------------------------

    def _item(self, item_id: str) -> int:
        """The index of an item, growing every per-item array when the index fills up."""
        idx = self.items.add(item_id)
        if idx >= self._capacity:
            capacity = self.items.capacity
            self.catalog.grow(capacity)
            self.popularity.grow(capacity)
            self.similar.grow(capacity)
            self.successors.grow(capacity)
            self.bought_together.grow(capacity)
            self.session_index.grow(capacity)
            self._capacity = capacity
        return idx

    def _forget(self, user_id: str) -> None:
        user = self.users.get(user_id)
        if user is None:
            return
        self.sessions.forget_user(user)
        self.users.forget(user_id)


def _type_weights(config: ModelConfig) -> dict[int, float]:
    """Weight per learnable interaction type code (remove_from_cart and search learn nothing)."""
    return {
        VIEW: config.weight_view,
        CLICK: config.weight_click,
        ADD_TO_CART: config.weight_add_to_cart,
        PURCHASE: config.weight_purchase,
    }
