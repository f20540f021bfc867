"""Typed events and the decoder that turns message bodies into them.

Pure code: no I/O. The input contract is design section 3. A body is one JSON
object or an array of them; every element is validated on its own, so one bad
element never costs the valid ones beside it.
"""

from __future__ import annotations

import reprlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import orjson

from recsrv.errors import EventError

INTERACTION_TYPES: Final = (
    "view",
    "click",
    "add_to_cart",
    "remove_from_cart",
    "purchase",
    "search",
)
CATALOG_UPSERT: Final = "catalog.upsert"
CATALOG_DELETE: Final = "catalog.delete"
USER_FORGET: Final = "user.forget"
EVENT_TYPES: Final = (*INTERACTION_TYPES, CATALOG_UPSERT, CATALOG_DELETE, USER_FORGET)


@dataclass(frozen=True, slots=True)
class LineItem:
    """One line of a purchase with `items`."""

    item_id: str
    quantity: int = 1
    price: float | None = None


@dataclass(frozen=True, slots=True)
class Interaction:
    """A shopper's action: view, click, add_to_cart, remove_from_cart, purchase, search."""

    type: str
    session_id: str
    ts: float
    user_id: str | None = None
    item_id: str | None = None
    items: tuple[LineItem, ...] = ()
    quantity: int = 1
    price: float | None = None
    query: str | None = None
    event_id: str | None = None
    properties: dict[str, Any] | None = None

    def item_ids(self) -> tuple[str, ...]:
        """Every item this event touches, in order: its item_id, then purchase lines."""
        ids = tuple(line.item_id for line in self.items)
        return ((self.item_id,) if self.item_id is not None else ()) + ids


@dataclass(frozen=True, slots=True)
class CatalogItem:
    item_id: str
    title: str | None = None
    category: str | None = None
    price: float | None = None
    in_stock: bool = True
    url: str | None = None
    image_url: str | None = None
    tags: tuple[str, ...] = ()
    properties: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class CatalogUpsert:
    item: CatalogItem
    ts: float
    event_id: str | None = None
    type: str = field(default=CATALOG_UPSERT, init=False)


@dataclass(frozen=True, slots=True)
class CatalogDelete:
    item_id: str
    ts: float
    event_id: str | None = None
    type: str = field(default=CATALOG_DELETE, init=False)


@dataclass(frozen=True, slots=True)
class UserForget:
    user_id: str
    ts: float
    event_id: str | None = None
    type: str = field(default=USER_FORGET, init=False)


Event = Interaction | CatalogUpsert | CatalogDelete | UserForget


# --------------------------------------------------------------------------- decoding

MAX_ID_CHARS: Final = 128
MAX_QUERY_CHARS: Final = 512
MAX_TITLE_CHARS: Final = 512
MAX_URL_CHARS: Final = 2048
MAX_TAGS: Final = 50
MAX_TAG_CHARS: Final = 64
MAX_LINE_ITEMS: Final = 500
MAX_QUANTITY: Final = 10_000
MAX_PROPERTIES_BYTES: Final = 4096
MAX_TS: Final = 1e11
MAX_RAW_BYTES: Final = 65_536
"""How much of a body that failed as a whole is kept in its Invalid record."""

_MAX_TS_CHARS: Final = 64
_MAX_PRICE: Final = sys.float_info.max
_ENCODE_DEPTH: Final = 250
"""orjson encodes at most 254 levels of nesting but decodes 1024; deeper is clipped."""
_TOO_DEEP: Final = "<nested too deep>"


@dataclass(frozen=True, slots=True)
class Invalid:
    """One element (or the whole body) that could not become an event.

    code: "malformed" (body not UTF-8 / not JSON / not an object or array),
    "too_many" (array longer than max_elements), "invalid" (one element failed).
    index: position in the array (0 for a single object body); None when the whole
    body failed. field: e.g. "session_id", "items[3].quantity", "item.price"; None if
    not field-specific. element: the offending element re-encoded as JSON, or the raw
    body (at most MAX_RAW_BYTES) when the body itself failed.
    """

    code: str
    index: int | None
    field: str | None
    reason: str
    element: bytes


@dataclass(frozen=True, slots=True)
class Decoded:
    """The valid events of a body, in order, and a record of every invalid element."""

    events: list[Event]
    invalid: list[Invalid]


