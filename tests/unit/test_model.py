from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from recsrv.config import ModelConfig, SessionsConfig
from recsrv.events import (
    CatalogDelete,
    Event,
    Interaction,
    LineItem,
    UserForget,
)
from recsrv.model import Model
from tests.unit.builders import T0, act, upsert


def build(events: Sequence[Event], sessions: SessionsConfig | None = None, **config: Any) -> Model:
    model = Model(ModelConfig(**config), sessions or SessionsConfig())
    for event in events:
        model.apply(event)
    return model


def row(model: Model, table: str, item: str) -> dict[str, float]:
    """A neighbour row by item id, weights decayed to the model clock."""
    ids, weights = getattr(model, table).row(model.items.add(item), model.clock)
    return {model.items.ids[i]: w for i, w in zip(ids.tolist(), weights.tolist(), strict=True)}


def test_initial_state() -> None:
    model = Model(ModelConfig(), SessionsConfig())
    assert (model.offset, model.events, model.clock) == (-1, 0, 0.0)
    assert model.stats() == {"items": 0, "sessions": 0, "users": 0}
    assert model.item_info("x") is None


def test_events_and_clock_count_every_kind_of_valid_event() -> None:
    model = build(
        [
            act("view", "s", "a", t=5),
            upsert("b", t=3),
            CatalogDelete("zzz", ts=T0 + 9),  # unknown item: valid, applied, no effect
            UserForget("nobody", ts=T0 + 1),
            act("search", "s", t=2, query="shoes"),
        ]
    )
    assert model.events == 5
    assert model.clock == T0 + 9
    assert model.stats() == {"items": 2, "sessions": 1, "users": 0}
    assert model.item_info("zzz") is None


def test_duplicate_event_id_is_applied_once() -> None:
    model = Model(ModelConfig(), SessionsConfig())
    first = act("view", "s", "a", event_id="e1")
    assert model.apply(first) is True
    assert model.apply(first) is False
    assert model.apply(act("view", "s2", "a", t=50, event_id="e1")) is False
    assert model.events == 1
    assert model.clock == T0  # an ignored event does not move the clock
    info = model.item_info("a")
    assert info is not None
    assert info["counters"]["view"] == 1
    assert model.apply(act("view", "s", "a")) is True  # no id: never a duplicate
    assert model.events == 2


def test_dedup_window_remembers_only_the_last_ids() -> None:
    model = build([], dedup_window=2)
    for event_id in ("e1", "e2", "e3"):
        assert model.apply(act("view", "s", "a", event_id=event_id))
    assert not model.apply(act("view", "s", "a", event_id="e3"))
    assert model.apply(act("view", "s", "a", event_id="e1"))  # fell out of the window
    assert model.events == 4


def test_apply_message_skips_offsets_already_applied() -> None:
    model = Model(ModelConfig(), SessionsConfig())
    batch = [act("view", "s", "a"), act("view", "s", "b", t=1)]
    assert model.apply_message(5, batch) == 2
    assert model.offset == 5
    assert model.apply_message(5, batch) == 0
    assert model.apply_message(3, [act("view", "s", "c")]) == 0
    assert model.offset == 5
    assert model.item_info("c") is None
    assert model.events == 2
    # Duplicates inside a new message are not counted either.
    assert model.apply_message(9, [act("view", "s", "c", event_id="x")] * 2) == 1
    assert (model.offset, model.events) == (9, 3)


def test_item_info_reports_catalog_fields_counters_and_popularity() -> None:
    events = [
        upsert(
            "a",
            title="Boots",
            category="shoes",
            price=59.0,
            tags=("winter",),
            url="/a",
            image_url="/a.jpg",
            properties={"brand": "x"},
        ),
        act("view", "s", "a"),
        act("view", "s", "a"),
        act("click", "s", "a"),
        act("add_to_cart", "s", "a", quantity=2),
        act("remove_from_cart", "s", "a"),
        act("purchase", "s", items=(LineItem("a"), LineItem("b", 3))),
    ]
    model = build(events)
    assert model.item_info("a") == {
        "item_id": "a",
        "title": "Boots",
        "category": "shoes",
        "price": 59.0,
        "in_stock": True,
        "url": "/a",
        "image_url": "/a.jpg",
        "tags": ["winter"],
        "properties": {"brand": "x"},
        "in_catalog": True,
        "counters": {"view": 2, "click": 1, "add_to_cart": 1, "remove_from_cart": 1, "purchase": 1},
        "popularity": pytest.approx(1 + 1 + 2 + 4 + 6),
    }
    b = model.item_info("b")
    assert b is not None
    assert (b["in_catalog"], b["title"], b["price"], b["tags"]) == (False, None, None, [])
    assert b["counters"]["purchase"] == 1


