"""The demo shop's data: valid events, deterministic, and coherent enough to learn from."""

from collections import Counter
from functools import cache
from typing import Any

import orjson
import pytest

from recsrv import demo
from recsrv.config import ModelConfig, SessionsConfig
from recsrv.events import CatalogUpsert, Interaction, decode_body
from recsrv.model import Model
from recsrv.recommend import bought_together, recommend, similar

NOW = 1_750_000_000.0
# As `recsrv demo` loads it: the catalog first, stamped before the history begins.
CATALOG_TS = NOW - demo.HISTORY_DAYS * 86400 - 60


@cache
def loaded() -> Model:
    """The demo shop's model, shared by the tests that only read it."""
    return build()


def build() -> Model:
    events = demo.catalog_events(CATALOG_TS) + demo.history(NOW)
    decoded = decode_body(orjson.dumps(events), default_ts=NOW, max_elements=len(events))
    model = Model(ModelConfig(), SessionsConfig())
    for event in decoded.events:
        model.apply(event)
    return model


@cache
def categories() -> dict[str, str]:
    return {item["item_id"]: item["category"] for item in demo.catalog()}


def share_in(item_ids: list[str], wanted: frozenset[str]) -> float:
    return sum(categories()[i] in wanted for i in item_ids) / len(item_ids)


def test_catalog_is_a_plausible_small_shop() -> None:
    items = demo.catalog()
    assert 200 <= len(items) <= 400
    assert len({item["item_id"] for item in items}) == len(items)
    assert 8 <= len({item["category"] for item in items}) <= 12
    assert set(demo.categories()) == {item["category"] for item in items}
    for item in items:
        assert set(item) == {"item_id", "title", "category", "price", "in_stock", "url", "tags"}
        assert demo.TITLE_SEPARATOR in item["title"]
        assert item["url"] == f"/demo#item={item['item_id']}"
        assert item["price"] > 0
    sold_out = sum(not item["in_stock"] for item in items)
    assert 1 <= sold_out <= len(items) // 10


def test_catalog_events_decode_as_upserts() -> None:
    events = demo.catalog_events(CATALOG_TS)
    decoded = decode_body(orjson.dumps(events), default_ts=0.0)
    assert decoded.invalid == []
    assert len(decoded.events) == len(demo.catalog())
    first = decoded.events[0]
    assert isinstance(first, CatalogUpsert)
    assert first.ts == CATALOG_TS
    assert first.event_id == f"demo-catalog-{first.item.item_id}"
    assert first.item.title is not None and first.item.category is not None


def test_history_decodes_without_invalid_events() -> None:
    events = demo.history(NOW)
    decoded = decode_body(orjson.dumps(events), default_ts=0.0, max_elements=len(events))
    assert decoded.invalid == []
    assert len(decoded.events) == len(events)
    assert all(isinstance(event, Interaction) for event in decoded.events)


def test_history_shape() -> None:
    events = demo.history(NOW)
    sessions = {event["session_id"] for event in events}
    assert 2000 <= len(sessions) <= 4000
    assert [event["event_id"] for event in events] == [f"demo-h-{n}" for n in range(len(events))]
    types = Counter(event["type"] for event in events)
    assert {"view", "click", "add_to_cart", "purchase"} <= set(types)
    assert types["view"] > types["click"] > types["add_to_cart"] > types["purchase"]
    signed_in = {event["session_id"] for event in events if event.get("user_id")}
    assert 0 < len(signed_in) < len(sessions)


def test_history_times_lie_in_the_three_days_before_now_and_increase() -> None:
    events = demo.history(NOW)
    times = [event["ts"] for event in events]
    assert times == sorted(times)
    assert times[0] >= NOW - demo.HISTORY_DAYS * 86400
    assert times[-1] < NOW
    assert times[0] > CATALOG_TS
    # Spread over the whole span, not bunched up.
    assert times[-1] - times[0] > (demo.HISTORY_DAYS - 0.5) * 86400


def test_every_item_of_the_history_is_in_the_catalog() -> None:
    known = set(categories())
    mentioned: set[str] = set()
    for event in demo.history(NOW):
        if "item_id" in event:
            mentioned.add(event["item_id"])
        mentioned.update(line["item_id"] for line in event.get("items", ()))
    assert mentioned <= known
    assert len(mentioned) > 0.9 * len(known)  # nearly every product gets some attention


def test_history_is_deterministic_and_moves_with_now() -> None:
    assert demo.catalog() == demo.catalog()
    first, again = demo.history(NOW), demo.history(NOW)
    assert first == again
    later = demo.history(NOW + 100.0)
    assert [e["ts"] for e in later] == pytest.approx(
        [e["ts"] + 100.0 for e in first], rel=0, abs=0.002
    )
    assert [{**e, "ts": 0} for e in later] == [{**e, "ts": 0} for e in first]


def test_related_categories_go_both_ways() -> None:
    for category in demo.categories():
        related = demo.related_categories(category)
        assert category in related
        for other in related:
            assert category in demo.related_categories(other)


@pytest.mark.parametrize(
    ("kind", "category"),
    [("tent", "camping"), ("coffee-grinder", "coffee"), ("trail-running-shoe", "running")],
)
def test_similar_items_come_mostly_from_the_same_category(kind: str, category: str) -> None:
    model = loaded()
    items = [item["item_id"] for item in demo.catalog() if kind in item["tags"]]
    listed = [s.item_id for item in items for s in _similar(model, item)]
    assert share_in(listed, frozenset({category})) > 0.6
    assert share_in(listed, demo.related_categories(category)) > 0.9


def test_bought_together_finds_complementary_products() -> None:
    model = loaded()
    tent = "camping-tent-2-person"
    recs = bought_together(model, tent, k=10)
    assert recs is not None and len(recs.items) == 10
    listed = [s.item_id for s in recs.items]
    assert share_in(listed, demo.related_categories("camping")) > 0.7
    # Complementary: mostly other kinds of product than tents.
    assert sum("tent" in i for i in listed) < len(listed) / 2


def test_a_live_session_follows_what_it_browses() -> None:
    model = build()

    def browse(kind: str, item: str, dt: float) -> list[str]:
        model.apply(Interaction(kind, "live", ts=NOW + dt, item_id=item))
        recs = recommend(model, session_id="live", k=6)
        assert recs.strategy == "session"
        return [s.item_id for s in recs.items]

    after_tent = browse("view", "camping-tent-2-person", 1.0)
    assert share_in(after_tent, demo.related_categories("camping")) >= 5 / 6
    browse("click", "coffee-coffee-grinder-hand", 2.0)
    after_grinder = browse("view", "coffee-coffee-grinder-hand", 3.0)
    assert after_grinder != after_tent
    assert share_in(after_grinder, demo.related_categories("coffee")) >= 0.5


def _similar(model: Model, item_id: str) -> list[Any]:
    recs = similar(model, item_id, k=6)
    assert recs is not None
    return recs.items
