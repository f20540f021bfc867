"""Historical events in files: JSONL or CSV lines → events ready to publish, in batches.

Pure code: no I/O. `recsrv replay` (recsrv/replay.py) reads the file, feeds its lines
here, and publishes what comes out.

- JSONL: one event object per line, in the format of design section 3, validated by
  `recsrv.events.parse_element` exactly as the consumer would.
- CSV: the first record is the header. `--column FIELD=COLUMN` maps an event field to
  a header column; a header column already named like an event field (`type`,
  `session_id`, `user_id`, `item_id`, `ts`, `quantity`, `price`, `query`,
  `event_id`) is used for it without an option. `--default FIELD=VALUE` gives a
  constant for a field that has no column, or whose cell is empty. Empty cells are
  absent fields. `ts` cells are epoch seconds or ISO 8601 (a date-time without an
  offset is taken as UTC); `quantity` is an integer, `price` a number. A record may
  span several physical lines inside a quoted field (RFC 4180); it is numbered by
  its first line.
- Blank lines are skipped; every other line becomes exactly one event or one `Bad`
  record naming its line number and the reason.

What is published is the event's canonical JSON form (`events.event_to_json`: unknown
fields dropped, `ts` as epoch seconds), except that an event without `ts` stays
without one: the server then stamps it with the message's timestamp, as the contract
says. Every published event carries an `event_id`: its own, or `replay-` + a hash of
its line number and its canonical form. The same line of the same file (read with the
same options) therefore always gets the same id, so publishing it twice, say on a
resume, is ignored by the server's de-duplication.
"""

from __future__ import annotations

import csv
import hashlib
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from recsrv.errors import EventError
from recsrv.events import event_to_json, parse_element, parse_ts

JSONL: Final = "jsonl"
CSV: Final = "csv"
FORMATS: Final = (JSONL, CSV)
FIELDS: Final = (
    "type",
    "session_id",
    "user_id",
    "item_id",
    "ts",
    "quantity",
    "price",
    "query",
    "event_id",
)
EVENT_ID_PREFIX: Final = "replay-"
MAX_RECORD_LINES: Final = 100
"""A CSV record whose quoted field is still open after this many lines is cut there."""

_BOM: Final = b"\xef\xbb\xbf"
_MAX_REASON_CHARS: Final = 300


@dataclass(frozen=True, slots=True)
class Line:
    """One record of the file: a line, or for CSV the lines of one record.

    number and last: its first and last physical line (1-based); text: its bytes
    without the final line break; end: the byte offset just after it.
    """

    number: int
    last: int
    text: bytes
    end: int


@dataclass(frozen=True, slots=True)
class Bad:
    """A line that could not become an event."""

    number: int
    reason: str


@dataclass(frozen=True, slots=True)
class Valid:
    """A line's event in the JSON form to publish, with its event_id."""

    number: int
    event: dict[str, Any]


Parsed = Valid | Bad
LineParser = Callable[[Line], Parsed | None]
"""Turns a line into an event, a Bad record, or None for a blank line."""


@dataclass(slots=True)
class Batch:
    """Consecutive lines: the events of one message and the invalid lines among them.

    Lines first_line..last_line are covered (blank and invalid ones included), so
    once its message is confirmed a replay can resume after last_line, at byte `end`.
    """

    first_line: int
    last_line: int
    end: int
    events: list[bytes] = field(default_factory=list)
    bad: list[Bad] = field(default_factory=list)
    size: int = 0

    def body(self) -> bytes:
        """The message body: a JSON array of the events."""
        return b"[" + b",".join(self.events) + b"]"


def detect_format(path: str, given: str | None) -> str:
    """The format given, else by extension: .csv and .tsv are CSV, anything else JSONL."""
    if given is not None:
        return given
    return CSV if path.lower().endswith((".csv", ".tsv")) else JSONL


