"""The event decoder under arbitrary input (hypothesis).

Whatever arrives, as bytes or as decoded JSON, the decoder answers with events or
with invalid records that say why; it never raises anything else. Every event it
accepts is a valid one: within the limits of design section 3, and encoded and
decoded again it comes back equal.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, timedelta, timezone
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recsrv.errors import EventError
from recsrv.events import (
    EVENT_TYPES,
    INTERACTION_TYPES,
    MAX_ID_CHARS,
    MAX_LINE_ITEMS,
    MAX_PROPERTIES_BYTES,
    MAX_QUANTITY,
    MAX_QUERY_CHARS,
    MAX_RAW_BYTES,
    MAX_TAGS,
    MAX_TS,
    CatalogDelete,
    CatalogUpsert,
    Decoded,
    Event,
    Interaction,
    UserForget,
    decode_body,
    encode_events,
    parse_element,
)

DEFAULT_TS = 1_700_000_000.0
# Bounded: the whole module runs in a few seconds on a loaded 2-core machine. Hypothesis
# raises the recursion limit while it runs a test, so a RecursionError in the decoder
# would not show up here: test_events.py checks deep nesting without it.
FUZZ = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# ------------------------------------------------------------------ strategies

FIELD_NAMES = (
    "type",
    "session_id",
    "user_id",
    "item_id",
    "items",
    "quantity",
    "price",
    "query",
    "ts",
    "event_id",
    "properties",
    "item",
    "title",
    "category",
    "in_stock",
    "url",
    "image_url",
    "tags",
)

# Integers at the edges of what JSON decoders and the limits care about.
EDGE_INTEGERS = st.sampled_from(
    [0, 1, -1, MAX_QUANTITY, MAX_QUANTITY + 1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1]
)
EDGE_INTEGERS |= st.sampled_from([2**64, -(2**63) - 1, 10**30, -(10**30), int(MAX_TS)])


def strings(max_size: int = 20) -> st.SearchStrategy[str]:
    """Unicode text, with lengths near the 128- and 512-character limits now and then."""
    near_limits = st.sampled_from([0, 1, 127, 128, 129, 511, 512, 513]).map(lambda n: "é" * n)
    return st.text(max_size=max_size) | near_limits | st.sampled_from(EVENT_TYPES)


def timestamps() -> st.SearchStrategy[Any]:
    """Epoch numbers and RFC 3339-looking strings, good and bad."""
    offsets = st.integers(-24 * 60 + 1, 24 * 60 - 1).map(lambda m: timezone(timedelta(minutes=m)))
    aware = st.datetimes(timezones=offsets | st.just(UTC))
    rfc3339 = st.tuples(aware, st.sampled_from(["T", "t", " "])).map(
        lambda pair: pair[0].isoformat(sep=pair[1])
    )
    return st.one_of(
        st.floats(allow_nan=False, allow_infinity=False),
        st.integers(-(2**63), 2**63 - 1),
        rfc3339,
        rfc3339.map(lambda text: text[:-6] + "Z" if text[-6] in "+-" else text),
        rfc3339.map(lambda text: text[: len(text) // 2]),
        st.from_regex(r"\A\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?\Z"),
        strings(),
    )


def json_values(*, python_only: bool) -> st.SearchStrategy[Any]:
    """Any JSON value; `python_only` adds what only Python callers can pass (NaN, inf,
    integers JSON parsers turn into floats)."""
    floats = st.floats(allow_nan=python_only, allow_infinity=python_only)
    integers = st.integers() | EDGE_INTEGERS if python_only else st.integers(-(2**63), 2**64 - 1)
    scalars = st.none() | st.booleans() | integers | floats | strings()
    return st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(
                st.sampled_from(FIELD_NAMES) | st.text(max_size=8), children, max_size=4
            )
        ),
        max_leaves=12,
    )


def field_value(name: str, anything: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A value for one field: mostly of the right shape, sometimes anything at all."""
    shaped: dict[str, st.SearchStrategy[Any]] = {
        "type": st.sampled_from(EVENT_TYPES),
        "ts": timestamps(),
        "quantity": st.integers(-5, MAX_QUANTITY + 5),
        "price": st.floats(allow_nan=False) | st.integers(-5, 10**6),
        "in_stock": st.booleans(),
        "tags": st.lists(strings(), max_size=3) | st.just(["t"] * (MAX_TAGS + 1)),
        "properties": st.dictionaries(st.text(max_size=10), anything, max_size=5),
    }
    if name == "items":
        return st.lists(line_items(anything), min_size=0, max_size=4) | anything
    if name == "item":
        return catalog_items(anything) | anything
    return shaped.get(name, strings()) | anything