def test_popularity_decays_on_event_time() -> None:
    model = build([act("purchase", "s", "a")], popularity_half_life_s=100.0)
    model.apply(upsert("other", t=200))  # any event moves the clock
    info = model.item_info("a")
    assert info is not None
    assert info["popularity"] == pytest.approx(6.0 / 4)


def test_delete_hides_the_item_until_an_upsert_brings_it_back() -> None:
    model = build([upsert("a", title="A"), CatalogDelete("a", ts=T0 + 1)])
    assert model.item_info("a") is None
    assert model.stats()["items"] == 0
    model.apply(act("view", "s", "a", t=2))  # still counted while deleted
    model.apply(upsert("a", t=3, title="A2"))
    info = model.item_info("a")
    assert info is not None
    assert (info["title"], info["counters"]["view"]) == ("A2", 1)


def test_sequence_order_matters() -> None:
    model = build([act("view", "s", "a"), act("view", "s", "b", t=1)])
    assert row(model, "similar", "a") == pytest.approx({"b": 1.0})
    assert row(model, "similar", "b") == pytest.approx({"a": 0.5})


def test_pair_weights_follow_type_and_distance() -> None:
    events = [
        act("view", "s", "a"),
        act("view", "s", "b", t=1),
        act("view", "s", "a", t=2),  # a repeat: not a previous item of itself
        act("click", "s", "c", t=3),
    ]
    model = build(events)
    # c (click, 2.0): nearest distinct previous items are a (d=1) then b (d=2).
    assert row(model, "similar", "a") == pytest.approx({"b": 1.0 + 0.5, "c": 2.0})
    assert row(model, "similar", "b") == pytest.approx({"a": 1.0 + 0.5, "c": 2.0 * 0.7})
    assert row(model, "similar", "c") == pytest.approx({"a": 1.0, "b": 0.7})


def test_window_limits_how_far_back_pairs_reach() -> None:
    events = [act("view", "s", f"i{n}", t=n) for n in range(5)]
    model = build(events, window=2)
    assert set(row(model, "similar", "i4")) == {"i3", "i2"}
    assert set(row(model, "similar", "i1")) == {"i0", "i2", "i3"}


def test_views_never_feed_bought_together() -> None:
    events = [
        act("view", "s", "a"),
        act("add_to_cart", "s", "c", t=1),
        act("view", "s", "b", t=2),
        act("add_to_cart", "s", "d", t=3),
    ]
    model = build(events)
    assert row(model, "bought_together", "c") == pytest.approx({"d": 4.0})
    assert row(model, "bought_together", "d") == pytest.approx({"c": 4.0})
    assert row(model, "bought_together", "a") == {}
    assert row(model, "bought_together", "b") == {}
    assert set(row(model, "similar", "a")) == {"c", "b", "d"}


def test_adding_more_of_a_carted_item_does_not_pair_it_again() -> None:
    events = [
        act("add_to_cart", "s", "c"),
        act("add_to_cart", "s", "d"),
        act("add_to_cart", "s", "d"),
    ]
    model = build(events)
    assert row(model, "bought_together", "c") == pytest.approx({"d": 4.0})
    assert model.sessions.carts[model.sessions.slot_of["s"]] == {0: 1, 1: 2}


