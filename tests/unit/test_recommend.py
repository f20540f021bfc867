from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from recsrv.config import ModelConfig, SessionsConfig
from recsrv.events import (
    CatalogDelete,
    Event,
    LineItem,
    UserForget,
)
from recsrv.model import Model
from recsrv.recommend import RecList, Scored, bought_together, popular, recommend, similar
from recsrv.scoring import components, cooccurrence
from tests.unit.builders import T0, act, upsert


def build(events: Sequence[Event], *, blend: str | None = "cooccurrence", **config: Any) -> Model:
    """The model after `events`. Its blend is pinned to the one component `blend` (None:
    left as learnt), so that a test of filtering and filling can state exact scores:
    a pinned list's scores are that component's, divided by its largest."""
    model = Model(ModelConfig(**config), SessionsConfig(ttl_s=600.0))
    for event in events:
        model.apply(event)
    if blend is not None:
        model.blend.weights = (np.array(list(components.COMPONENTS)) == blend).astype(np.float64)
    return model


def shop() -> list[Event]:
    """Ten items. One browsing session taught: after s come a, b, c, d, e (nearest first);
    f came too late to pair with s. p1, p2, p3 are viewed 3, 2 and 1 times on their own.
    The test session "t" has viewed s."""
    events: list[Event] = [
        upsert("a", category="shoes"),
        upsert("c", category="shoes"),
        upsert("b", category="hats"),
        upsert("p1", category="hats"),
    ]
    events += [act("view", "learn", item, t=n) for n, item in enumerate("sabcdef")]
    for n, item in enumerate(["p1", "p1", "p1", "p2", "p2", "p3"]):
        events.append(act("view", f"solo{n}", item, t=10))
    events.append(act("view", "t", "s", t=20))
    return events


def ids(recs: RecList) -> list[str]:
    return [scored.item_id for scored in recs.items]


def scores(recs: RecList) -> list[float]:
    return [scored.score for scored in recs.items]


def test_session_list_ranks_what_followed_the_viewed_item() -> None:
    recs = recommend(build(shop()), session_id="t", k=5)
    assert recs.strategy == "session"
    assert ids(recs) == ["a", "b", "c", "d", "e"]
    assert scores(recs) == pytest.approx([1.0, 0.7, 0.49, 0.343, 0.2401], rel=1e-4)
    assert {scored.reason for scored in recs.items} == {"similar_to:s"}


def test_short_list_is_filled_with_popular_items_to_exactly_k() -> None:
    recs = recommend(build(shop()), session_id="t", k=8)
    # p3 and f were viewed once each, p3 later: it has decayed less.
    assert ids(recs) == ["a", "b", "c", "d", "e", "p1", "p2", "p3"]
    assert [scored.reason for scored in recs.items][5:] == ["popular"] * 3
    values = scores(recs)
    assert values == sorted(values, reverse=True)
    assert values[5] < values[4]
    # Popular fill-ins keep their popularity ratios (3 : 2 : 1 views).
    assert values[5] / values[7] == pytest.approx(3.0, rel=1e-4)
    assert values[6] / values[7] == pytest.approx(2.0, rel=1e-4)


def test_k_items_whenever_the_shop_has_that_many_eligible() -> None:
    model = build(shop())
    assert "s" not in ids(recommend(model, session_id="t", k=9))  # all but the seen s
    everything = ids(recommend(model, session_id="t", k=100))
    assert len(everything) == 10
    assert everything[-1] == "s"  # seen: eligible, but only when nothing else is left
    assert len(recommend(model, k=100).items) == 10
    assert len(recommend(model, session_id="t", k=1).items) == 1


def test_context_item_is_never_listed() -> None:
    recs = recommend(build(shop()), session_id="t", item_id="a", k=20)
    assert recs.strategy == "session"
    assert "a" not in ids(recs)
    assert ids(recs)[0] == "b"  # a's own row (b, c, d …) joins s's row


