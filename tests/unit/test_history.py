"""Reading historical event files: lines, JSONL, CSV mappings, event ids, batches."""

from __future__ import annotations

import io
from typing import Any

import orjson
import pytest

from recsrv.events import Interaction, decode_body
from recsrv.history import (
    CSV,
    EVENT_ID_PREFIX,
    JSONL,
    Bad,
    Batch,
    CsvMapping,
    CsvParser,
    Line,
    Parsed,
    Valid,
    batches,
    csv_ts,
    detect_format,
    line_event_id,
    parse_jsonl,
    split_lines,
)

TS_2024_05_01_10Z = 1_714_557_600.0  # 2024-05-01T10:00:00Z
VIEW = {"type": "view", "session_id": "s1", "item_id": "i1", "ts": 1_700_000_000}


def lines_of(data: bytes, *, quoted: bool = False) -> list[Line]:
    return list(split_lines(io.BytesIO(data), quoted=quoted))


def line(number: int, text: str | bytes) -> Line:
    raw = text.encode() if isinstance(text, str) else text
    return Line(number, number, raw, 0)


def jsonl(number: int, obj: Any) -> Parsed | None:
    return parse_jsonl(line(number, orjson.dumps(obj)))


def valid(parsed: Parsed | None) -> dict[str, Any]:
    assert isinstance(parsed, Valid), parsed
    return parsed.event


def bad(parsed: Parsed | None) -> Bad:
    assert isinstance(parsed, Bad), parsed
    return parsed


def csv_parser(header: str, *columns: str, defaults: tuple[str, ...] = ()) -> CsvParser:
    mapping = CsvMapping.from_options(list(columns), list(defaults))
    return mapping.parser(line(1, header))


# ------------------------------------------------------------------ lines and offsets


def test_lines_are_numbered_from_one_with_the_offset_just_after_each() -> None:
    data = b'{"a": 1}\n\r\n{"b": 2}\r\nlast without newline'
    got = lines_of(data)
    assert [(x.number, x.last, x.text) for x in got] == [
        (1, 1, b'{"a": 1}'),
        (2, 2, b""),
        (3, 3, b'{"b": 2}'),
        (4, 4, b"last without newline"),
    ]
    assert [data[: x.end][-1:] for x in got[:3]] == [b"\n", b"\n", b"\n"]
    assert got[-1].end == len(data)


def test_a_resume_numbers_lines_from_where_it_starts() -> None:
    data = b"one\ntwo\nthree\n"
    first = lines_of(data)[0]
    rest = list(split_lines(io.BytesIO(data[first.end :]), number=2, offset=first.end))
    assert [(x.number, x.text, x.end) for x in rest] == [(2, b"two", 8), (3, b"three", 14)]


def test_a_utf8_byte_order_mark_is_dropped_but_counted_in_offsets() -> None:
    data = b"\xef\xbb\xbftype,session_id\nview,s\n"
    got = lines_of(data)
    assert got[0].text == b"type,session_id"
    assert got[0].end == len(b"\xef\xbb\xbftype,session_id\n")


def test_a_quoted_csv_field_may_span_lines_and_is_numbered_by_its_first() -> None:
    data = b'a,b\n1,"two\nlines"\n3,4\n'
    got = lines_of(data, quoted=True)
    assert [(x.number, x.last, x.text) for x in got] == [
        (1, 1, b"a,b"),
        (2, 3, b'1,"two\nlines"'),
        (4, 4, b"3,4"),
    ]
    # the same bytes as JSONL lines: quotes mean nothing
    assert len(lines_of(data)) == 4


# ------------------------------------------------------------------ JSONL


def test_a_valid_jsonl_line_becomes_its_canonical_event_with_an_event_id() -> None:
    event = valid(jsonl(7, {**VIEW, "unknown": "dropped", "ts": "2024-05-01T10:00:00Z"}))
    event_id = event.pop("event_id")
    assert event == {"type": "view", "session_id": "s1", "item_id": "i1", "ts": TS_2024_05_01_10Z}
    assert event_id.startswith(EVENT_ID_PREFIX)
    assert len(event_id) <= 128


def test_an_event_id_in_the_line_is_kept() -> None:
    assert valid(jsonl(1, {**VIEW, "event_id": "shop-42"}))["event_id"] == "shop-42"


