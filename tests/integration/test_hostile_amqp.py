"""Hostile AMQP input against the real RabbitMQ: a seeded random mix of good and bad messages.

Valid event messages (known event_ids, some re-sent) are interleaved with hostile
ones: invalid UTF-8, 100k-level nesting, 10 MB bodies, 50,000-element arrays, wrong
content types and encodings, empty bodies, JSON scalars, random bytes, forged
headers. The consumer must survive all of it, apply every valid event exactly once
(also the valid elements of a message that holds invalid ones), count the invalid
ones by code and copy each to the invalid-events exchange with its reason.

Content type: the input contract (design section 3) is about the body, and the
consumer never looks at an AMQP message's content_type or content_encoding. A valid
JSON body labelled application/xml, or with no label at all, is applied; a body that
is not UTF-8 JSON is "malformed" whatever its label says (a gzip body is not
unpacked). The tests below pin that behaviour.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import orjson
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from recsrv.config import BrokerConfig
from tests.conftest import (
    AMQP_URL,
    ServerFactory,
    item_seen,
    marker,
    wait_until,
)

SEED = 20240607
TS = 1_700_000_000
MAX_RAW_BYTES = 65_536  # what a dead-lettered copy of an undecodable body keeps
TEN_MB = 10 * 1024 * 1024
COUNTED = ("view", "click", "add_to_cart", "remove_from_cart", "purchase")

# One dead-lettered copy: (code, field, index) as its x-recsrv-* headers give them.
Copy = tuple[str, str | None, int | None]
MALFORMED: Copy = ("malformed", None, None)


@dataclass
class Message:
    """One AMQP message to publish, what it must yield, and which events it must apply."""

    name: str
    body: bytes
    copies: list[Copy] = field(default_factory=list)
    applied: list[dict[str, Any]] = field(default_factory=list)
    # Events that must NOT reach the state (their message is refused as a whole).
    refused_items: list[str] = field(default_factory=list)
    content_type: str | None = "application/json"
    content_encoding: str | None = None
    headers: dict[str, Any] | None = None
    resent: bool = False  # a second publish of an earlier message: duplicates only


class Events:
    """Valid events with unique event_ids over a small pool of sessions and items."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.count = 0

    def one(self) -> dict[str, Any]:
        n = self.count
        self.count += 1
        kind = self.rng.choice(("view", "view", "click", "add_to_cart", "purchase", "search"))
        event: dict[str, Any] = {
            "type": kind,
            "session_id": f"s{self.rng.randrange(17)}",
            "ts": TS + n,
            "event_id": f"ok-{n}",
        }
        if kind == "search":
            event["query"] = "shoes"
        else:
            event["item_id"] = f"item{self.rng.randrange(31)}"
        return event

    def many(self, count: int) -> list[dict[str, Any]]:
        return [self.one() for _ in range(count)]


def refused_views(prefix: str, count: int) -> list[dict[str, Any]]:
    """Well-formed events whose message as a whole must be refused (items never seen)."""
    return [
        {"type": "view", "session_id": "r", "item_id": f"{prefix}{n}", "ts": TS + n}
        for n in range(count)
    ]


# Invalid elements, each wrong in one field only, and that field (design section 3).
JUNK: tuple[tuple[Any, str | None], ...] = (
    ({}, "type"),
    ({"type": "teleport", "session_id": "s1", "item_id": "a"}, "type"),
    ({"type": 7, "session_id": "s1", "item_id": "a"}, "type"),
    ({"type": "view", "item_id": "a"}, "session_id"),
    ({"type": "view", "session_id": "", "item_id": "a"}, "session_id"),
    ({"type": "view", "session_id": "s1"}, "item_id"),
    ({"type": "view", "session_id": "s1", "item_id": "a", "quantity": 0}, "quantity"),
    ({"type": "view", "session_id": "s1", "item_id": "a", "price": -1}, "price"),
    ({"type": "view", "session_id": "s1", "item_id": "a", "ts": "yesterday"}, "ts"),
    ({"type": "view", "session_id": "s1", "item_id": "a", "items": []}, "items"),
    ({"type": "catalog.upsert", "item": {"price": 3}}, "item.item_id"),
    ({"type": "user.forget"}, "user_id"),
    (7, None),
    ("view", None),
    (None, None),
    ([], None),
)