def test_excluded_ids_are_never_listed() -> None:
    recs = recommend(build(shop()), session_id="t", k=20, exclude=["b", "p1", "unknown"])
    assert "b" not in ids(recs)
    assert "p1" not in ids(recs)
    assert len(recs.items) == 8


@pytest.mark.parametrize(
    "event",
    [
        upsert("a", t=30, in_stock=False),
        CatalogDelete("a", ts=T0 + 30),
    ],
    ids=["out_of_stock", "deleted"],
)
def test_unavailable_items_are_never_listed(event: Event) -> None:
    model = build([*shop(), event])
    assert "a" not in ids(recommend(model, session_id="t", k=20))
    assert "a" not in ids(recommend(model, k=20))
    assert "a" not in ids(popular(model, k=20))
    recs = similar(model, "s", k=20)
    assert recs is not None
    assert ids(recs)[0] == "b"


@pytest.mark.parametrize(
    "event",
    [
        act("add_to_cart", "t", "a", t=30),
        act("purchase", "t", "a", t=30),
        act("purchase", "t", items=(LineItem("a"),), t=30),
    ],
    ids=["in_cart", "purchased", "purchased_line"],
)
def test_cart_and_purchased_items_are_not_listed_unless_configured(event: Event) -> None:
    events = [*shop(), event]
    listed = ids(recommend(build(events), session_id="t", k=20))
    assert "a" not in listed
    allowed = build(events, exclude_cart_items=False, exclude_seen_items=False)
    assert "a" in ids(recommend(allowed, session_id="t", k=20))


def test_seen_items_come_only_after_every_unseen_one_unless_configured() -> None:
    events = [*shop(), act("view", "t", "b", t=30)]
    short = ids(recommend(build(events), session_id="t", k=8))
    assert "b" not in short
    assert "s" not in short
    listed = ids(recommend(build(events), session_id="t", k=20))
    assert len(listed) == 10
    assert set(listed[-2:]) == {"b", "s"}
    listed = ids(recommend(build(events, exclude_seen_items=False), session_id="t", k=20))
    assert "b" in listed
    assert "s" in listed


def test_removed_from_cart_item_is_back_when_seen_items_are_allowed() -> None:
    events = [*shop(), act("add_to_cart", "t", "a", t=30), act("remove_from_cart", "t", "a", t=31)]
    listed = ids(recommend(build(events, exclude_seen_items=False), session_id="t", k=20))
    assert "a" in listed


def test_category_filter_applies_to_personal_and_popular_items() -> None:
    model = build(shop())
    recs = recommend(model, session_id="t", k=5, category="hats")
    assert ids(recs) == ["b", "p1"]
    assert [scored.reason for scored in recs.items] == ["similar_to:s", "popular"]
    assert ids(recommend(model, session_id="t", k=5, category="shoes")) == ["a", "c"]
    assert recommend(model, session_id="t", k=5, category="nope").items == []


def test_newer_session_events_weigh_more() -> None:
    events: list[Event] = [
        act("view", "h1", "m"),
        act("view", "h1", "n", t=1),
        act("view", "h2", "o", t=2),
        act("view", "h2", "q", t=3),
        act("view", "t", "m", t=4),
        act("view", "t", "o", t=5),
    ]
    recs = recommend(build(events), session_id="t", k=2)
    assert ids(recs) == ["q", "n"]
    assert scores(recs) == pytest.approx([1.0, 0.8], rel=1e-4)
    assert [scored.reason for scored in recs.items] == ["similar_to:o", "similar_to:m"]


def test_a_removed_item_is_no_lead() -> None:
    events: list[Event] = [
        act("view", "h1", "m"),
        act("view", "h1", "n", t=1),
        act("add_to_cart", "t", "m", t=4),
        act("remove_from_cart", "t", "m", t=5),
    ]
    model = build(events)
    recs = recommend(model, session_id="t", k=1)
    assert [(s.item_id, s.reason) for s in recs.items] == [("n", "similar_to:m")]
    # Only the add_to_cart, one step back, leads to n: 0.8 before the blend divides by
    # the component's largest score.
    slot = model.sessions.lookup("t", model.clock)
    assert slot is not None
    found = cooccurrence.score(model, components.context(model, slot, -1))
    assert found.scores.tolist() == pytest.approx([0.8], rel=1e-4)