def test_purchase_pairs_with_cart_and_earlier_purchases() -> None:
    events = [
        act("add_to_cart", "s", "c"),
        act("purchase", "s", "p"),
        act("purchase", "s", "c", t=1),
    ]
    model = build(events)
    # Carting c paired it with nothing; buying p paired p with the cart (c), buying c
    # paired c with the purchases (p).
    assert row(model, "bought_together", "c") == pytest.approx({"p": 6.0 + 6.0})
    slot = model.sessions.slot_of["s"]
    assert slot not in model.sessions.carts
    assert list(model.sessions.purchased[slot]) == [model.items.get("p"), model.items.get("c")]


def test_purchase_with_items_pairs_its_lines_with_each_other_and_the_cart() -> None:
    events = [
        act("add_to_cart", "s", "c"),
        act("view", "s", "v"),
        act("purchase", "s", items=(LineItem("x"), LineItem("y", 2), LineItem("z"))),
    ]
    model = build(events, max_basket_lines=2)
    assert row(model, "bought_together", "x") == pytest.approx({"y": 6.0, "c": 6.0})
    assert row(model, "bought_together", "c") == pytest.approx({"x": 6.0, "y": 6.0})
    assert row(model, "bought_together", "z") == {}  # past max_basket_lines
    assert row(model, "bought_together", "v") == {}
    slot = model.sessions.slot_of["s"]
    index = model.items.get
    assert model.sessions.purchased[slot] == {index("x"): 1, index("y"): 2, index("z"): 1}
    assert model.sessions.carts.get(slot) == {index("c"): 1}


def test_cart_add_and_remove() -> None:
    model = build(
        [
            act("add_to_cart", "s", "a", quantity=2),
            act("add_to_cart", "s", "b"),
            act("remove_from_cart", "s", "a"),
        ]
    )
    slot = model.sessions.slot_of["s"]
    assert model.sessions.carts[slot] == {0: 1, 1: 1}
    model.apply(act("remove_from_cart", "s", "a", t=1))
    assert model.sessions.carts[slot] == {1: 1}


def test_users_accumulate_cart_and_purchase_weights_across_sessions() -> None:
    events = [
        act("add_to_cart", "s1", "a", user_id="u"),
        act("purchase", "s1", "a"),  # no user_id: the session remembers its user
        act("add_to_cart", "s2", "b", t=5000, user_id="u"),
        act("purchase", "s3", items=(LineItem("c"),), t=6000, user_id="u"),
        act("add_to_cart", "anon", "d", t=6000),
    ]
    model = build(events)
    user = model.users.get("u")
    assert user is not None
    items, weights = model.users.profile(user)
    named = dict(zip((model.items.ids[i] for i in items.tolist()), weights.tolist(), strict=True))
    assert named == pytest.approx({"a": 1.5, "b": 0.5, "c": 1.0})
    assert model.stats()["users"] == 1


def test_user_forget_removes_profile_and_every_session_of_the_user() -> None:
    events = [
        act("add_to_cart", "s1", "a", user_id="u"),
        act("view", "s2", "b", user_id="u"),
        act("view", "s3", "b", user_id="other"),
    ]
    model = build(events)
    model.apply(UserForget("u", ts=T0 + 1))
    assert model.users.get("u") is None
    assert sorted(model.sessions.slot_of) == ["s3"]
    assert model.stats() == {"items": 2, "sessions": 1, "users": 1}
    # The shopper comes back: nothing of the old profile remains.
    model.apply(act("view", "s4", "b", t=2, user_id="u"))
    user = model.users.get("u")
    assert user is not None
    assert model.users.profile(user)[0].tolist() == []


def test_sessions_expire_on_event_time_and_the_bound_holds() -> None:
    sessions = SessionsConfig(ttl_s=60.0, max_sessions=10)
    model = build([act("view", f"s{n}", "a", t=n) for n in range(15)], sessions=sessions)
    assert model.stats()["sessions"] == 10
    assert model.sessions.lookup("s14", model.clock) is not None
    assert model.sessions.lookup("s0", model.clock) is None
    model.apply(upsert("b", t=14 + 61))
    assert model.stats()["sessions"] == 0


