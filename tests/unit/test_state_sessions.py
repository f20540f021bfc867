from typing import Any

import numpy as np
import pytest

from recsrv.config import SessionsConfig
from recsrv.state import sessions as sessions_module
from recsrv.state.sessions import Sessions

VIEW, ADD = 0, 2
T0 = 1.7e9


def make(**overrides: Any) -> Sessions:
    return Sessions(SessionsConfig(**overrides))


def test_ring_buffer_keeps_the_last_events_newest_first() -> None:
    sessions = make(max_events=3)
    slot = sessions.open("s", T0, T0)
    for n, item in enumerate([10, 11, 12, 13, 14]):
        sessions.record(slot, item, VIEW if n % 2 else ADD, T0 + n)
    items, types = sessions.recent(slot)
    assert items.tolist() == [14, 13, 12]
    assert types.tolist() == [ADD, VIEW, ADD]


def test_earlier_items_are_distinct_newest_first_without_the_item_itself() -> None:
    sessions = make(max_events=6)
    slot = sessions.open("s", T0, T0)
    for item in [1, 2, 3, 2, 4, 2]:
        sessions.record(slot, item, VIEW, T0)
    assert sessions.around(slot, -1, 5, limit=10)[0] == [2, 4, 3, 1]
    assert sessions.around(slot, -1, 2, limit=10)[0] == [4, 3, 1]
    assert sessions.around(slot, -1, 5, limit=2)[0] == [2, 4]


def test_session_expires_after_ttl_on_event_time() -> None:
    sessions = make(ttl_s=100.0)
    slot = sessions.open("s", T0, T0)
    sessions.record(slot, 7, VIEW, T0)
    sessions.add_to_cart(slot, 7, 1)
    assert sessions.lookup("s", T0 + 100.0) == slot
    assert sessions.lookup("s", T0 + 100.5) is None
    assert sessions.live_count(T0 + 100.5) == 0
    # An event after the TTL starts the session over, empty.
    again = sessions.open("s", T0 + 101.0, T0 + 101.0)
    assert sessions.recent(again)[0].tolist() == []
    assert sessions.basket(again) == []
    assert sessions.live_count(T0 + 101.0) == 1


def test_sweep_frees_expired_slots_for_reuse() -> None:
    sessions = make(ttl_s=100.0, allowed_lateness_s=0.0)
    first = sessions.open("a", T0, T0)
    sessions.open("b", T0 + 50.0, T0 + 50.0)
    assert sessions.sweep(T0 + 120.0) == 1
    assert "a" not in sessions.slot_of
    assert sessions.open("c", T0 + 120.0, T0 + 120.0) == first
    assert sorted(sessions.slot_of) == ["b", "c"]


def test_a_large_sweep_is_spread_over_several_events(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sessions_module, "SWEEP_BATCH", 2)
    sessions = make(ttl_s=100.0, allowed_lateness_s=0.0)
    for n in range(5):
        sessions.open(f"old{n}", T0, T0)
    assert sessions.sweep(T0 + 200.0) == 2
    assert len(sessions) == 3
    sessions.open("new", T0 + 200.0, T0 + 200.0)  # continues the sweep
    sessions.open("new", T0 + 200.0, T0 + 200.0)
    assert sorted(sessions.slot_of) == ["new"]
    assert sessions.next_sweep == T0 + 200.0 + 25.0


def test_max_sessions_evicts_the_least_recently_active() -> None:
    sessions = make(max_sessions=50, ttl_s=1e6)
    for n in range(50):
        sessions.open(f"s{n}", T0 + n, T0 + n)
    sessions.open("s0", T0 + 60.0, T0 + 60.0)  # s0 is active again
    for n in range(50, 60):
        sessions.open(f"s{n}", T0 + 100.0 + n, T0 + 100.0 + n)
    assert len(sessions) == 50
    live = set(sessions.slot_of)
    assert "s0" in live
    assert {f"s{n}" for n in range(1, 11)}.isdisjoint(live)
    assert {f"s{n}" for n in range(11, 60)} <= live