def test_cart_items_lead_to_what_was_bought_with_them() -> None:
    events: list[Event] = [
        act("add_to_cart", "h", "x"),
        act("add_to_cart", "h", "y", t=1),
        act("add_to_cart", "t", "x", t=5),
    ]
    model = build(events, bought_together_weight=2.0)
    recs = recommend(model, session_id="t", k=1)
    assert recs.items[0].item_id == "y"
    assert recs.items[0].reason == "bought_together:x"
    # similar_to:x gives 1.0, bought_together:x gives 2.0: the larger names the reason.
    slot = model.sessions.lookup("t", model.clock)
    assert slot is not None
    found = cooccurrence.score(model, components.context(model, slot, -1))
    assert found.scores.tolist() == pytest.approx([3.0], rel=1e-4)


def user_events() -> list[Event]:
    return [
        act("view", "h", "x"),
        act("view", "h", "y", t=1),
        act("add_to_cart", "old1", "w", t=2, user_id="u"),
        act("purchase", "old2", "x", t=3, user_id="u"),
        upsert("z", t=4),
    ]


def test_user_profile_gives_strategy_user_and_bought_before() -> None:
    # Two credits, no repeat: the repeat rate is the prior, (0 + 0.1 * 50) / (2 + 50),
    # so a history weight of 10.4 makes bought-before items weigh exactly their profile.
    model = build(user_events(), user_neighbors_weight=0.4, user_history_weight=10.4)
    recs = recommend(model, user_id="u", k=4)
    assert recs.strategy == "user"
    assert [(s.item_id, s.reason) for s in recs.items] == [
        ("x", "bought_before"),
        ("w", "bought_before"),
        ("y", "similar_to:x"),
        ("z", "popular"),
    ]
    # x weighs 1.0 (purchase), w 0.5 (cart); y is x's whole row, times user_neighbors_weight.
    assert scores(recs)[:3] == pytest.approx([1.0, 0.5, 0.4], rel=1e-4)


def test_bought_before_weighs_more_where_shoppers_buy_again() -> None:
    # Another shopper who buys the same items over and over raises the repeat rate.
    again = [
        *user_events(),
        *(act("purchase", f"r{n}", "v", t=6 + n, user_id="r") for n in range(100)),
    ]

    def bought_before_score(events: list[Event]) -> float:
        recs = recommend(build(events), user_id="u", k=10)
        return next(s.score for s in recs.items if s.item_id == "x")

    low, high = bought_before_score(user_events()), bought_before_score(again)
    # Views give no credit. Rates: (0 + 5) / (2 + 50) with two credits and no repeat;
    # (99 + 5) / (102 + 50) once r's 100 purchases of v add 99 repeats.
    assert low == pytest.approx(16.0 * 5 / 52, rel=1e-4)
    assert high == pytest.approx(16.0 * 104 / 152, rel=1e-4)


def test_in_a_session_past_items_weigh_what_the_blend_learnt() -> None:
    events = [*user_events(), act("view", "s", "q", t=5, user_id="u")]
    model = build(events, blend="repeat")
    recs = recommend(model, session_id="s", k=2)
    assert [(s.item_id, s.reason, s.score) for s in recs.items] == [
        ("x", "bought_before", 1.0),
        ("w", "bought_before", 0.5),
    ]


def test_in_a_session_the_profile_lends_no_neighbours() -> None:
    events = [*user_events(), act("view", "s", "z", t=5, user_id="u")]
    recs = recommend(build(events, user_neighbors_weight=0.4), session_id="s", k=10)
    assert recs.strategy == "session"
    assert "similar_to:x" not in [s.reason for s in recs.items]
    # Without the session, the same profile does lend x's neighbour y.
    by_user = recommend(build(events, user_neighbors_weight=0.4), user_id="u", k=10)
    assert ("y", "similar_to:x") in [(s.item_id, s.reason) for s in by_user.items]


