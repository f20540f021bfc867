"""The event decoder: design section 3, rule by rule."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest

from recsrv.errors import EventError
from recsrv.events import (
    CatalogDelete,
    CatalogItem,
    CatalogUpsert,
    Decoded,
    Event,
    Interaction,
    Invalid,
    LineItem,
    UserForget,
    decode_body,
    encode_events,
    event_to_json,
    parse_element,
    parse_ts,
)

DEFAULT_TS = 1_700_000_000.0
TS_2024_05_01_10Z = 1_714_557_600.0  # 2024-05-01T10:00:00Z

VIEW = {"type": "view", "session_id": "s1", "item_id": "i1"}


def decode(value: Any, **kwargs: Any) -> Decoded:
    return decode_body(orjson.dumps(value), default_ts=DEFAULT_TS, **kwargs)


def parse(obj: Any) -> Event:
    return parse_element(obj, default_ts=DEFAULT_TS)


def error_of(obj: Any) -> tuple[str | None, str]:
    with pytest.raises(EventError) as info:
        parse(obj)
    return info.value.field, info.value.reason


def view(**extra: Any) -> dict[str, Any]:
    return {**VIEW, **extra}


def purchase_with_lines(lines: Any, **extra: Any) -> dict[str, Any]:
    return {"type": "purchase", "session_id": "s1", "items": lines, **extra}


def upsert(**item: Any) -> dict[str, Any]:
    return {"type": "catalog.upsert", "item": {"item_id": "sku-1", **item}}


# ------------------------------------------------------------------ bodies


def test_single_object_body() -> None:
    decoded = decode(view(user_id="u1", ts=1_700_000_123))
    assert decoded == Decoded(
        [Interaction("view", "s1", 1_700_000_123.0, user_id="u1", item_id="i1")], []
    )
    assert type(decoded.events[0].ts) is float


def test_array_body_keeps_order() -> None:
    decoded = decode([view(item_id="a"), {"type": "search", "session_id": "s2", "query": "red"}])
    assert decoded.invalid == []
    assert decoded.events == [
        Interaction("view", "s1", DEFAULT_TS, item_id="a"),
        Interaction("search", "s2", DEFAULT_TS, query="red"),
    ]


def test_empty_array_body() -> None:
    assert decode_body(b"[]", default_ts=DEFAULT_TS) == Decoded([], [])


def test_mixed_array_keeps_valid_and_records_invalid_with_index_and_field() -> None:
    no_session = {"type": "view", "item_id": "x"}
    bad_line = purchase_with_lines([{"item_id": "a"}, {"item_id": "b", "quantity": 0}])
    elements: list[Any] = [
        view(item_id="a"),
        no_session,
        view(item_id="b"),
        5,
        bad_line,
        {"type": "catalog.delete", "item_id": "c"},
    ]
    decoded = decode(elements)
    assert decoded.events == [
        Interaction("view", "s1", DEFAULT_TS, item_id="a"),
        Interaction("view", "s1", DEFAULT_TS, item_id="b"),
        CatalogDelete("c", DEFAULT_TS),
    ]
    assert decoded.invalid == [
        Invalid("invalid", 1, "session_id", "missing", orjson.dumps(no_session)),
        Invalid("invalid", 3, None, "must be a JSON object", b"5"),
        Invalid(
            "invalid",
            4,
            "items[1].quantity",
            "must be an integer from 1 to 10000",
            orjson.dumps(bad_line),
        ),
    ]


def test_invalid_single_object_has_index_zero() -> None:
    element = {"type": "view", "session_id": "s1"}
    assert decode(element) == Decoded(
        [], [Invalid("invalid", 0, "item_id", "missing", orjson.dumps(element))]
    )


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b'{"type": "view",}',
        b"NaN",
        b"\xff\xfe",
        b'{"type": "view", "session_id": "\xff", "item_id": "i"}',
        b"[" * 5000,
        b"[" * 5000 + b"]" * 5000,
        b'{"price": 1e400}',
    ],
)
def test_malformed_body(body: bytes) -> None:
    decoded = decode_body(body, default_ts=DEFAULT_TS)
    assert decoded.events == []
    [invalid] = decoded.invalid
    assert (invalid.code, invalid.index, invalid.field) == ("malformed", None, None)
    assert invalid.reason.startswith("not valid UTF-8 JSON: ")
    assert len(invalid.reason) > len("not valid UTF-8 JSON: ")
    assert invalid.element == body


@pytest.mark.parametrize("body", [b"5", b'"view"', b"null", b"true", b"1.5"])
def test_scalar_body_is_malformed(body: bytes) -> None:
    assert decode_body(body, default_ts=DEFAULT_TS) == Decoded(
        [],
        [
            Invalid(
                "malformed", None, None, "body must be a JSON object or an array of objects", body
            )
        ],
    )


def test_malformed_body_is_kept_only_up_to_64_kib() -> None:
    body = b'["' + b"x" * 100_000
    [invalid] = decode_body(body, default_ts=DEFAULT_TS).invalid
    assert invalid.code == "malformed"
    assert invalid.element == body[:65_536]


def test_array_longer_than_max_elements() -> None:
    body = orjson.dumps([VIEW] * 4)
    assert decode_body(body, default_ts=DEFAULT_TS, max_elements=3) == Decoded(
        [], [Invalid("too_many", None, None, "array has 4 elements, at most 3 allowed", body)]
    )
    assert len(decode_body(body, default_ts=DEFAULT_TS, max_elements=4).events) == 4


def test_default_max_elements_is_10000() -> None:
    assert len(decode([VIEW] * 10_000).events) == 10_000
    decoded = decode([VIEW] * 10_001)
    assert decoded.events == []
    assert [(i.code, i.reason) for i in decoded.invalid] == [
        ("too_many", "array has 10001 elements, at most 10000 allowed")
    ]


def nested_bytes(depth: int) -> bytes:
    return b"[" * depth + b"1" + b"]" * depth


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


def test_deep_unknown_field_is_ignored() -> None:
    body = b'{"type": "view", "session_id": "s1", "item_id": "i1", "x": ' + nested_bytes(500) + b"}"
    assert decode_body(body, default_ts=DEFAULT_TS) == Decoded(
        [Interaction("view", "s1", DEFAULT_TS, item_id="i1")], []
    )


def test_too_deep_invalid_element_is_clipped_when_reencoded() -> None:
    # orjson decodes 1024 levels but encodes only 254; the record must still be JSON
    body = b'[{"type": "view", "x": ' + nested_bytes(600) + b"}]"
    [invalid] = decode_body(body, default_ts=DEFAULT_TS).invalid
    assert (invalid.code, invalid.index, invalid.field) == ("invalid", 0, "session_id")
    element = orjson.loads(invalid.element)
    assert element["type"] == "view"
    depth, value = 0, element["x"]
    while isinstance(value, list):
        depth, value = depth + 1, value[0]
    assert value == "<nested too deep>"
    assert 200 < depth < 254


def test_too_deep_properties_are_invalid() -> None:
    field, reason = error_of(view(properties={"a": nested(300)}))
    assert field == "properties"
    assert reason.startswith("must be JSON-encodable")


def test_huge_string_is_refused_not_kept() -> None:
    huge = "x" * 1_000_000
    decoded = decode([view(session_id=huge), view()])
    assert decoded.events == [Interaction("view", "s1", DEFAULT_TS, item_id="i1")]
    [invalid] = decoded.invalid
    assert (invalid.index, invalid.field, invalid.reason) == (
        0,
        "session_id",
        "must be a string of 1-128 characters",
    )


# ------------------------------------------------------------------ type


@pytest.mark.parametrize(
    ("element", "reason"),
    [
        ({"session_id": "s", "item_id": "i"}, "missing"),
        ({"type": None, "session_id": "s", "item_id": "i"}, "missing"),
        ({"type": "foo", "session_id": "s", "item_id": "i"}, "unknown event type 'foo'"),
        ({"type": "VIEW", "session_id": "s", "item_id": "i"}, "unknown event type 'VIEW'"),
        ({"type": 5, "session_id": "s", "item_id": "i"}, "unknown event type 5"),
        ({"type": ["view"], "session_id": "s", "item_id": "i"}, "unknown event type ['view']"),
    ],
)
def test_type_required_and_known(element: dict[str, Any], reason: str) -> None:
    assert error_of(element) == ("type", reason)


def test_unknown_type_reason_is_short() -> None:
    field, reason = error_of({"type": "y" * 10_000})
    assert field == "type"
    assert reason.startswith("unknown event type 'yyy")
    assert len(reason) < 100


@pytest.mark.parametrize("element", [5, "view", None, [VIEW], True])
def test_non_object_element(element: Any) -> None:
    assert error_of(element) == (None, "must be a JSON object")


@pytest.mark.parametrize("etype", ["view", "click", "add_to_cart", "remove_from_cart", "purchase"])
def test_interaction_types_with_item_id(etype: str) -> None:
    assert parse({"type": etype, "session_id": "s", "item_id": "i"}) == Interaction(
        etype, "s", DEFAULT_TS, item_id="i"
    )


@pytest.mark.parametrize("etype", ["view", "click", "add_to_cart", "remove_from_cart", "purchase"])
def test_item_id_required_except_search(etype: str) -> None:
    assert error_of({"type": etype, "session_id": "s"}) == ("item_id", "missing")
    assert error_of({"type": etype, "session_id": "s", "item_id": None}) == ("item_id", "missing")


def test_search_needs_no_item_id() -> None:
    assert parse({"type": "search", "session_id": "s"}) == Interaction("search", "s", DEFAULT_TS)


def test_unknown_fields_are_ignored() -> None:
    element = view(color="red", nested={"a": [1, 2]}, session="x", itemId="y")
    assert parse(element) == Interaction("view", "s1", DEFAULT_TS, item_id="i1")


# ------------------------------------------------------------------ string fields

ID_REASON = "must be a string of 1-128 characters"


@pytest.mark.parametrize("name", ["session_id", "item_id", "user_id", "event_id"])
@pytest.mark.parametrize("value", ["", "x" * 129, "x" * 100_000, 5, True, ["a"], {"a": 1}])
def test_id_fields_must_be_strings_of_1_to_128(name: str, value: Any) -> None:
    assert error_of(view(**{name: value})) == (name, ID_REASON)


@pytest.mark.parametrize("name", ["session_id", "item_id", "user_id", "event_id"])
def test_id_fields_accept_1_and_128_characters(name: str) -> None:
    for value in ("x", "é" * 128):
        event = parse(view(**{name: value}))
        assert getattr(event, name) == value


def test_session_id_required() -> None:
    assert error_of({"type": "view", "item_id": "i"}) == ("session_id", "missing")
    assert error_of(view(session_id=None)) == ("session_id", "missing")


def test_optional_strings_null_is_absent() -> None:
    assert parse(view(user_id=None, event_id=None)) == Interaction(
        "view", "s1", DEFAULT_TS, item_id="i1"
    )


def test_query_kept_for_search() -> None:
    search = {"type": "search", "session_id": "s"}
    assert parse({**search, "query": "red shoes"}) == Interaction(
        "search", "s", DEFAULT_TS, query="red shoes"
    )
    assert parse({**search, "query": ""}) == Interaction("search", "s", DEFAULT_TS, query="")
    assert parse({**search, "query": "q" * 512}) == Interaction(
        "search", "s", DEFAULT_TS, query="q" * 512
    )


@pytest.mark.parametrize("query", ["q" * 513, 5, ["red"]])
def test_query_invalid_on_search(query: Any) -> None:
    element = {"type": "search", "session_id": "s", "query": query}
    assert error_of(element) == ("query", "must be a string of at most 512 characters")


@pytest.mark.parametrize("query", ["red", "q" * 600, 5])
def test_query_ignored_on_other_types(query: Any) -> None:
    assert parse(view(query=query)) == Interaction("view", "s1", DEFAULT_TS, item_id="i1")


# ------------------------------------------------------------------ numbers

QUANTITY_REASON = "must be an integer from 1 to 10000"
PRICE_REASON = "must be a finite number >= 0"


@pytest.mark.parametrize("quantity", [1, 2, 10_000])
def test_quantity_valid(quantity: int) -> None:
    event = parse(view(quantity=quantity))
    assert isinstance(event, Interaction)
    assert event.quantity == quantity


def test_quantity_defaults_to_1() -> None:
    assert parse(view()) == parse(view(quantity=None)) == parse(view(quantity=1))
    event = parse(view())
    assert isinstance(event, Interaction)
    assert event.quantity == 1


@pytest.mark.parametrize("quantity", [True, False, 1.0, 2.5, 0, -1, 10_001, "2", [1]])
def test_quantity_invalid(quantity: Any) -> None:
    assert error_of(view(quantity=quantity)) == ("quantity", QUANTITY_REASON)


@pytest.mark.parametrize(("price", "kept"), [(0, 0.0), (0.0, 0.0), (12.5, 12.5), (3, 3.0)])
def test_price_valid(price: float, kept: float) -> None:
    event = parse(view(price=price))
    assert isinstance(event, Interaction)
    assert event.price == kept
    assert type(event.price) is float


@pytest.mark.parametrize(
    "price", [-0.01, -1, True, False, "1", [1], math.inf, -math.inf, math.nan, 10**400]
)
def test_price_invalid(price: Any) -> None:
    assert error_of(view(price=price)) == ("price", PRICE_REASON)


def test_negative_price_refused_in_body() -> None:
    [invalid] = decode(view(price=-5)).invalid
    assert (invalid.code, invalid.index, invalid.field, invalid.reason) == (
        "invalid",
        0,
        "price",
        PRICE_REASON,
    )


# ------------------------------------------------------------------ purchase lines


def test_purchase_with_items_and_no_item_id() -> None:
    element = purchase_with_lines(
        [{"item_id": "a", "quantity": 2, "price": 9.5}, {"item_id": "b"}, {"item_id": "c", "x": 1}]
    )
    assert parse(element) == Interaction(
        "purchase",
        "s1",
        DEFAULT_TS,
        items=(LineItem("a", 2, 9.5), LineItem("b"), LineItem("c")),
    )


def test_purchase_with_items_and_item_id() -> None:
    event = parse(purchase_with_lines([{"item_id": "a"}], item_id="z"))
    assert isinstance(event, Interaction)
    assert event.item_ids() == ("z", "a")


def test_purchase_accepts_500_lines() -> None:
    event = parse(purchase_with_lines([{"item_id": f"i{n}"} for n in range(500)]))
    assert isinstance(event, Interaction)
    assert len(event.items) == 500
    assert event.items[499] == LineItem("i499")


@pytest.mark.parametrize("lines", [[{"item_id": "i"}] * 501, [], {"item_id": "a"}, "a"])
def test_purchase_items_must_be_1_to_500_lines(lines: Any) -> None:
    assert error_of(purchase_with_lines(lines)) == (
        "items",
        "must be a non-empty array of at most 500 lines",
    )


def test_purchase_items_null_means_item_id_required() -> None:
    assert error_of(purchase_with_lines(None)) == ("item_id", "missing")


@pytest.mark.parametrize("etype", ["view", "click", "add_to_cart", "remove_from_cart", "search"])
def test_items_only_allowed_on_purchase(etype: str) -> None:
    element = {"type": etype, "session_id": "s", "item_id": "i", "items": [{"item_id": "a"}]}
    assert error_of(element) == ("items", "items is only allowed on purchase")


@pytest.mark.parametrize(
    ("lines", "field", "reason"),
    [
        ([{"item_id": "a"}, "b"], "items[1]", "must be an object"),
        ([{"item_id": "a"}, {}], "items[1].item_id", "missing"),
        ([{"item_id": ""}], "items[0].item_id", ID_REASON),
        ([{"item_id": "x" * 129}], "items[0].item_id", ID_REASON),
        ([{"item_id": "a"}] * 3 + [{"item_id": "b", "quantity": 1.5}], "items[3].quantity", None),
        ([{"item_id": "a", "quantity": True}], "items[0].quantity", QUANTITY_REASON),
        ([{"item_id": "a", "quantity": 10_001}], "items[0].quantity", QUANTITY_REASON),
        (
            [{"item_id": "a"}, {"item_id": "b"}, {"item_id": "c", "price": -1}],
            "items[2].price",
            None,
        ),
    ],
)
def test_purchase_line_errors_name_the_line(lines: Any, field: str, reason: str | None) -> None:
    expected = reason or (QUANTITY_REASON if field.endswith("quantity") else PRICE_REASON)
    assert error_of(purchase_with_lines(lines)) == (field, expected)


# ------------------------------------------------------------------ ts


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, 0.0),
        (1_700_000_000, 1_700_000_000.0),
        (1_700_000_000.25, 1_700_000_000.25),
        (99_999_999_999, 99_999_999_999.0),
        ("2024-05-01T10:00:00Z", TS_2024_05_01_10Z),
        ("2024-05-01t10:00:00z", TS_2024_05_01_10Z),
        ("2024-05-01T12:00:00+02:00", TS_2024_05_01_10Z),
        ("2024-05-01 05:00:00-05:00", TS_2024_05_01_10Z),
        ("2024-05-01T10:00:00.250Z", TS_2024_05_01_10Z + 0.25),
        ("2024-05-01T10:00:00.123456789+00:00", TS_2024_05_01_10Z + 0.123456),
        ("1970-01-01T00:00:00Z", 0.0),
    ],
)
def test_parse_ts_valid(value: object, expected: float) -> None:
    ts = parse_ts(value)
    assert ts == expected
    assert type(ts) is float


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("2024-05-01T10:00:00", "RFC 3339 date-time must carry a UTC offset or 'Z'"),
        ("2024-05-01T10:00:00.500", "RFC 3339 date-time must carry a UTC offset or 'Z'"),
        ("2024-05-01T10:00:00+0200", "RFC 3339 date-time must carry a UTC offset or 'Z'"),
        ("2024-05-01", "must be epoch seconds or an RFC 3339 date-time string"),
        ("2024-05-01T10:00Z", "must be epoch seconds or an RFC 3339 date-time string"),
        ("1714557600", "must be epoch seconds or an RFC 3339 date-time string"),
        ("yesterday at noon, roughly", "must be epoch seconds or an RFC 3339 date-time string"),
        (
            "2024-05-01T10:00:00Z" + " " * 100,
            "must be epoch seconds or an RFC 3339 date-time string",
        ),
        (True, "must be epoch seconds or an RFC 3339 date-time string"),
        ([1], "must be epoch seconds or an RFC 3339 date-time string"),
        ({}, "must be epoch seconds or an RFC 3339 date-time string"),
    ],
)
def test_parse_ts_refused(value: object, reason: str) -> None:
    with pytest.raises(EventError) as info:
        parse_ts(value)
    assert (info.value.field, info.value.reason) == ("ts", reason)


@pytest.mark.parametrize(
    "value", ["2024-13-01T10:00:00Z", "2024-05-01T25:00:00Z", "2024-05-01T10:00:00+25:00"]
)
def test_parse_ts_impossible_date(value: str) -> None:
    with pytest.raises(EventError) as info:
        parse_ts(value)
    assert info.value.field == "ts"
    assert info.value.reason.startswith("not a valid RFC 3339 date-time: ")


@pytest.mark.parametrize(
    "value", [-1, -0.5, 1e11, 1e12, 10**30, math.inf, math.nan, "9999-12-31T23:59:59Z"]
)
def test_parse_ts_out_of_range(value: object) -> None:
    with pytest.raises(EventError) as info:
        parse_ts(value)
    assert info.value.field == "ts"
    assert info.value.reason == "must be from 0 to 1e11 epoch seconds (1970-01-01 to year 5138)"


def test_ts_in_element() -> None:
    assert parse(view(ts="2024-05-01T12:00:00+02:00")).ts == TS_2024_05_01_10Z
    assert parse(view(ts=1_714_557_600)).ts == TS_2024_05_01_10Z


@pytest.mark.parametrize("element", [view(), view(ts=None)])
def test_ts_defaults_when_missing(element: dict[str, Any]) -> None:
    assert parse_element(element, default_ts=123.5).ts == 123.5


def test_invalid_ts_in_element_names_ts() -> None:
    field, reason = error_of(view(ts="2024-05-01T10:00:00"))
    assert (field, reason) == ("ts", "RFC 3339 date-time must carry a UTC offset or 'Z'")


# ------------------------------------------------------------------ properties


def test_properties_kept() -> None:
    props = {"source": "home", "pos": 3, "ab": {"variant": "b"}}
    event = parse(view(properties=props))
    assert isinstance(event, Interaction)
    assert event.properties == props


def test_properties_of_exactly_4096_bytes_accepted() -> None:
    props = {"k": "x" * 4088}  # {"k":"…"} is 8 bytes around the value
    assert len(orjson.dumps(props)) == 4096
    event = parse(view(properties=props))
    assert isinstance(event, Interaction)
    assert event.properties == props


@pytest.mark.parametrize(
    ("props", "size"),
    [({"k": "x" * 4089}, 4097), ({"k": "é" * 2045}, 4098)],  # bytes, not characters
)
def test_properties_over_4096_bytes_refused(props: dict[str, str], size: int) -> None:
    assert error_of(view(properties=props)) == (
        "properties",
        f"properties must encode to at most 4096 bytes (got {size})",
    )


@pytest.mark.parametrize("props", [[1], "a", 5, True])
def test_properties_must_be_object(props: Any) -> None:
    assert error_of(view(properties=props)) == ("properties", "must be an object")


# ------------------------------------------------------------------ catalog and privacy


def test_catalog_upsert_defaults() -> None:
    assert parse(upsert()) == CatalogUpsert(CatalogItem("sku-1"), DEFAULT_TS)
    event = parse(upsert())
    assert isinstance(event, CatalogUpsert)
    assert event.item.in_stock is True
    assert event.item.tags == ()
    assert event.type == "catalog.upsert"


def test_catalog_upsert_all_fields() -> None:
    element = upsert(
        title="Red shoe",
        category="shoes",
        price=49,
        in_stock=False,
        url="https://shop.example/p/1",
        image_url="https://shop.example/i/1.jpg",
        tags=["red", "leather"],
        properties={"brand": "x"},
        unknown="ignored",
    )
    element.update(ts="2024-05-01T10:00:00Z", event_id="e-1")
    assert parse(element) == CatalogUpsert(
        CatalogItem(
            "sku-1",
            title="Red shoe",
            category="shoes",
            price=49.0,
            in_stock=False,
            url="https://shop.example/p/1",
            image_url="https://shop.example/i/1.jpg",
            tags=("red", "leather"),
            properties={"brand": "x"},
        ),
        TS_2024_05_01_10Z,
        event_id="e-1",
    )


def test_catalog_item_null_fields_count_as_absent() -> None:
    names = ["title", "category", "price", "in_stock", "url", "image_url", "tags", "properties"]
    element = upsert(**dict.fromkeys(names))
    assert parse(element) == CatalogUpsert(CatalogItem("sku-1"), DEFAULT_TS)


def test_catalog_item_limits_accepted() -> None:
    element = upsert(
        title="t" * 512,
        category="c" * 128,
        url="u" * 2048,
        image_url="",
        tags=["g" * 64] * 50,
    )
    event = parse(element)
    assert isinstance(event, CatalogUpsert)
    assert event.item.title == "t" * 512
    assert event.item.category == "c" * 128
    assert event.item.url == "u" * 2048
    assert event.item.image_url == ""
    assert event.item.tags == ("g" * 64,) * 50


@pytest.mark.parametrize(
    ("element", "field", "reason"),
    [
        ({"type": "catalog.upsert"}, "item", "missing"),
        ({"type": "catalog.upsert", "item": None}, "item", "missing"),
        ({"type": "catalog.upsert", "item": ["sku-1"]}, "item", "must be an object"),
        ({"type": "catalog.upsert", "item": {}}, "item.item_id", "missing"),
        ({"type": "catalog.upsert", "item_id": "a", "item": {}}, "item.item_id", "missing"),
        (upsert(item_id=""), "item.item_id", ID_REASON),
        (upsert(title="t" * 513), "item.title", "must be a string of at most 512 characters"),
        (upsert(category=""), "item.category", ID_REASON),
        (upsert(category="c" * 129), "item.category", ID_REASON),
        (upsert(price=-1), "item.price", PRICE_REASON),
        (upsert(price="9.99"), "item.price", PRICE_REASON),
        (upsert(in_stock="yes"), "item.in_stock", "must be true or false"),
        (upsert(in_stock=1), "item.in_stock", "must be true or false"),
        (upsert(url="u" * 2049), "item.url", "must be a string of at most 2048 characters"),
        (upsert(image_url=5), "item.image_url", "must be a string of at most 2048 characters"),
        (upsert(tags="red"), "item.tags", "must be an array of at most 50 strings"),
        (upsert(tags=["t"] * 51), "item.tags", "must be an array of at most 50 strings"),
        (upsert(tags=["a", "b", ""]), "item.tags[2]", "must be a string of 1-64 characters"),
        (upsert(tags=["a", "t" * 65]), "item.tags[1]", "must be a string of 1-64 characters"),
        (upsert(tags=[5]), "item.tags[0]", "must be a string of 1-64 characters"),
        (upsert(properties=[1]), "item.properties", "must be an object"),
        (
            upsert(properties={"k": "x" * 5000}),
            "item.properties",
            "properties must encode to at most 4096 bytes (got 5008)",
        ),
        ({**upsert(), "ts": "2024-05-01T10:00:00"}, "ts", None),
        ({**upsert(), "event_id": ""}, "event_id", ID_REASON),
    ],
)
def test_catalog_upsert_invalid(element: Any, field: str, reason: str | None) -> None:
    reason = reason or "RFC 3339 date-time must carry a UTC offset or 'Z'"
    assert error_of(element) == (field, reason)


@pytest.mark.parametrize(
    "element",
    [
        upsert(),
        {"type": "catalog.delete", "item_id": "sku-1"},
        {"type": "user.forget", "user_id": "u1"},
    ],
)
@pytest.mark.parametrize("event_id", ["", "e" * 129, 5])
def test_event_id_checked_on_catalog_and_forget(element: dict[str, Any], event_id: Any) -> None:
    assert error_of({**element, "event_id": event_id}) == ("event_id", ID_REASON)
    assert parse({**element, "event_id": "e" * 128}).event_id == "e" * 128


def test_catalog_delete() -> None:
    element = {"type": "catalog.delete", "item_id": "sku-1", "ts": 5, "event_id": "e"}
    assert parse(element) == CatalogDelete("sku-1", 5.0, event_id="e")
    assert parse({"type": "catalog.delete", "item_id": "sku-1"}) == CatalogDelete(
        "sku-1", DEFAULT_TS
    )


@pytest.mark.parametrize(
    ("element", "field", "reason"),
    [
        ({"type": "catalog.delete"}, "item_id", "missing"),
        ({"type": "catalog.delete", "item_id": ""}, "item_id", ID_REASON),
        ({"type": "catalog.delete", "item_id": 7}, "item_id", ID_REASON),
        ({"type": "catalog.delete", "item_id": "a", "ts": -1}, "ts", None),
        ({"type": "user.forget"}, "user_id", "missing"),
        ({"type": "user.forget", "user_id": None}, "user_id", "missing"),
        ({"type": "user.forget", "user_id": "u" * 129}, "user_id", ID_REASON),
        ({"type": "user.forget", "user_id": "u", "event_id": 1}, "event_id", ID_REASON),
    ],
)
def test_delete_and_forget_invalid(element: Any, field: str, reason: str | None) -> None:
    reason = reason or "must be from 0 to 1e11 epoch seconds (1970-01-01 to year 5138)"
    assert error_of(element) == (field, reason)


def test_user_forget() -> None:
    element = {"type": "user.forget", "user_id": "u1", "ts": "2024-05-01T10:00:00Z"}
    assert parse(element) == UserForget("u1", TS_2024_05_01_10Z)
    assert parse({"type": "user.forget", "user_id": "u1", "event_id": "e9"}) == UserForget(
        "u1", DEFAULT_TS, event_id="e9"
    )


# ------------------------------------------------------------------ canonical JSON

ROUND_TRIP_EVENTS: list[Event] = [
    Interaction("view", "s", 1.0, item_id="i"),
    Interaction(
        "add_to_cart",
        "s",
        1_714_557_600.5,
        user_id="u",
        item_id="i",
        quantity=3,
        price=9.99,
        event_id="e",
        properties={"a": [1, {"b": None}]},
    ),
    Interaction("purchase", "s", 2.0, items=(LineItem("a", 2, 1.5), LineItem("b"))),
    Interaction("purchase", "s", 2.0, item_id="z", items=(LineItem("a", price=0.0),)),
    Interaction("search", "s", 3.0, query="red shoes"),
    Interaction("search", "s", 3.0, query="", properties={}),
    CatalogUpsert(CatalogItem("sku"), 4.0),
    CatalogUpsert(
        CatalogItem(
            "sku",
            title="T",
            category="c",
            price=0.0,
            in_stock=False,
            url="https://x",
            image_url="",
            tags=("a", "b"),
            properties={"k": "v"},
        ),
        4.0,
        event_id="e",
    ),
    CatalogDelete("sku", 5.0),
    CatalogDelete("sku", 5.0, event_id="e"),
    UserForget("u", 6.0),
    UserForget("u", 6.0, event_id="e"),
]


@pytest.mark.parametrize("event", ROUND_TRIP_EVENTS)
def test_event_to_json_round_trips(event: Event) -> None:
    data = event_to_json(event)
    assert type(data["ts"]) is float
    assert data["ts"] == event.ts
    assert data["type"] == event.type
    assert parse_element(orjson.loads(orjson.dumps(data)), default_ts=0) == event
    assert parse_element(data, default_ts=0) == event


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (
            Interaction("view", "s", 1, item_id="i"),
            {"type": "view", "session_id": "s", "ts": 1.0, "item_id": "i"},
        ),
        (
            Interaction("purchase", "s", 2.0, items=(LineItem("a", 2, 1.5), LineItem("b"))),
            {
                "type": "purchase",
                "session_id": "s",
                "ts": 2.0,
                "items": [{"item_id": "a", "quantity": 2, "price": 1.5}, {"item_id": "b"}],
            },
        ),
        (
            CatalogUpsert(CatalogItem("sku", in_stock=False, tags=("a",)), 4.0),
            {
                "type": "catalog.upsert",
                "item": {"item_id": "sku", "in_stock": False, "tags": ["a"]},
                "ts": 4.0,
            },
        ),
        (
            CatalogDelete("sku", 5.0, event_id="e"),
            {"type": "catalog.delete", "item_id": "sku", "ts": 5.0, "event_id": "e"},
        ),
        (UserForget("u", 6), {"type": "user.forget", "user_id": "u", "ts": 6.0}),
    ],
)
def test_event_to_json_is_minimal(event: Event, expected: dict[str, Any]) -> None:
    data = event_to_json(event)
    assert data == expected
    assert type(data["ts"]) is float


def test_encode_events_decodes_back() -> None:
    body = encode_events(ROUND_TRIP_EVENTS)
    assert orjson.loads(body) == [event_to_json(e) for e in ROUND_TRIP_EVENTS]
    assert decode_body(body, default_ts=0) == Decoded(ROUND_TRIP_EVENTS, [])
    assert encode_events([]) == b"[]"


# ------------------------------------------------------------------ found by fuzzing


@pytest.mark.parametrize("depth", [1000, 1020])
def test_type_nested_a_thousand_levels_is_invalid_not_a_crash(depth: int) -> None:
    # The reason once came from repr(), which recursed through the nesting and raised
    # RecursionError out of the decoder (orjson decodes up to 1024 levels).
    body = b'[{"type":' + b"[" * depth + b"1" + b"]" * depth + b"}, " + orjson.dumps(VIEW) + b"]"
    decoded = decode_body(body, default_ts=DEFAULT_TS)
    assert decoded.events == [Interaction("view", "s1", DEFAULT_TS, item_id="i1")]
    [invalid] = decoded.invalid
    assert (invalid.index, invalid.field) == (0, "type")
    assert invalid.reason == "unknown event type [[[[...]]]]"


def test_unknown_type_reason_of_an_unprintably_long_integer() -> None:
    # Python refuses str() of an integer with more than 4300 digits (ValueError).
    assert error_of({"type": 10**5000}) == ("type", "unknown event type <integer of 16610 bits>")


def test_unknown_type_reason_of_a_big_container_is_short() -> None:
    field, reason = error_of({"type": {"k": list(range(10_000))}})
    assert (field, reason) == ("type", "unknown event type {'k': [0, 1, 2, 3, ...]}")