def decode_body(body: bytes, *, default_ts: float, max_elements: int = 10_000) -> Decoded:
    """Decode and validate a message body: one JSON object or an array of them."""
    try:
        data = orjson.loads(body)
    except (orjson.JSONDecodeError, RecursionError, ValueError) as exc:
        return _body_failed("malformed", body, f"not valid UTF-8 JSON: {exc}")
    if isinstance(data, dict):
        elements: list[Any] = [data]
    elif isinstance(data, list):
        if len(data) > max_elements:
            reason = f"array has {len(data)} elements, at most {max_elements} allowed"
            return _body_failed("too_many", body, reason)
        elements = data
    else:
        return _body_failed("malformed", body, "body must be a JSON object or an array of objects")
    events: list[Event] = []
    invalid: list[Invalid] = []
    for index, element in enumerate(elements):
        try:
            events.append(parse_element(element, default_ts=default_ts))
        except EventError as exc:
            invalid.append(Invalid("invalid", index, exc.field, exc.reason, _encode(element)))
    return Decoded(events, invalid)


def parse_element(obj: object, *, default_ts: float) -> Event:
    """Validate one decoded JSON element; raise EventError(field, reason) if invalid."""
    if not isinstance(obj, dict):
        raise EventError(None, "must be a JSON object")
    etype = obj.get("type")
    if isinstance(etype, str):
        parser = _PARSERS.get(etype)
        if parser is not None:
            return parser(obj, etype, default_ts)
    if etype is None:
        raise EventError("type", "missing")
    raise EventError("type", f"unknown event type {_short(etype)}")


def parse_ts(value: object) -> float:
    """Epoch seconds (a number) or an RFC 3339 date-time with an offset, as epoch seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        ts: float | int = value
    elif isinstance(value, str):
        ts = _parse_rfc3339(value)
    else:
        raise EventError("ts", "must be epoch seconds or an RFC 3339 date-time string")
    if 0 <= ts < MAX_TS:  # also refuses NaN and infinities
        return float(ts)
    raise EventError("ts", "must be from 0 to 1e11 epoch seconds (1970-01-01 to year 5138)")


def event_to_json(event: Event) -> dict[str, Any]:
    """The canonical JSON form: fields equal to their default (None, (), 1, true) are omitted."""
    if isinstance(event, Interaction):
        return _interaction_json(event)
    if isinstance(event, CatalogUpsert):
        out: dict[str, Any] = {"type": event.type, "item": _catalog_item_json(event.item)}
    elif isinstance(event, CatalogDelete):
        out = {"type": event.type, "item_id": event.item_id}
    else:
        out = {"type": event.type, "user_id": event.user_id}
    out["ts"] = float(event.ts)
    if event.event_id is not None:
        out["event_id"] = event.event_id
    return out


def encode_events(events: Sequence[Event]) -> bytes:
    """A JSON array of the events' canonical forms; decode_body reads it back."""
    return orjson.dumps([event_to_json(event) for event in events])


# ------------------------------------------------------------------ per-type parsers


def _interaction(obj: dict[str, Any], etype: str, default_ts: float) -> Interaction:
    session_id = _required_string(obj, "session_id", MAX_ID_CHARS)
    items = _line_items(obj.get("items"), etype)
    item_id = _string(obj, "item_id", MAX_ID_CHARS)
    if item_id is None and not items and etype != "search":
        raise EventError("item_id", "missing")
    return Interaction(
        type=etype,
        session_id=session_id,
        ts=_ts(obj, default_ts),
        user_id=_string(obj, "user_id", MAX_ID_CHARS),
        item_id=item_id,
        items=items,
        quantity=_quantity(obj.get("quantity"), "quantity"),
        price=_price(obj.get("price"), "price"),
        # query means something only on a search; elsewhere it is an unknown field
        query=_string(obj, "query", MAX_QUERY_CHARS, min_len=0) if etype == "search" else None,
        event_id=_string(obj, "event_id", MAX_ID_CHARS),
        properties=_properties(obj.get("properties")),
    )


def _catalog_upsert(obj: dict[str, Any], etype: str, default_ts: float) -> CatalogUpsert:
    raw = obj.get("item")
    if raw is None:
        raise EventError("item", "missing")
    try:
        item = _catalog_item(raw)
    except EventError as exc:
        raise _prefixed("item", exc) from None
    return CatalogUpsert(
        item=item, ts=_ts(obj, default_ts), event_id=_string(obj, "event_id", MAX_ID_CHARS)
    )


def _catalog_delete(obj: dict[str, Any], etype: str, default_ts: float) -> CatalogDelete:
    return CatalogDelete(
        item_id=_required_string(obj, "item_id", MAX_ID_CHARS),
        ts=_ts(obj, default_ts),
        event_id=_string(obj, "event_id", MAX_ID_CHARS),
    )