def test_a_new_session_of_a_known_user_uses_the_profile() -> None:
    model = build(
        [*user_events(), act("search", "new", t=5, user_id="u", query="q")],
        user_neighbors_weight=0.4,
    )
    recs = recommend(model, session_id="new", k=2)
    assert recs.strategy == "user"
    assert ids(recs) == ["x", "w"]


def test_user_forget_drops_the_profile_from_lists() -> None:
    model = build([*user_events(), UserForget("u", ts=T0 + 10)])
    recs = recommend(model, user_id="u", k=2)
    assert recs.strategy == "popular"
    assert [s.reason for s in recs.items] == ["popular", "popular"]
    assert recommend(model, session_id="old1", k=2).strategy == "popular"


def test_item_context_without_session_gives_strategy_item() -> None:
    events = [*shop(), act("add_to_cart", "bt", "a", t=40), act("add_to_cart", "bt", "p3", t=41)]
    recs = recommend(build(events, bought_together_weight=2.0), item_id="a", k=3)
    assert recs.strategy == "item"
    # a's similar row: p3 4.0 (carted next), b 1.0, c 0.7 …; its bought-together row: p3.
    assert [(s.item_id, s.reason) for s in recs.items] == [
        ("p3", "bought_together:a"),
        ("b", "similar_to:a"),
        ("c", "similar_to:a"),
    ]
    assert scores(recs) == pytest.approx([1.0 + 2.0, 0.25, 0.175], rel=1e-4)


def test_strategy_precedence_and_unknown_ids() -> None:
    model = build([*shop(), *user_events()])
    assert recommend(model, session_id="t", user_id="u", item_id="a").strategy == "session"
    assert recommend(model, user_id="u", item_id="a").strategy == "item"
    assert recommend(model, user_id="u", item_id="nope").strategy == "user"
    unknown = recommend(model, session_id="nope", user_id="nobody", item_id="nothing", k=3)
    assert unknown.strategy == "popular"
    assert ids(unknown) == ids(popular(model, k=3)) == ["x", "w", "p1"]


def test_expired_session_counts_as_empty() -> None:
    model = build([*shop(), upsert("late", t=20 + 601)])
    assert recommend(model, session_id="t").strategy == "popular"


def test_popular_orders_by_decayed_popularity_and_filters_category() -> None:
    model = build(shop())
    recs = popular(model, k=3)
    assert recs.strategy == "popular"
    # s was viewed twice like p2, once more recently: it leads by a hair.
    assert ids(recs) == ["p1", "s", "p2"]
    assert scores(recs) == pytest.approx([3.0, 2.0, 2.0], rel=1e-4)
    assert {s.reason for s in recs.items} == {"popular"}
    assert ids(popular(model, k=5, category="hats")) == ["p1", "b"]
    assert popular(model, k=5, category="nope").items == []


def test_similar_lists_the_row_without_unavailable_items() -> None:
    model = build([*shop(), upsert("c", t=30, in_stock=False)])
    recs = similar(model, "s", k=3)
    assert recs is not None
    assert recs.strategy == "item"
    assert ids(recs) == ["a", "b", "d"]
    assert scores(recs) == pytest.approx([1.0, 0.7, 0.343], rel=1e-4)