def junk_flood(rng: random.Random, events: Events, count: int) -> tuple[list[Any], list[Copy]]:
    """`count` random invalid elements with ten valid events among them."""
    elements: list[Any] = []
    copies: list[Copy] = []
    valid_at = set(rng.sample(range(count + 10), 10))
    for index in range(count + 10):
        if index in valid_at:
            elements.append(events.one())
        else:
            element, field_name = rng.choice(JUNK)
            elements.append(element)
            copies.append(("invalid", field_name, index))
    return elements, copies


def nested(depth: int, leaf: bytes = b"1") -> bytes:
    return b'{"a":' * depth + leaf + b"}" * depth


def hostile_messages(rng: random.Random, events: Events) -> list[Message]:
    """Every hostile message, with the dead-lettered copies and applied events it must give."""
    ok_a, ok_b, ok_c = events.one(), events.one(), events.one()
    big_props = {"type": "view", "session_id": "s1", "item_id": "big", "properties": {}}
    big_props["properties"] = {"blob": "x" * TEN_MB}
    # Deeper than orjson encodes (254 levels) but not than it decodes (1024).
    deep_props = b'{"type":"view","session_id":"s1","item_id":"deep","properties":'
    deep_props += nested(600) + b"}"
    at_limit = events.many(9_995)
    junk_positions = sorted(rng.sample(range(10_000), 5))
    for position in junk_positions:
        at_limit.insert(position, {"type": "view", "session_id": "s1"})  # no item_id
    too_many = refused_views("many", 50_000)
    flood, flood_copies = junk_flood(rng, events, 1_000)
    first, last = events.one(), events.one()
    in_array: list[Any] = [first, 1, "x", None, [], True, {}, last]
    return [
        # ---- not UTF-8
        Message(
            "invalid utf-8 in a string", b'{"type":"view","session_id":"s\xff\xfe"}', [MALFORMED]
        ),
        Message(
            "invalid utf-8 beside valid events",
            orjson.dumps(refused_views("utf8_", 2))[:-1] + b',"\xc0\xaf"]',
            [MALFORMED],
            refused_items=["utf8_0", "utf8_1"],
        ),
        Message("lone surrogate escape", b'{"type":"view","session_id":"\\ud800"}', [MALFORMED]),
        Message("utf-16 json", json.dumps(events.one()).encode("utf-16"), [MALFORMED]),
        # ---- nesting
        Message("100k nested objects", nested(100_000), [MALFORMED]),
        Message(
            "100k nested arrays beside valid events",
            b"["
            + orjson.dumps(refused_views("deep_", 1)[0])
            + b","
            + b"[" * 100_000
            + b"]" * 100_000
            + b"]",
            [MALFORMED],
            refused_items=["deep_0"],
        ),
        Message(
            "600-level properties beside valid events",
            b"[" + orjson.dumps(ok_a) + b"," + deep_props + b"]",
            [("invalid", "properties", 1)],
            applied=[ok_a],
            refused_items=["deep"],
        ),
        # ---- size
        Message(
            "10 MB element beside valid events",
            orjson.dumps([ok_b, big_props, ok_c]),
            [("invalid", "properties", 1)],
            applied=[ok_b, ok_c],
            refused_items=["big"],
        ),
        Message("10 MB of random bytes", b"\xff" + rng.randbytes(TEN_MB - 1), [MALFORMED]),
        Message(
            "50,000-element array",
            orjson.dumps(too_many),
            [("too_many", None, None)],
            refused_items=["many0", "many49999"],
        ),
        Message("50,000 integers", orjson.dumps(list(range(50_000))), [("too_many", None, None)]),
        Message(
            "10,000 elements, five without item_id",
            orjson.dumps(at_limit),
            [("invalid", "item_id", position) for position in junk_positions],
            applied=[e for e in at_limit if "event_id" in e],
        ),
        Message(
            "1,000 invalid elements and ten valid ones",
            orjson.dumps(flood),
            flood_copies,
            applied=[e for e in flood if isinstance(e, dict) and "event_id" in e],
        ),
        Message(
            "non-objects in an array",
            orjson.dumps(in_array),
            [("invalid", None, n) for n in range(1, 6)] + [("invalid", "type", 6)],
            applied=[first, last],
        ),
        # ---- content types and encodings
        Message(
            "xml labelled xml",
            b"<event><type>view</type></event>",
            [MALFORMED],
            content_type="application/xml",
        ),
        Message(
            "gzip-encoded json",
            gzip.compress(orjson.dumps(events.one())),
            [MALFORMED],
            content_encoding="gzip",
        ),
        Message(
            "utf-16 labelled as such",
            json.dumps([events.one()]).encode("utf-16"),
            [MALFORMED],
            content_type="application/json; charset=utf-16",
        ),
        Message(
            "random bytes labelled octet-stream",
            b"\x00" + rng.randbytes(rng.randrange(1, 4096)),
            [MALFORMED],
            content_type="application/octet-stream",
        ),
        # ---- not an object or array
        Message("empty body", b"", [MALFORMED], content_type=None),
        Message("whitespace only", b" \n\t ", [MALFORMED]),
        Message("number", b"42", [MALFORMED]),
        Message("string", b'"view"', [MALFORMED]),
        Message("null", b"null", [MALFORMED]),
        Message("true", b"true", [MALFORMED]),
        Message("infinity", b"1e400", [MALFORMED]),
        Message("truncated", b'[{"type":"view","session_id":"s1"', [MALFORMED]),
        Message("trailing garbage", b'{"type":"view"}garbage', [MALFORMED]),
        *(
            Message(
                f"random bytes #{n}", b"\xfe" + rng.randbytes(rng.randrange(0, 2048)), [MALFORMED]
            )
            for n in range(5)
        ),
        # ---- hostile values in well-formed JSON
        Message(
            "1 MB event type",
            orjson.dumps({"type": "x" * 1_000_000, "session_id": "s1", "item_id": "a"}),
            [("invalid", "type", 0)],
        ),
        Message(
            "2**64 quantity",
            b'{"type":"view","session_id":"s1","item_id":"q","quantity":18446744073709551616}',
            [("invalid", "quantity", 0)],
            refused_items=["q"],
        ),
        Message(
            "ts near the float maximum",
            orjson.dumps({"type": "view", "session_id": "s1", "item_id": "t", "ts": 1.5e308}),
            [("invalid", "ts", 0)],
            refused_items=["t"],
        ),
        Message("empty array", b"[]", []),
    ]