def test_search_keeps_the_session_alive_without_items() -> None:
    sessions = SessionsConfig(ttl_s=60.0)
    model = build(
        [act("view", "s", "a"), act("search", "s", t=50, query="q"), upsert("b", t=100)],
        sessions=sessions,
    )
    slot = model.sessions.lookup("s", model.clock)
    assert slot is not None
    assert model.sessions.recent(slot)[0].tolist() == [0]


def test_non_finite_ts_falls_back_to_the_clock() -> None:
    model = build([act("view", "s", "a", t=10)])
    model.apply(Interaction("view", "s", ts=float("nan"), item_id="b"))
    assert model.clock == T0 + 10
    assert np.isfinite(model.popularity.scores).all()
    assert np.isfinite(model.similar.weights).all()


def test_same_events_give_the_same_state() -> None:
    rng = np.random.default_rng(3)
    kinds = ["view", "view", "view", "click", "add_to_cart", "purchase", "remove_from_cart"]
    events: list[Event] = [
        act(
            str(rng.choice(kinds)),
            f"s{n // 8}",
            f"i{rng.integers(40)}",
            t=float(n),
            user_id=f"u{n % 5}",
        )
        for n in range(400)
    ]
    first, second = build(events), build(events)
    for table in ("similar", "successors", "bought_together"):
        assert np.array_equal(getattr(first, table).ids, getattr(second, table).ids)
        assert np.array_equal(getattr(first, table).weights, getattr(second, table).weights)
    assert np.array_equal(first.popularity.scores, second.popularity.scores)
    assert first.users.profiles == second.users.profiles
    assert first.stats() == second.stats()


def mixed_stream(count: int, items: int, seed: int = 7) -> list[Event]:
    """Every kind of interaction, repeat purchases with lines, users and duplicate ids,
    over few items so that neighbour rows fill up and replace entries."""
    rng = np.random.default_rng(seed)
    kinds = ["view"] * 5 + ["click", "add_to_cart", "remove_from_cart", "purchase"]
    events: list[Event] = []
    for n in range(count):
        kind = str(rng.choice(kinds))
        fields: dict[str, Any] = {"user_id": f"u{n % 7}"} if n % 3 == 0 else {}
        if n % 11 == 0:
            fields["event_id"] = f"e{n % 50}"  # some repeat: duplicates
        t = float(n) * 20.0
        if kind == "purchase" and n % 2 == 0:
            lines = tuple(
                LineItem(f"i{rng.integers(items)}", int(rng.integers(1, 3)))
                for _ in range(int(rng.integers(1, 40)))
            )
            events.append(act("purchase", f"s{n // 9}", t=t, items=lines, **fields))
        else:
            events.append(act(kind, f"s{n // 9}", f"i{rng.integers(items)}", t=t, **fields))
    return events


def assert_same_state(first: Model, second: Model) -> None:
    for table in ("similar", "successors", "bought_together"):
        mine, theirs = getattr(first, table), getattr(second, table)
        assert np.array_equal(mine.ids, theirs.ids), table
        assert np.array_equal(mine.weights, theirs.weights), table  # bit for bit
        assert np.array_equal(mine.sizes, theirs.sizes), table
    assert np.array_equal(first.popularity.scores, second.popularity.scores)
    assert np.array_equal(first.catalog.counters, second.catalog.counters)
    for name in first.sessions.ARRAYS:
        assert np.array_equal(getattr(first.sessions, name), getattr(second.sessions, name))
    assert first.users.profiles == second.users.profiles
    assert (first.events, first.clock) == (second.events, second.clock)
    for name, array in first.session_index.to_arrays(len(first.items)).items():
        theirs = second.session_index.to_arrays(len(second.items))[name]
        assert np.array_equal(array, theirs), name
    for name, array in first.blend.to_arrays().items():
        assert np.array_equal(array, second.blend.to_arrays()[name]), name
    assert np.array_equal(first.prequential.to_array(), second.prequential.to_array())