def split_lines(
    raw_lines: Iterable[bytes], *, number: int = 1, offset: int = 0, quoted: bool = False
) -> Iterator[Line]:
    """Number the lines of a file read in binary, from line `number` at byte `offset`.

    With quoted=True (CSV), a line that leaves a quoted field open (an odd number of
    '"' so far) continues on the next one, up to MAX_RECORD_LINES lines.
    """
    parts: list[bytes] = []
    first = number
    quotes = 0
    for raw in raw_lines:
        if offset == 0 and raw.startswith(_BOM):
            raw, offset = raw[len(_BOM) :], len(_BOM)
        offset += len(raw)
        parts.append(raw)
        if quoted:
            quotes += raw.count(b'"')
            if quotes % 2 and len(parts) < MAX_RECORD_LINES:
                number += 1
                continue
        yield Line(first, number, _strip_newline(b"".join(parts)), offset)
        parts, quotes = [], 0
        number += 1
        first = number
    if parts:  # a quoted field still open at the end of the file
        yield Line(first, number - 1, _strip_newline(b"".join(parts)), offset)


def batches(
    lines: Iterable[Line], parse: LineParser, *, max_events: int, max_bytes: int
) -> Iterator[Batch]:
    """Group parsed lines, in order, into batches of at most max_events events.

    A batch is also closed once its events reach max_bytes, or once it holds
    max_events invalid lines (so a file of bad lines never piles up in memory).
    """
    batch: Batch | None = None
    for line in lines:
        if batch is None:
            batch = Batch(first_line=line.number, last_line=line.last, end=line.end)
        batch.last_line, batch.end = line.last, line.end
        parsed = parse(line)
        if isinstance(parsed, Valid):
            encoded = orjson.dumps(parsed.event)
            batch.events.append(encoded)
            batch.size += len(encoded) + 1
        elif isinstance(parsed, Bad):
            batch.bad.append(parsed)
        if (
            len(batch.events) >= max_events
            or batch.size >= max_bytes
            or len(batch.bad) >= max_events
        ):
            yield batch
            batch = None
    if batch is not None:
        yield batch


# ------------------------------------------------------------------------- JSONL


def parse_jsonl(line: Line) -> Parsed | None:
    """One JSONL line: a JSON object in the event format."""
    if not line.text.strip():
        return None
    try:
        obj = orjson.loads(line.text)
    except orjson.JSONDecodeError as exc:
        return Bad(line.number, _short(f"not valid JSON: {exc.msg} at column {exc.colno}"))
    return _validated(line.number, obj)


# ------------------------------------------------------------------------- CSV


@dataclass(frozen=True)
class CsvMapping:
    """Where each event field comes from: a header column, a constant, or both."""

    columns: Mapping[str, str]
    """event field → CSV header column"""
    defaults: Mapping[str, str]
    """event field → constant text, used when the field has no column or its cell is empty"""
    delimiter: str = ","

    @classmethod
    def from_options(
        cls, columns: Sequence[str], defaults: Sequence[str], delimiter: str = ","
    ) -> CsvMapping:
        """From `FIELD=COLUMN` and `FIELD=VALUE` option texts; ValueError if malformed."""
        if len(delimiter) != 1:
            raise ValueError(f"--delimiter must be one character, got {delimiter!r}")
        return cls(
            _field_pairs("--column", columns, empty_value=False),
            _field_pairs("--default", defaults, empty_value=True),
            delimiter,
        )

    def describe(self) -> dict[str, Any]:
        """The mapping as plain data (a resume checks it has not changed)."""
        return {
            "columns": dict(sorted(self.columns.items())),
            "defaults": dict(sorted(self.defaults.items())),
            "delimiter": self.delimiter,
        }

    def parser(self, header: Line) -> CsvParser:
        """A parser for the records under this header; ValueError if they cannot map."""
        try:
            names = _csv_row(header.text, self.delimiter)
        except (UnicodeDecodeError, csv.Error) as exc:
            raise ValueError(f"cannot read the CSV header (line {header.number}): {exc}") from None
        names = [name.strip() for name in names]
        positions: dict[str, int] = {}
        for name in FIELDS:  # header columns named like event fields map to themselves
            if name in names:
                positions[name] = names.index(name)
        for name, column in self.columns.items():
            if column not in names:
                shown = ", ".join(names)
                raise ValueError(f"--column {name}={column}: no column {column!r} in {shown}")
            positions[name] = names.index(column)
        if "type" not in positions and "type" not in self.defaults:
            raise ValueError(
                "no column gives the event type: add --column type=COLUMN or --default type=view"
            )
        return CsvParser(positions, dict(self.defaults), len(names), self.delimiter)