def test_similar_fills_with_popular_items_of_the_same_category_only() -> None:
    events: list[Event] = [
        upsert("g1", category="shoes"),
        upsert("g2", category="shoes"),
        upsert("g3", category="shoes"),
        upsert("h1", category="hats"),
        upsert("h2", category="hats"),
        act("view", "s", "g1", t=1),
        act("view", "s", "h1", t=2),
        act("view", "x", "g3", t=3),
        act("view", "y", "h2", t=3),
    ]
    model = build(events)
    recs = similar(model, "g1", k=5)
    assert recs is not None
    assert [(s.item_id, s.reason) for s in recs.items] == [
        ("h1", "similar_to:g1"),
        ("g3", "same_category"),
        ("g2", "same_category"),
    ]
    assert scores(recs)[1] < scores(recs)[0]
    no_category = build([act("view", "s", "a"), act("view", "s", "b", t=1), act("view", "z", "c")])
    plain = similar(no_category, "a", k=5)
    assert plain is not None
    assert ids(plain) == ["b"]


def test_bought_together_lists_its_row_only() -> None:
    events = [
        *shop(),
        act("add_to_cart", "bt", "a", t=40),
        act("add_to_cart", "bt", "p3", t=41),
        act("view", "bt", "p2", t=42),
    ]
    model = build(events)
    recs = bought_together(model, "a", k=10)
    assert recs is not None
    assert recs.strategy == "item"
    assert recs.items == [Scored("p3", 1.0, "bought_together:a")]
    empty = bought_together(model, "s", k=10)
    assert empty is not None
    assert empty.items == []


def test_unknown_and_deleted_items_have_no_lists() -> None:
    model = build([*shop(), CatalogDelete("a", ts=T0 + 30)])
    assert similar(model, "nope") is None
    assert bought_together(model, "nope") is None
    assert similar(model, "a") is None
    assert bought_together(model, "a") is None
    assert recommend(model, item_id="a").strategy == "popular"


def test_same_events_give_the_same_lists() -> None:
    events = [*shop(), *user_events(), act("add_to_cart", "t", "c", t=30)]
    first, second = build(events), build(events)
    for request in (
        {"session_id": "t", "k": 7},
        {"user_id": "u", "k": 5},
        {"item_id": "s", "k": 10},
        {"k": 10},
        {"session_id": "t", "category": "hats"},
    ):
        assert recommend(first, **request) == recommend(second, **request)
    assert similar(first, "b") == similar(second, "b")
    assert popular(first, 4) == popular(second, 4)


# -- cold start ----------------------------------------------------------------------


def test_a_new_shop_with_a_catalog_and_no_history_lists_its_items() -> None:
    model = build([upsert(f"i{n}", t=n, category="tea") for n in range(5)])
    recs = recommend(model, session_id="first-visitor", k=3)
    assert recs.strategy == "popular"
    assert ids(recs) == ["i0", "i1", "i2"]  # no popularity yet: catalog order
    assert recommend(build([]), session_id="s", k=3).items == []


def test_a_new_item_appears_through_its_categorys_popularity() -> None:
    events: list[Event] = [
        upsert("old-shoe", category="shoes"),
        upsert("hat", category="hats"),
        upsert("new-shoe", t=1, category="shoes"),  # no events at all
        *(act("view", f"v{n}", "hat", t=10 + n) for n in range(3)),
        act("view", "v9", "old-shoe", t=20),
    ]
    model = build(events)
    assert ids(popular(model, k=5, category="shoes")) == ["old-shoe", "new-shoe"]
    # A shopper on the new shoe's page: its category before the busier hats.
    recs = recommend(model, item_id="new-shoe", k=3)
    assert [(s.item_id, s.reason) for s in recs.items] == [
        ("old-shoe", "same_category"),
        ("hat", "popular"),
    ]


def test_a_new_session_with_one_view_gets_that_items_neighbours_first() -> None:
    model = build([*shop(), act("view", "fresh", "a", t=100)])
    recs = recommend(model, session_id="fresh", k=4)
    assert recs.strategy == "session"
    assert recs.items[0].reason == "similar_to:a"
    assert "a" not in ids(recs)  # the item on screen is not offered again
    learnt = recommend(
        build([*shop(), act("view", "fresh", "a", t=100)], blend=None), session_id="fresh", k=4
    )
    assert learnt.items[0].reason in {"similar_to:a", "often_next_after:a", "similar_sessions"}
    assert len(recs.items) == 4