@pytest.mark.parametrize("batch", [1, 7, 100, 3000])
@pytest.mark.parametrize("half_life_s", [30 * 86400.0, 600.0])  # 600 s: rebases mid-batch
def test_batches_give_exactly_the_state_of_one_event_at_a_time(
    batch: int, half_life_s: float
) -> None:
    config: dict[str, Any] = {
        "neighbors": 6,  # full rows early: replacements in every batch
        "similarity_half_life_s": half_life_s,
        "popularity_half_life_s": half_life_s,
    }
    events = mixed_stream(3000, items=60)
    # A small first capacity: the item arrays grow while pairs are queued.
    one_by_one = Model(ModelConfig(**config), SessionsConfig(), initial_capacity=4)
    for event in events:
        one_by_one.apply(event)
    batched = Model(ModelConfig(**config), SessionsConfig(), initial_capacity=4)
    applied = 0
    for offset, start in enumerate(range(0, len(events), batch)):
        applied += batched.apply_message(offset, events[start : start + batch])
    assert_same_state(batched, one_by_one)
    assert applied == one_by_one.events
    assert (one_by_one.similar.sizes == 6).sum() > 30  # the rows did fill up
    if half_life_s < 86400:
        assert one_by_one.similar.scale.t_ref > T0  # and rebased