def _user_forget(obj: dict[str, Any], etype: str, default_ts: float) -> UserForget:
    return UserForget(
        user_id=_required_string(obj, "user_id", MAX_ID_CHARS),
        ts=_ts(obj, default_ts),
        event_id=_string(obj, "event_id", MAX_ID_CHARS),
    )


_PARSERS: Final[dict[str, Callable[[dict[str, Any], str, float], Event]]] = {
    **dict.fromkeys(INTERACTION_TYPES, _interaction),
    CATALOG_UPSERT: _catalog_upsert,
    CATALOG_DELETE: _catalog_delete,
    USER_FORGET: _user_forget,
}


# ------------------------------------------------------------------ nested objects


def _line_items(raw: object, etype: str) -> tuple[LineItem, ...]:
    if raw is None:
        return ()
    if etype != "purchase":
        raise EventError("items", "items is only allowed on purchase")
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_LINE_ITEMS:
        raise EventError("items", f"must be a non-empty array of at most {MAX_LINE_ITEMS} lines")
    lines = []
    for index, line in enumerate(raw):
        try:
            lines.append(_line_item(line))
        except EventError as exc:
            raise _prefixed(f"items[{index}]", exc) from None
    return tuple(lines)


def _line_item(line: object) -> LineItem:
    if not isinstance(line, dict):
        raise EventError(None, "must be an object")
    return LineItem(
        item_id=_required_string(line, "item_id", MAX_ID_CHARS),
        quantity=_quantity(line.get("quantity"), "quantity"),
        price=_price(line.get("price"), "price"),
    )


def _catalog_item(raw: object) -> CatalogItem:
    if not isinstance(raw, dict):
        raise EventError(None, "must be an object")
    in_stock = raw.get("in_stock")
    if in_stock is not None and not isinstance(in_stock, bool):
        raise EventError("in_stock", "must be true or false")
    return CatalogItem(
        item_id=_required_string(raw, "item_id", MAX_ID_CHARS),
        title=_string(raw, "title", MAX_TITLE_CHARS, min_len=0),
        category=_string(raw, "category", MAX_ID_CHARS),
        price=_price(raw.get("price"), "price"),
        in_stock=in_stock is not False,
        url=_string(raw, "url", MAX_URL_CHARS, min_len=0),
        image_url=_string(raw, "image_url", MAX_URL_CHARS, min_len=0),
        tags=_tags(raw.get("tags")),
        properties=_properties(raw.get("properties")),
    )


def _tags(raw: object) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or len(raw) > MAX_TAGS:
        raise EventError("tags", f"must be an array of at most {MAX_TAGS} strings")
    for index, tag in enumerate(raw):
        if not (isinstance(tag, str) and 1 <= len(tag) <= MAX_TAG_CHARS):
            raise EventError(f"tags[{index}]", f"must be a string of 1-{MAX_TAG_CHARS} characters")
    return tuple(raw)


# ------------------------------------------------------------------ field helpers
# A field whose value is null counts as absent, everywhere.


def _string(obj: dict[str, Any], name: str, max_len: int, *, min_len: int = 1) -> str | None:
    value = obj.get(name)
    if value is None:
        return None
    if isinstance(value, str) and min_len <= len(value) <= max_len:
        return value
    raise EventError(name, _string_reason(min_len, max_len))


def _required_string(obj: dict[str, Any], name: str, max_len: int) -> str:
    value = obj.get(name)
    if isinstance(value, str) and 1 <= len(value) <= max_len:
        return value
    raise EventError(name, "missing" if value is None else _string_reason(1, max_len))


def _string_reason(min_len: int, max_len: int) -> str:
    if min_len == 0:
        return f"must be a string of at most {max_len} characters"
    return f"must be a string of {min_len}-{max_len} characters"


def _quantity(value: object, name: str) -> int:
    if value is None:
        return 1
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_QUANTITY:
        return value
    raise EventError(name, f"must be an integer from 1 to {MAX_QUANTITY}")


def _price(value: object, name: str) -> float | None:
    if value is None:
        return None
    # the upper bound refuses inf, and ints too large for a float; NaN fails both
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= _MAX_PRICE:
        return float(value)
    raise EventError(name, "must be a finite number >= 0")