def test_eviction_takes_a_few_percent_at_once() -> None:
    sessions = make(max_sessions=200, ttl_s=1e6)
    for n in range(201):
        sessions.open(f"s{n}", T0 + n, T0 + n)
    assert len(sessions) == 197  # 4 (2 %) evicted to admit the 201st
    assert {"s0", "s1", "s2", "s3"}.isdisjoint(sessions.slot_of)
    assert "s4" in sessions.slot_of


def test_expired_sessions_go_before_any_live_one_is_evicted() -> None:
    sessions = make(max_sessions=3, ttl_s=10.0)
    sessions.open("old", T0, T0)
    sessions.open("a", T0 + 15.0, T0 + 15.0)
    sessions.open("b", T0 + 16.0, T0 + 16.0)
    sessions.open("c", T0 + 16.0, T0 + 16.0)
    assert sorted(sessions.slot_of) == ["a", "b", "c"]


def test_cart_add_remove_and_purchase() -> None:
    sessions = make()
    slot = sessions.open("s", T0, T0)
    assert sessions.add_to_cart(slot, 1, 2) is True
    assert sessions.add_to_cart(slot, 1, 1) is False
    assert sessions.add_to_cart(slot, 2, 1) is True
    assert sessions.carts[slot] == {1: 3, 2: 1}
    sessions.remove_from_cart(slot, 1, 2)
    assert sessions.carts[slot] == {1: 1, 2: 1}
    sessions.remove_from_cart(slot, 1, 5)
    sessions.remove_from_cart(slot, 9, 1)  # never carted: nothing happens
    assert sessions.carts[slot] == {2: 1}
    sessions.purchase(slot, 2, 1)
    sessions.purchase(slot, 3, 4)
    assert slot not in sessions.carts
    assert sessions.purchased[slot] == {2: 1, 3: 4}
    assert sessions.basket(slot) == [2, 3]
    assert sessions.has_events(slot)


def test_basket_lists_purchases_then_cart_and_keeps_the_last_ones() -> None:
    sessions = make()
    slot = sessions.open("s", T0, T0)
    for item in (5, 6, 7):
        sessions.add_to_cart(slot, item, 1)
    sessions.purchase(slot, 9, 1)
    assert sessions.basket(slot) == [9, 5, 6, 7]
    assert sessions.basket(slot, limit=2) == [6, 7]


def test_forget_user_removes_only_that_users_sessions() -> None:
    sessions = make()
    for name, user in (("a", 1), ("b", 2), ("c", 1)):
        slot = sessions.open(name, T0, T0)
        sessions.set_user(slot, user)
        sessions.add_to_cart(slot, 3, 1)
    assert sessions.forget_user(1) == 2
    assert sorted(sessions.slot_of) == ["b"]
    assert len(sessions.carts) == 1


@pytest.mark.parametrize("max_sessions", [1, 5])
def test_slot_table_grows_up_to_max_sessions_only(max_sessions: int) -> None:
    sessions = make(max_sessions=max_sessions, ttl_s=1e6)
    for n in range(3000):
        sessions.open(f"s{n}", T0 + n, T0 + n)
    assert len(sessions) == max_sessions
    assert len(sessions.active) == max_sessions


def test_the_table_grows_past_its_first_slots_and_keeps_every_session() -> None:
    sessions = make(max_events=4, ttl_s=1e6)
    count = 3 * sessions_module.INITIAL_SLOTS + 5  # grows twice
    for n in range(count):
        slot = sessions.open(f"s{n}", T0 + n, T0 + n)
        sessions.record(slot, n, VIEW, T0 + n)
        sessions.record(slot, n + 1, ADD, T0 + n)
    now = T0 + count
    assert len(sessions.last_ts) >= count
    for n in (0, sessions_module.INITIAL_SLOTS, count - 1):
        slot = sessions.lookup(f"s{n}", now)
        assert slot is not None
        assert sessions.recent(slot)[0].tolist() == [n + 1, n]
        assert sessions.last_ts[slot] == T0 + n
        assert sessions.around(slot, -1, n + 1, limit=5)[0] == [n]