def fail_on_boom(model: Model, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the item "boom" raise inside the model, as a bug would."""
    original = model._item

    def item(item_id: str) -> int:
        if item_id == "boom":
            raise ValueError("bug")
        return original(item_id)

    monkeypatch.setattr(model, "_item", item)


def test_apply_events_counts_applied_and_duplicate_events_by_type() -> None:
    model = Model(ModelConfig(), SessionsConfig())
    outcome = model.apply_events(
        [
            act("view", "s", "a", event_id="e1"),
            act("view", "s", "b", event_id="e1"),
            act("click", "s", "b"),
            upsert("c"),
        ]
    )
    assert outcome.applied == {"view": 1, "click": 1, "catalog.upsert": 1}
    assert outcome.duplicates == {"view": 1}
    assert outcome.count == 3 == model.events


def test_apply_events_hands_a_failing_event_over_and_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events = [act("view", "s", "a"), act("view", "s", "boom", t=1), act("view", "s", "b", t=2)]
    reference = build([events[0], events[2]])
    model = Model(ModelConfig(), SessionsConfig())
    fail_on_boom(model, monkeypatch)
    failures: list[tuple[int, str, str]] = []
    outcome = model.apply_events(
        events, lambda position, event, exc: failures.append((position, event.type, repr(exc)))
    )
    assert failures == [(1, "view", "ValueError('bug')")]
    assert outcome.applied == {"view": 2}
    # The failed event opened its session before it failed (as apply would have);
    # the neighbour pairs queued before and after it are all in.
    assert row(model, "similar", "a") == pytest.approx(row(reference, "similar", "a"))
    assert row(model, "similar", "b") == pytest.approx(row(reference, "similar", "b"))


def test_without_on_error_a_failing_event_stops_the_batch_after_applying_what_came_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = Model(ModelConfig(), SessionsConfig())
    fail_on_boom(model, monkeypatch)
    with pytest.raises(ValueError, match="bug"):
        model.apply_events(
            [act("view", "s", "a"), act("view", "s", "b", t=1), act("view", "s", "boom", t=2)]
        )
    assert model.events == 2
    assert row(model, "similar", "a") == pytest.approx({"b": 1.0})  # flushed, not lost


# -- event order ---------------------------------------------------------------------


def sessions_stream(seed: int = 11, repeats: bool = True) -> list[Event]:
    """Interleaved sessions (several live at once) over few items, in time order; with
    `repeats`, a session may come back to an item."""
    rng = np.random.default_rng(seed)
    events: list[Event] = []
    for n in range(60):
        start = 40.0 * n
        length = int(rng.integers(2, 7))
        items = rng.integers(15, size=length) if repeats else rng.permutation(15)[:length]
        for step, item in enumerate(items.tolist()):
            kind = "add_to_cart" if step == 3 else "view"
            events.append(act(kind, f"s{n}", f"i{item}", t=start + 30.0 * step))
    return sorted(events, key=lambda event: event.ts)


def tables(model: Model) -> dict[str, dict[tuple[str, str], float]]:
    """Every pair of every neighbour table, by item ids: order-free, for comparison."""
    found: dict[str, dict[tuple[str, str], float]] = {}
    for table in ("similar", "successors", "bought_together"):
        pairs = {}
        for item in model.items.ids:
            for partner, weight in row(model, table, item).items():
                pairs[(item, partner)] = weight
        found[table] = pairs
    return found


def sequences(model: Model) -> dict[str, list[str]]:
    ids = model.items.ids
    return {
        session: [ids[i] for i in model.sessions.sequence(slot)]
        for session, slot in model.sessions.slot_of.items()
    }


@pytest.mark.parametrize(
    ("within", "repeats"), [("in_order", True), ("in_order", False), ("reversed", False)]
)
def test_a_file_grouped_by_session_teaches_what_time_order_teaches(
    within: str, repeats: bool
) -> None:
    """Exactly, for sessions grouped in their own order; for sessions that arrive
    backwards too, unless they repeat an item (a pair's distance then counts the
    distinct items that were there when it was learnt)."""
    in_time = sessions_stream(repeats=repeats)
    by_session: dict[str, list[Event]] = {}
    for event in in_time:
        assert isinstance(event, Interaction)
        by_session.setdefault(event.session_id, []).append(event)
    grouped = [
        event
        for events in by_session.values()
        for event in (events if within == "in_order" else reversed(events))
    ]
    assert [e.ts for e in grouped] != sorted(e.ts for e in grouped)  # really out of order
    config = {"neighbors": 50}  # rows never fill: nothing is evicted in either order
    sorted_model, grouped_model = build(in_time, **config), build(grouped, **config)
    assert sequences(grouped_model) == sequences(sorted_model)
    mine, theirs = tables(grouped_model), tables(sorted_model)
    for table in mine:
        assert mine[table].keys() == theirs[table].keys(), table
        assert mine[table] == pytest.approx(theirs[table], rel=1e-9), table


def test_a_late_event_is_paired_with_the_items_around_it_by_ts() -> None:
    events = [act("view", "s", "a"), act("view", "s", "c", t=20), act("view", "s", "b", t=10)]
    model = build(events)
    assert sequences(model) == {"s": ["a", "b", "c"]}
    # b sits between a and c: a→b and b→c are next steps, a→c two steps as before.
    assert row(model, "successors", "a") == pytest.approx({"c": 1.0, "b": 1.0}, rel=1e-4)
    assert row(model, "successors", "b") == pytest.approx({"c": 1.0}, rel=1e-4)
    assert row(model, "similar", "c") == pytest.approx({"a": 0.5, "b": 0.5}, rel=1e-4)


def test_successors_count_a_revisited_item_at_each_of_its_distances() -> None:
    # a b a c, as sequential rules count it: c follows a at distances 1 and 3.
    model = build([act("view", "s", item, t=10 * n) for n, item in enumerate("abac")])
    assert row(model, "successors", "a") == pytest.approx({"b": 1.0, "c": 1.0 + 1 / 3}, rel=1e-4)
    assert row(model, "successors", "b") == pytest.approx({"a": 1.0, "c": 0.5}, rel=1e-4)


def test_sessions_arriving_a_day_late_are_learnt_and_served() -> None:
    late = [act("view", "old", "x", t=0), act("view", "old", "y", t=10)]
    model = build([act("view", "now", "z", t=86400.0), *late])
    assert row(model, "successors", "x") == pytest.approx(
        {"y": 2.0 ** (-(86400.0 - 10.0) / (30 * 86400.0))}
    )
    # The late session just arrived: it is live, and recommendable.
    assert model.sessions.lookup("old", model.clock) is not None


def test_an_event_for_a_session_past_its_lateness_bound_starts_it_afresh() -> None:
    sessions = SessionsConfig(ttl_s=100.0, allowed_lateness_s=50.0)
    events = [
        act("view", "s", "a", t=0),
        act("view", "other", "b", t=1000),  # the clock moves past 0 + 100 + 50
        act("view", "other", "b2", t=1001),
        act("view", "s", "c", t=10),  # within ttl_s of a, but s was reclaimed
    ]
    model = build(events, sessions)
    assert sequences(model)["s"] == ["c"]
    assert row(model, "successors", "a") == {}