def valid_messages(rng: random.Random, events: Events) -> list[Message]:
    """Good messages: single events, small arrays, and some odd-but-valid labels."""
    messages = [
        Message(f"valid #{n}", orjson.dumps(batch), applied=batch)
        for n, batch in enumerate(
            [events.one()] if rng.random() < 0.5 else events.many(rng.randrange(2, 20))
            for _ in range(40)
        )
    ]
    xml = events.one()
    unlabelled = events.many(3)
    forged_offset, forged_text = events.one(), events.one()
    return [
        *messages,
        # The consumer reads the body, not the label: valid JSON is applied whatever the
        # content type says, and with none at all.
        Message(
            "json labelled xml", orjson.dumps(xml), applied=[xml], content_type="application/xml"
        ),
        Message(
            "json without a content type",
            orjson.dumps(unlabelled),
            applied=unlabelled,
            content_type=None,
        ),
        # A publisher cannot move the consumer's position: RabbitMQ sets x-stream-offset
        # on delivery, whatever the publisher put there.
        Message(
            "forged x-stream-offset",
            orjson.dumps(forged_offset),
            applied=[forged_offset],
            headers={"x-stream-offset": 10**12},
        ),
        Message(
            "non-numeric x-stream-offset",
            orjson.dumps(forged_text),
            applied=[forged_text],
            headers={"x-stream-offset": "oops"},
        ),
    ]