def _properties(value: object) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise EventError("properties", "must be an object")
    if not value:
        return value
    try:
        size = len(orjson.dumps(value))
    except orjson.JSONEncodeError as exc:
        raise EventError("properties", f"must be JSON-encodable: {exc}") from None
    if size > MAX_PROPERTIES_BYTES:
        raise EventError(
            "properties",
            f"properties must encode to at most {MAX_PROPERTIES_BYTES} bytes (got {size})",
        )
    return value


def _ts(obj: dict[str, Any], default_ts: float) -> float:
    value = obj.get("ts")
    return default_ts if value is None else parse_ts(value)


def _parse_rfc3339(text: str) -> float:
    # fromisoformat alone accepts more than RFC 3339 (dates alone, no seconds, +0200), so
    # the shape is checked first: YYYY-MM-DD[T ]HH:MM:SS[.frac](Z|+HH:MM|-HH:MM).
    if not (
        19 <= len(text) <= _MAX_TS_CHARS
        and text[4] == text[7] == "-"
        and text[10] in "Tt "
        and text[13] == text[16] == ":"
    ):
        raise EventError("ts", "must be epoch seconds or an RFC 3339 date-time string")
    if not (text[-1] in "Zz" or (text[-6] in "+-" and text[-3] == ":")):
        raise EventError("ts", "RFC 3339 date-time must carry a UTC offset or 'Z'")
    try:
        return datetime.fromisoformat(text.upper()).timestamp()
    except ValueError as exc:
        raise EventError("ts", f"not a valid RFC 3339 date-time: {exc}") from None


def _prefixed(prefix: str, exc: EventError) -> EventError:
    return EventError(f"{prefix}.{exc.field}" if exc.field else prefix, exc.reason)


def _short(value: object) -> str:
    """A bounded repr: plain repr() recurses through nesting (a 1000-deep array that
    orjson decodes exhausts the recursion limit) and copies a huge string whole."""
    try:
        text = _SHORT_REPR.repr(value)
    except ValueError:
        # Python refuses to print an integer of more than 4300 digits.
        text = f"<integer of {value.bit_length()} bits>" if isinstance(value, int) else "<?>"
    return text if len(text) <= 64 else text[:61] + "..."


_SHORT_REPR: Final = reprlib.Repr()
_SHORT_REPR.maxlevel = 3
_SHORT_REPR.maxstring = _SHORT_REPR.maxother = 64
_SHORT_REPR.maxlist = _SHORT_REPR.maxdict = 4


def _body_failed(code: str, body: bytes, reason: str) -> Decoded:
    return Decoded([], [Invalid(code, None, None, reason, bytes(body[:MAX_RAW_BYTES]))])


def _encode(element: object) -> bytes:
    try:
        return orjson.dumps(element)
    except orjson.JSONEncodeError:
        return orjson.dumps(_clip(element, _ENCODE_DEPTH))


def _clip(value: object, depth: int) -> object:
    """The value with containers nested deeper than depth replaced by a marker string."""
    if isinstance(value, dict | list) and depth == 0:
        return _TOO_DEEP
    if isinstance(value, dict):
        return {key: _clip(item, depth - 1) for key, item in value.items()}
    if isinstance(value, list):
        return [_clip(item, depth - 1) for item in value]
    return value


# ------------------------------------------------------------------ canonical JSON


def _interaction_json(event: Interaction) -> dict[str, Any]:
    out: dict[str, Any] = {"type": event.type, "session_id": event.session_id}
    out["ts"] = float(event.ts)
    optional = (
        ("user_id", event.user_id),
        ("item_id", event.item_id),
        ("price", event.price),
        ("query", event.query),
        ("event_id", event.event_id),
        ("properties", event.properties),
    )
    out.update((key, value) for key, value in optional if value is not None)
    if event.items:
        out["items"] = [_line_item_json(line) for line in event.items]
    if event.quantity != 1:
        out["quantity"] = event.quantity
    return out


def _line_item_json(line: LineItem) -> dict[str, Any]:
    out: dict[str, Any] = {"item_id": line.item_id}
    if line.quantity != 1:
        out["quantity"] = line.quantity
    if line.price is not None:
        out["price"] = line.price
    return out


def _catalog_item_json(item: CatalogItem) -> dict[str, Any]:
    out: dict[str, Any] = {"item_id": item.item_id}
    optional = (
        ("title", item.title),
        ("category", item.category),
        ("price", item.price),
        ("url", item.url),
        ("image_url", item.image_url),
        ("properties", item.properties),
    )
    out.update((key, value) for key, value in optional if value is not None)
    if not item.in_stock:
        out["in_stock"] = False
    if item.tags:
        out["tags"] = list(item.tags)
    return out