def test_an_event_without_ts_is_published_without_one() -> None:
    event = valid(jsonl(1, {"type": "search", "session_id": "s", "query": "tea"}))
    assert "ts" not in event
    assert event["query"] == "tea"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (b'{"type": "view", ', "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'"view"', "must be a JSON object"),
        (b'{"type": "view", "item_id": "i"}', "session_id: missing"),
        (b'{"type": "teleport", "session_id": "s"}', "type: unknown event type"),
        (b'{"type": "view", "session_id": "s", "item_id": "i", "ts": -5}', "ts: must be from"),
        (b'{"type": "view", "session_id": "s", "item_id": "i", "quantity": 0}', "quantity"),
        (b'{"type": "view", "session_id": "\xff"}', "not valid JSON"),
    ],
)
def test_an_invalid_jsonl_line_is_reported_with_its_number_and_reason(
    text: bytes, reason: str
) -> None:
    record = bad(parse_jsonl(line(12, text)))
    assert record.number == 12
    assert reason in record.reason


def test_blank_lines_are_skipped() -> None:
    assert parse_jsonl(line(3, b"")) is None
    assert parse_jsonl(line(3, b"  \t ")) is None


# ------------------------------------------------------------------ event ids


def test_the_same_line_always_gets_the_same_id_and_other_lines_other_ids() -> None:
    first = valid(jsonl(5, VIEW))["event_id"]
    assert valid(jsonl(5, VIEW))["event_id"] == first
    # the same event on another line is another event (a shopper may view twice)
    assert valid(jsonl(6, VIEW))["event_id"] != first
    assert valid(jsonl(5, {**VIEW, "item_id": "i2"}))["event_id"] != first
    # key order and unknown fields do not change what the event is
    reordered = dict(reversed(list({**VIEW, "extra": 1}.items())))
    assert valid(jsonl(5, reordered))["event_id"] == first


def test_line_event_id_does_not_depend_on_key_order() -> None:
    assert line_event_id(1, {"a": 1, "b": 2}) == line_event_id(1, {"b": 2, "a": 1})
    assert line_event_id(1, {"a": 1}) != line_event_id(2, {"a": 1})


# ------------------------------------------------------------------ CSV


def test_csv_columns_are_mapped_to_event_fields_and_converted() -> None:
    parse = csv_parser(
        "product_id,order_id,customer,when,qty,amount,kind",
        "item_id=product_id",
        "session_id=order_id",
        "user_id=customer",
        "ts=when",
        "quantity=qty",
        "price=amount",
        "type=kind",
    )
    event = valid(parse(line(2, "p1,o9,u3,2024-05-01T10:00:00Z,2,9.5,add_to_cart")))
    event.pop("event_id")
    assert event == {
        "type": "add_to_cart",
        "session_id": "o9",
        "user_id": "u3",
        "item_id": "p1",
        "ts": TS_2024_05_01_10Z,
        "quantity": 2,
        "price": 9.5,
    }


def test_header_columns_named_like_fields_need_no_option_and_defaults_fill_the_rest() -> None:
    parse = csv_parser("session_id,item_id,user_id,type", defaults=("type=view",))
    event = valid(parse(line(2, "s1,i1,,")))
    assert (event["type"], event["session_id"], event["item_id"]) == ("view", "s1", "i1")
    assert "user_id" not in event  # an empty cell is an absent field
    assert valid(parse(line(3, "s1,i1,u1,click")))["type"] == "click"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1714557600", TS_2024_05_01_10Z),
        ("1714557600.25", TS_2024_05_01_10Z + 0.25),
        ("2024-05-01T10:00:00Z", TS_2024_05_01_10Z),
        ("2024-05-01T12:00:00+02:00", TS_2024_05_01_10Z),
        ("2024-05-01 10:00:00", TS_2024_05_01_10Z),  # no offset: UTC
        ("2024-05-01T10:00", TS_2024_05_01_10Z),
        ("2024-05-01", TS_2024_05_01_10Z - 10 * 3600),
    ],
)
def test_csv_timestamps_are_epoch_seconds_or_iso_8601(text: str, expected: float) -> None:
    assert csv_ts(text) == expected


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ("s1,i1,yesterday,1", "ts: must be epoch seconds or an ISO 8601 date-time"),
        ("s1,i1,1e12,1", "ts: must be from"),
        ("s1,i1,nan,1", "ts: must be from"),
        ("s1,i1,1714557600,2.5", "quantity: must be an integer"),
        ("s1,i1,1714557600,many", "quantity: must be an integer"),
        ("s1,i1,1714557600", "has 3 fields, the header has 4"),
        ("s1,i1,1714557600,1,extra", "has 5 fields, the header has 4"),
        (",i1,1714557600,1", "session_id: missing"),
        ('s1,"i1,1714557600,1', "not a valid CSV record"),
    ],
)
def test_an_unmappable_csv_row_is_reported_with_its_line_number(row: str, reason: str) -> None:
    parse = csv_parser("session_id,item_id,ts,quantity", defaults=("type=view",))
    record = bad(parse(line(41, row)))
    assert record.number == 41
    assert reason in record.reason