# -- session time --------------------------------------------------------------------


def test_a_late_event_takes_its_place_by_ts() -> None:
    sessions = make(max_events=5)
    slot = sessions.open("s", T0, T0)
    for item, t in [(1, 10.0), (2, 20.0), (4, 40.0)]:
        assert sessions.record(slot, item, VIEW, T0 + t) == 0
    assert sessions.record(slot, 3, ADD, T0 + 30.0) == 1  # one kept event is newer
    assert sessions.record(slot, 0, VIEW, T0 + 5.0) == 4
    items, types = sessions.recent(slot)
    assert items.tolist() == [4, 3, 2, 1, 0]
    assert types.tolist() == [VIEW, ADD, VIEW, VIEW, VIEW]
    assert sessions.sequence(slot) == [0, 1, 2, 3, 4]
    # Full: an event older than all that are kept is not kept; a newer one drops the oldest.
    assert sessions.record(slot, 9, VIEW, T0) == -1
    assert sessions.record(slot, 5, VIEW, T0 + 25.0) == 2
    assert sessions.sequence(slot) == [1, 2, 5, 3, 4]


def test_around_gives_the_neighbours_on_both_sides_nearest_first() -> None:
    sessions = make(max_events=8)
    slot = sessions.open("s", T0, T0)
    for item, t in [(1, 10.0), (2, 20.0), (1, 25.0), (4, 40.0), (5, 50.0)]:
        sessions.record(slot, item, VIEW, T0 + t)
    newer = sessions.record(slot, 3, VIEW, T0 + 30.0)
    assert newer == 2
    later = [(4, VIEW, T0 + 40.0), (5, VIEW, T0 + 50.0)]
    assert sessions.around(slot, newer, 3, limit=10) == ([1, 2], later)
    assert sessions.around(slot, newer, 3, limit=1) == ([1], later[:1])
    # A repeated item keeps its latest place in the sequence.
    assert sessions.sequence(slot) == [2, 1, 3, 4, 5]


def test_steps_around_counts_every_event_in_reach_repeats_included() -> None:
    sessions = make(max_events=8)
    slot = sessions.open("s", T0, T0)
    for item, t in [(1, 10.0), (2, 20.0), (1, 25.0), (4, 40.0), (1, 45.0), (5, 50.0)]:
        sessions.record(slot, item, VIEW, T0 + t)
    newer = sessions.record(slot, 3, VIEW, T0 + 30.0)
    assert newer == 3
    before, after = sessions.steps_around(slot, newer, 3, limit=10)
    assert before == [(1, 1), (2, 2), (1, 3)]  # 1 twice, at each of its distances
    assert after == [(4, 1, VIEW, T0 + 40.0), (1, 2, VIEW, T0 + 45.0), (5, 3, VIEW, T0 + 50.0)]
    # The reach is in events, not distinct items; the event's own item is no step target.
    before, after = sessions.steps_around(slot, newer, 1, limit=2)
    assert before == [(2, 2)]
    assert after == [(4, 1, VIEW, T0 + 40.0)]


def test_membership_is_session_time_and_liveness_the_model_clock() -> None:
    sessions = make(ttl_s=100.0, allowed_lateness_s=1000.0)
    slot = sessions.open("s", T0, T0 + 5000.0)  # arrives long after its time
    sessions.record(slot, 1, VIEW, T0)
    # Served: it arrived just now on the model clock.
    assert sessions.lookup("s", T0 + 5000.0) == slot
    # A later event within ttl_s of its own events joins it, however late it arrives.
    assert sessions.open("s", T0 + 90.0, T0 + 5050.0) == slot
    sessions.record(slot, 2, VIEW, T0 + 90.0)
    assert sessions.sequence(slot) == [1, 2]
    # More than ttl_s before its oldest event: an earlier visit, joins nothing.
    assert sessions.open("s", T0 - 200.0, T0 + 5060.0) is None
    # More than ttl_s after its newest: a new visit under the same id starts over.
    assert sessions.open("s", T0 + 300.0, T0 + 5070.0) == slot
    assert sessions.sequence(slot) == []