def the_mix() -> list[Message]:
    """A seeded random interleaving of valid, re-sent and hostile messages."""
    rng = random.Random(SEED)
    events = Events(rng)
    messages = hostile_messages(rng, events) + valid_messages(rng, events)
    rng.shuffle(messages)
    resent = [
        Message(f"re-sent {m.name}", m.body, resent=True, content_type=m.content_type)
        for m in rng.sample([m for m in messages if m.name.startswith("valid #")], 5)
    ]
    for message in resent:
        messages.insert(rng.randrange(len(messages) + 1), message)
    return messages


# ---------------------------------------------------------------- plumbing


@pytest.fixture
async def channel() -> AsyncIterator[AbstractChannel]:
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        yield await connection.channel(publisher_confirms=True)


async def collect_dead_letters(channel: AbstractChannel, config: BrokerConfig) -> AbstractQueue:
    """A queue of our own, bound to the invalid-events exchange before anything is published."""
    exchange = await channel.get_exchange(config.invalid_exchange)
    queue = await channel.declare_queue(exclusive=True, auto_delete=True)
    await queue.bind(exchange, routing_key="#")
    return queue


async def publish(channel: AbstractChannel, config: BrokerConfig, message: Message) -> None:
    exchange = await channel.get_exchange(config.exchange)
    amqp_message = aio_pika.Message(
        message.body,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        headers=message.headers,
    )
    # Awaited one by one, with confirms: the stream holds them in this order.
    await exchange.publish(amqp_message, routing_key="hostile")


async def take(queue: AbstractQueue, count: int, within_s: float) -> list[AbstractIncomingMessage]:
    copies: list[AbstractIncomingMessage] = []
    deadline = time.monotonic() + within_s
    while len(copies) < count and time.monotonic() < deadline:
        message = await queue.get(no_ack=True, fail=False)
        if message is None:
            await asyncio.sleep(0.05)
        else:
            copies.append(message)
    return copies