def test_a_csv_row_that_is_not_utf8_is_reported() -> None:
    parse = csv_parser("session_id,item_id", defaults=("type=view",))
    assert bad(parse(line(2, b"s\xff,i"))).reason == "not valid UTF-8"


def test_csv_options_are_checked() -> None:
    with pytest.raises(ValueError, match="expected FIELD=VALUE"):
        CsvMapping.from_options(["item_id"], [])
    with pytest.raises(ValueError, match="'sku' is not one of"):
        CsvMapping.from_options(["sku=product"], [])
    with pytest.raises(ValueError, match="given twice"):
        CsvMapping.from_options([], ["type=view", "type=click"])
    with pytest.raises(ValueError, match="one character"):
        CsvMapping.from_options([], [], delimiter=";;")


def test_a_mapping_refuses_a_header_without_its_columns_or_without_a_type() -> None:
    with pytest.raises(ValueError, match="no column 'product_id' in sku, session_id"):
        csv_parser("sku,session_id", "item_id=product_id", defaults=("type=view",))
    with pytest.raises(ValueError, match="no column gives the event type"):
        csv_parser("item_id,session_id")


def test_a_tab_delimited_mapping_reads_tabs() -> None:
    mapping = CsvMapping.from_options(["item_id=sku"], ["type=view"], delimiter="\t")
    parse = mapping.parser(line(1, "sku\tsession_id"))
    assert valid(parse(line(2, "a,b\ts")))["item_id"] == "a,b"


def test_the_format_comes_from_the_option_or_the_extension() -> None:
    assert detect_format("x/events.jsonl", None) == JSONL
    assert detect_format("orders.CSV", None) == CSV
    assert detect_format("orders.tsv", None) == CSV
    assert detect_format("events.log", None) == JSONL
    assert detect_format("orders.csv", JSONL) == JSONL


# ------------------------------------------------------------------ batches


def file_batches(data: bytes, max_events: int, max_bytes: int = 1 << 20) -> list[Batch]:
    return list(batches(lines_of(data), parse_jsonl, max_events=max_events, max_bytes=max_bytes))


def view_line(n: int) -> bytes:
    return orjson.dumps({**VIEW, "item_id": f"i{n}"}) + b"\n"


def test_batches_cover_every_line_in_order_and_name_the_invalid_ones() -> None:
    data = view_line(1) + b"\n" + b"oops\n" + view_line(2) + view_line(3) + b'{"type":1}\n'
    got = file_batches(data, max_events=2)
    assert [(b.first_line, b.last_line, len(b.events)) for b in got] == [(1, 4, 2), (5, 6, 1)]
    assert [(x.number, x.reason[:14]) for b in got for x in b.bad] == [
        (3, "not valid JSON"),
        (6, "type: unknown "),
    ]
    assert got[0].end == len(view_line(1) + b"\n" + b"oops\n" + view_line(2))
    assert got[-1].end == len(data)


def test_a_batch_body_is_what_the_server_decodes_into_the_same_events() -> None:
    data = b"".join(view_line(n) for n in range(5))
    (batch,) = file_batches(data, max_events=10)
    decoded = decode_body(batch.body(), default_ts=0.0)
    assert decoded.invalid == []
    assert all(isinstance(e, Interaction) for e in decoded.events)
    assert [getattr(e, "item_id", None) for e in decoded.events] == [f"i{n}" for n in range(5)]
    ids = [e.event_id for e in decoded.events]
    assert len(set(ids)) == 5
    assert all(isinstance(i, str) and i.startswith(EVENT_ID_PREFIX) for i in ids)


def test_batches_close_at_the_byte_limit_and_on_many_invalid_lines() -> None:
    data = b"".join(view_line(n) for n in range(10))
    by_size = file_batches(data, max_events=100, max_bytes=3 * len(view_line(0)))
    assert all(1 <= len(b.events) <= 3 for b in by_size)
    assert sum(len(b.events) for b in by_size) == 10
    only_bad = file_batches(b"x\n" * 7, max_events=3)
    assert [(b.first_line, b.last_line, len(b.bad), b.events) for b in only_bad] == [
        (1, 3, 3, []),
        (4, 6, 3, []),
        (7, 7, 1, []),
    ]