def test_a_session_is_held_for_late_events_until_its_lateness_bound() -> None:
    sessions = make(ttl_s=100.0, allowed_lateness_s=1000.0)
    slot = sessions.open("s", T0, T0)
    sessions.record(slot, 1, VIEW, T0)
    assert sessions.lookup("s", T0 + 101.0) is None  # no longer served
    assert sessions.sweep(T0 + 1100.0) == 0  # still held
    assert sessions.open("s", T0 + 50.0, T0 + 1100.0) == slot
    assert sessions.sequence(slot) == [1]  # the late event joined what was there
    assert sessions.sweep(T0 + 1100.0 + 1101.0) == 1  # past the bound: freed
    assert "s" not in sessions.slot_of


def test_recent_equals_reading_the_ring_backwards_from_its_head() -> None:
    # Every fill of the ring, wrapped or not: the reference reads the positions
    # (head - 1 - i) % max_events one by one.
    for count in range(12):
        sessions = make(max_events=5)
        slot = sessions.open("s", T0, T0)
        for n in range(count):
            sessions.record(slot, 100 + n, n % 3, T0 + n)
        head, length = int(sessions.heads[slot]), int(sessions.lengths[slot])
        positions = [(head - 1 - i) % 5 for i in range(length)]
        items, types = sessions.recent(slot)
        assert items.tolist() == [int(sessions.items[slot, p]) for p in positions]
        assert types.tolist() == [int(sessions.types[slot, p]) for p in positions]
        assert items.dtype == sessions.items.dtype and types.dtype == sessions.types.dtype
        # Copies: changing them leaves the state alone.
        items[:] = -7
        assert -7 not in sessions.items[slot].tolist()


# -- the ring buffers kept for a checkpoint ------------------------------------------


def test_kept_rows_are_the_rings_as_they_were_through_changes_and_growth(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sessions_module, "KEPT_BLOCK_BYTES", 1000)  # blocks of 31 rows
    sessions = make(max_events=4, ttl_s=1e6)
    count = sessions_module.INITIAL_SLOTS  # a full table: the next session grows it
    for n in range(count):
        slot = sessions.open(f"s{n}", T0 + n, T0 + n)
        sessions.record(slot, n, VIEW, T0 + n)
    before = {name: getattr(sessions, name)[:count].copy() for name in ("items", "types", "times")}
    kept = sessions.keep_rows()
    with pytest.raises(RuntimeError, match="already kept"):
        sessions.keep_rows()
    for n in range(0, count, 3):  # changes to kept rows, some wrapping their ring
        slot = sessions.lookup(f"s{n}", T0 + count)
        assert slot is not None
        for step in range(5):
            sessions.record(slot, 10_000 + step, ADD, T0 + count + step)
    for n in range(count, count + 50):  # new sessions: the table grows
        slot = sessions.open(f"s{n}", T0 + n, T0 + n)
        sessions.record(slot, n, VIEW, T0 + n)
    assert len(sessions.items) > count
    assert len(kept) == len(range(0, count, 3))  # each changed row saved once
    for name in ("items", "types", "times"):
        blocks = list(kept.blocks(name))
        assert len(blocks) == -(-count // kept.block_rows)
        assert (np.concatenate(blocks) == before[name]).all()
    sessions.stop_keeping()
    assert sessions.kept is None


def test_kept_rows_hold_only_the_slots_in_use_at_the_start() -> None:
    sessions = make(max_events=4)
    for n in range(5):
        slot = sessions.open(f"s{n}", T0 + n, T0 + n)
        sessions.record(slot, n, VIEW, T0 + n)
    assert len(sessions.items) > 5  # slots allocated beyond those used
    before = sessions.items[:5].copy()
    kept = sessions.keep_rows()
    slot = sessions.open("s5", T0 + 5, T0 + 5)  # a slot used after the start
    sessions.record(slot, 5, VIEW, T0 + 5)
    assert len(kept) == 0  # not one of the kept rows
    assert (np.concatenate(list(kept.blocks("items"))) == before).all()