def metric_values(text: str, name: str) -> dict[str, float]:
    """The samples of one Prometheus metric, keyed by their label text ("" if none)."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith(name + "_"):
            key, value = line.rsplit(" ", 1)
            values[key[len(name) :]] = float(value)
    return values


def expected_counters(events: list[dict[str, Any]]) -> dict[str, Counter[str]]:
    counters: dict[str, Counter[str]] = {}
    for event in events:
        if "item_id" in event:
            counters.setdefault(event["item_id"], Counter())[event["type"]] += 1
    return counters


def header_offset(message: AbstractIncomingMessage) -> int:
    offset = message.headers["x-recsrv-offset"]
    assert isinstance(offset, int)
    return offset


def header_copy(message: AbstractIncomingMessage) -> Copy:
    headers = message.headers
    field_name = headers.get("x-recsrv-field")
    index = headers.get("x-recsrv-index")
    assert field_name is None or isinstance(field_name, str)
    assert index is None or isinstance(index, int)
    return (str(headers["x-recsrv-code"]), field_name, index)


# ---------------------------------------------------------------- the test


# The timeout is above the sum of the test's own deadlines (40 + 20 + 10 s), so that a
# slow run fails naming what did not arrive; it takes 5-20 s here.
@pytest.mark.timeout(120)
async def test_hostile_mix_is_dead_lettered_and_valid_events_applied_once(
    make_server: ServerFactory, amqp_config: BrokerConfig, channel: AbstractChannel
) -> None:
    client = await make_server(broker=amqp_config)
    dead_letters = await collect_dead_letters(channel, amqp_config)
    mix = the_mix()
    for message in mix:
        await publish(channel, amqp_config, message)
    # Published last: once it is applied, every message before it has been, so the
    # exact counts below would also see anything applied twice.
    await publish(channel, amqp_config, Message("marker", orjson.dumps(marker("marker"))))

    applied = [event for m in mix if not m.resent for event in m.applied]
    expected_copies = [copy for m in mix for copy in m.copies]
    await wait_until(lambda: item_seen(client, "marker"), 40, "the marker after the mix applied")
    copies = await take(dead_letters, len(expected_copies), within_s=20)

    # Every hostile message gave exactly its copies, in stream order, grouped per message.
    assert [header_copy(c) for c in copies] == expected_copies
    offsets = [header_offset(c) for c in copies]
    groups = [list(g) for g in _runs(offsets)]
    assert [len(g) for g in groups] == [len(m.copies) for m in mix if m.copies]
    assert offsets == sorted(offsets)
    for copy in copies:
        reason = copy.headers["x-recsrv-reason"]
        assert isinstance(reason, str) and 0 < len(reason) < 1000, reason
        assert copy.routing_key == copy.headers["x-recsrv-code"]
    _check_copy_bodies(mix, copies)

    # Every valid event exactly once (and the marker): the model's count, the metrics,
    # each item's counters.
    model = (await (await client.get("/v1/popular", params={"k": "1"})).json())["model"]
    assert model["events"] == len(applied) + 1
    metrics = await (await client.get("/metrics")).text()
    applied_total = metric_values(metrics, "recsrv_events_applied_total")
    assert sum(applied_total.values()) == len(applied) + 1
    resent_events = sum(
        len(orjson.loads(m.body)) if m.body.startswith(b"[") else 1 for m in mix if m.resent
    )
    assert metric_values(metrics, "recsrv_events_duplicate_total") == {"": resent_events}
    by_code = Counter(code for code, _, _ in expected_copies)
    assert metric_values(metrics, "recsrv_events_invalid_total") == {
        f'{{code="{code}"}}': float(count) for code, count in by_code.items()
    }
    for item_id, counts in expected_counters(applied).items():
        info = await (await client.get(f"/v1/items/{item_id}")).json()
        assert info["counters"] == {kind: counts[kind] for kind in COUNTED}, item_id
    for item_id in (item for m in mix for item in m.refused_items):
        assert (await client.get(f"/v1/items/{item_id}")).status == 404, item_id

    # Still up, ready and consuming.
    ready = await client.get("/readyz")
    assert ready.status == 200, await ready.text()
    last = {"type": "view", "session_id": "after", "item_id": "after", "ts": TS, "event_id": "z"}
    await publish(channel, amqp_config, Message("after", orjson.dumps(last)))
    await wait_until(lambda: item_seen(client, "after"), 10, "an event after the mix applied")
    assert await take(dead_letters, 1, within_s=0.5) == []


def _runs(values: list[Any]) -> list[list[Any]]:
    runs: list[list[Any]] = []
    for value in values:
        if runs and runs[-1][0] == value:
            runs[-1].append(value)
        else:
            runs.append([value])
    return runs


def _check_copy_bodies(mix: list[Message], copies: list[AbstractIncomingMessage]) -> None:
    """An undecodable body is copied raw (clipped); an invalid element as its JSON."""
    position = 0
    for message in mix:
        mine = copies[position : position + len(message.copies)]
        position += len(message.copies)
        for copy, (_, _, index) in zip(mine, message.copies, strict=True):
            if index is None:
                assert copy.body == message.body[:MAX_RAW_BYTES], message.name
                continue
            decoded = orjson.loads(message.body)
            element = decoded[index] if isinstance(decoded, list) else decoded
            if message.name.startswith("600-level"):
                # Too deep to encode whole: kept with its deepest levels cut off.
                assert orjson.loads(copy.body)["item_id"] == element["item_id"]
            else:
                assert orjson.loads(copy.body) == element, message.name