class CsvParser:
    """Turns CSV records into events with a fixed column mapping."""

    def __init__(
        self, positions: Mapping[str, int], defaults: Mapping[str, str], width: int, delimiter: str
    ) -> None:
        self.positions = dict(positions)
        self.defaults = dict(defaults)
        self.width = width
        self.delimiter = delimiter

    def __call__(self, line: Line) -> Parsed | None:
        if not line.text.strip():
            return None
        try:
            row = _csv_row(line.text, self.delimiter)
        except UnicodeDecodeError:
            return Bad(line.number, "not valid UTF-8")
        except csv.Error as exc:
            return Bad(line.number, f"not a valid CSV record: {exc}")
        if len(row) != self.width:
            return Bad(line.number, f"has {len(row)} fields, the header has {self.width}")
        obj: dict[str, Any] = {}
        try:
            for name in FIELDS:
                position = self.positions.get(name)
                text = row[position] if position is not None else ""
                if text == "":
                    text = self.defaults.get(name, "")
                if text != "":
                    obj[name] = _csv_value(name, text)
        except EventError as exc:
            return Bad(line.number, str(exc))
        return _validated(line.number, obj)


def csv_ts(text: str) -> float:
    """A CSV timestamp: epoch seconds, or ISO 8601 (UTC when it carries no offset)."""
    try:
        return parse_ts(float(text))
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise EventError("ts", "must be epoch seconds or an ISO 8601 date-time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return parse_ts(moment.timestamp())


def line_event_id(number: int, event: Mapping[str, Any]) -> str:
    """The id of the event on line `number`: the same line always gets the same id."""
    digest = hashlib.blake2b(b"%d\n" % number, digest_size=16)
    digest.update(orjson.dumps(event, option=orjson.OPT_SORT_KEYS))
    return EVENT_ID_PREFIX + digest.hexdigest()


# ------------------------------------------------------------------------- helpers


def _validated(number: int, obj: object) -> Parsed:
    """The event to publish for a decoded object, or why it is invalid."""
    try:
        event = parse_element(obj, default_ts=0.0)
    except EventError as exc:
        return Bad(number, _short(str(exc)))
    out = event_to_json(event)
    if isinstance(obj, dict) and obj.get("ts") is None:
        del out["ts"]  # the server stamps it, as it would any event published without one
    if "event_id" not in out:
        out["event_id"] = line_event_id(number, out)
    return Valid(number, out)


def _csv_row(text: bytes, delimiter: str) -> list[str]:
    return next(csv.reader([text.decode()], delimiter=delimiter, strict=True), [])


def _csv_value(name: str, text: str) -> object:
    if name == "ts":
        return csv_ts(text)
    if name == "quantity":
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        if not number.is_integer():
            raise EventError("quantity", f"must be an integer, got {_short(text, 40)!r}")
        return int(number)
    if name == "price":
        try:
            return float(text)
        except ValueError:
            raise EventError("price", f"must be a number, got {_short(text, 40)!r}") from None
    return text


def _field_pairs(option: str, texts: Sequence[str], *, empty_value: bool) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for text in texts:
        name, sep, value = text.partition("=")
        name = name.strip()
        if not sep or (not value and not empty_value):
            raise ValueError(f"{option} {text!r}: expected FIELD=VALUE")
        if name not in FIELDS:
            raise ValueError(f"{option} {text!r}: {name!r} is not one of {', '.join(FIELDS)}")
        if name in pairs:
            raise ValueError(f"{option}: {name!r} is given twice")
        pairs[name] = value
    return pairs


def _strip_newline(text: bytes) -> bytes:
    if text.endswith(b"\n"):
        text = text[:-1]
    if text.endswith(b"\r"):
        text = text[:-1]
    return text


def _short(text: str, limit: int = _MAX_REASON_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