def line_items(anything: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.fixed_dictionaries(
        {"item_id": strings()},
        optional={"quantity": field_value("quantity", anything), "price": anything},
    )


def catalog_items(anything: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    names = ("title", "category", "price", "in_stock", "url", "image_url", "tags", "properties")
    optional = {name: field_value(name, anything) for name in names}
    return st.fixed_dictionaries({"item_id": strings()}, optional=optional)


def event_like(*, python_only: bool) -> st.SearchStrategy[dict[str, Any]]:
    """Objects that look like events: a known type, then any subset of the fields,
    each well-shaped or not."""
    anything = json_values(python_only=python_only)
    optional = {name: field_value(name, anything) for name in FIELD_NAMES if name != "type"}
    return st.fixed_dictionaries({"type": field_value("type", anything)}, optional=optional)


def elements(*, python_only: bool) -> st.SearchStrategy[Any]:
    return event_like(python_only=python_only) | json_values(python_only=python_only)


# ------------------------------------------------------------------ the properties


def assert_valid_event(event: Event) -> None:
    """The limits of design section 3 hold for an accepted event."""
    assert isinstance(event, Interaction | CatalogUpsert | CatalogDelete | UserForget)
    assert event.type in EVENT_TYPES
    assert type(event.ts) is float and 0 <= event.ts < MAX_TS
    assert event.event_id is None or 1 <= len(event.event_id) <= MAX_ID_CHARS
    if isinstance(event, Interaction):
        assert event.type in INTERACTION_TYPES
        assert 1 <= len(event.session_id) <= MAX_ID_CHARS
        assert event.user_id is None or 1 <= len(event.user_id) <= MAX_ID_CHARS
        assert event.item_id is not None or event.items or event.type == "search"
        assert not event.items or event.type == "purchase"
        assert len(event.items) <= MAX_LINE_ITEMS
        for line in (event, *event.items):
            assert type(line.quantity) is int and 1 <= line.quantity <= MAX_QUANTITY
            assert line.price is None or (math.isfinite(line.price) and line.price >= 0)
        assert event.query is None or len(event.query) <= MAX_QUERY_CHARS
        assert event.query is None or event.type == "search"
        assert_properties(event.properties)
    elif isinstance(event, CatalogUpsert):
        assert 1 <= len(event.item.item_id) <= MAX_ID_CHARS
        assert event.item.price is None or math.isfinite(event.item.price)
        assert len(event.item.tags) <= MAX_TAGS
        assert_properties(event.item.properties)
    elif isinstance(event, CatalogDelete):
        assert 1 <= len(event.item_id) <= MAX_ID_CHARS
    else:
        assert 1 <= len(event.user_id) <= MAX_ID_CHARS


def assert_properties(properties: dict[str, Any] | None) -> None:
    if properties:
        assert len(orjson.dumps(properties)) <= MAX_PROPERTIES_BYTES


def assert_well_formed(decoded: Decoded, body: bytes) -> None:
    assert isinstance(decoded, Decoded)
    for event in decoded.events:
        assert_valid_event(event)
    for invalid in decoded.invalid:
        assert invalid.code in ("malformed", "too_many", "invalid")
        assert isinstance(invalid.reason, str) and invalid.reason.strip()
        assert isinstance(invalid.element, bytes)
        if invalid.index is None:
            # The body failed as a whole: nothing else was decoded from it.
            assert decoded.events == [] and len(decoded.invalid) == 1
            assert invalid.element == body[:MAX_RAW_BYTES]
        else:
            assert invalid.code == "invalid"
            assert invalid.field is None or invalid.field.strip()
            orjson.loads(invalid.element)  # the offending element, as JSON


def assert_counts_add_up(decoded: Decoded, body: bytes) -> None:
    """A list body of n elements gives n results, in element order, none lost."""
    data = orjson.loads(body)
    if isinstance(data, dict):
        data = [data]
    assert isinstance(data, list)
    assert len(decoded.events) + len(decoded.invalid) == len(data)
    indexes = [invalid.index for invalid in decoded.invalid]
    assert indexes == sorted(set(indexes))
    assert all(index is not None and 0 <= index < len(data) for index in indexes)
    for invalid in decoded.invalid:
        assert invalid.index is not None
        assert orjson.loads(invalid.element) == data[invalid.index]


def assert_round_trips(decoded: Decoded) -> None:
    """What was accepted encodes to JSON that decodes to the same events."""
    again = decode_body(encode_events(decoded.events), default_ts=0.0)
    assert again == Decoded(decoded.events, [])


@settings(FUZZ, max_examples=500)
@given(st.binary(max_size=512))
def test_any_bytes_give_events_or_reasons(body: bytes) -> None:
    decoded = decode_body(body, default_ts=DEFAULT_TS)
    assert_well_formed(decoded, body)


@FUZZ
@given(st.lists(elements(python_only=False), max_size=4) | elements(python_only=False))
def test_any_json_body_gives_one_result_per_element(value: Any) -> None:
    body = orjson.dumps(value)
    decoded = decode_body(body, default_ts=DEFAULT_TS)
    assert_well_formed(decoded, body)
    if isinstance(value, list | dict):
        assert_counts_add_up(decoded, body)
        assert_round_trips(decoded)
    else:
        assert decoded.events == [] and decoded.invalid[0].code == "malformed"


@FUZZ
@given(st.lists(elements(python_only=True), max_size=4))
def test_json_with_big_numbers_nan_and_infinity(value: list[Any]) -> None:
    # Python's encoder writes what orjson refuses to (NaN, Infinity, integers past 64
    # bits): such a body is malformed as a whole, or decoded like any other.
    body = json.dumps(value, allow_nan=True).encode()
    decoded = decode_body(body, default_ts=DEFAULT_TS)
    assert_well_formed(decoded, body)
    if decoded.invalid[:1] and decoded.invalid[0].index is None:
        assert decoded.invalid[0].code == "malformed"
    else:
        assert_counts_add_up(decoded, body)
        assert_round_trips(decoded)


@FUZZ
@given(elements(python_only=True))
def test_parse_element_returns_an_event_or_raises_event_error(value: Any) -> None:
    try:
        event = parse_element(value, default_ts=DEFAULT_TS)
    except EventError as exc:
        assert exc.reason.strip()
        assert exc.field is None or exc.field.strip()
        return
    assert_valid_event(event)


@FUZZ
@given(
    st.sampled_from(FIELD_NAMES),
    st.integers(200, 1030) | st.sampled_from([254, 255, 1000, 1020, 1021]),
    st.sampled_from([b'"x"', b"1", b"null", b"{}"]),
    st.booleans(),
)
def test_deep_nesting_in_any_field(name: str, depth: int, leaf: bytes, in_object: bool) -> None:
    # orjson decodes up to 1024 levels but encodes only 254: the body is built as
    # text, and a field may hold the deep value whatever its name (type included).
    deep = b"[" * depth + leaf + b"]" * depth
    if in_object:
        deep = b'{"k":' + deep + b"}"
    body = b'[{"type":"view","session_id":"s","item_id":"i","%s":%s}]' % (name.encode(), deep)
    decoded = decode_body(body, default_ts=DEFAULT_TS)
    assert_well_formed(decoded, body)
    assert len(decoded.events) + len(decoded.invalid) == 1
