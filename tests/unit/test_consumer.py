"""The consumer over the embedded event log: offsets, invalid input, slicing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import orjson
import pytest

from recsrv.broker import Delivery
from recsrv.broker.memory import MemoryEventLog
from recsrv.config import BrokerConfig, ModelConfig, SessionsConfig
from recsrv.consumer import APPLY_SLICE, Consumer
from recsrv.errors import BrokerError
from recsrv.events import Event
from recsrv.metrics import Metrics
from recsrv.model import Model


def make_consumer() -> tuple[Consumer, MemoryEventLog]:
    log = MemoryEventLog()
    model = Model(ModelConfig(), SessionsConfig())
    return Consumer(log, model, BrokerConfig(), Metrics()), log


def view(session: str, item: str, **extra: object) -> dict[str, object]:
    return {"type": "view", "session_id": session, "item_id": item, "ts": 1e9, **extra}


async def test_applies_valid_elements_and_copies_invalid_ones_with_reasons() -> None:
    consumer, log = make_consumer()
    body = orjson.dumps([view("s", "a"), {"type": "view"}, view("s", "b")])
    await consumer.apply(Delivery(offset=7, body=body, timestamp=None))
    assert consumer.model.offset == 7
    assert consumer.model.events == 2
    assert [(c.index, c.field, c.offset) for c in log.invalid] == [(1, "session_id", 7)]
    assert orjson.loads(log.invalid[0].element) == {"type": "view"}
    assert log.invalid[0].reason


async def test_a_message_already_applied_is_skipped() -> None:
    consumer, _ = make_consumer()
    body = orjson.dumps(view("s", "a"))
    await consumer.apply(Delivery(offset=3, body=body, timestamp=None))
    await consumer.apply(Delivery(offset=3, body=body, timestamp=None))
    await consumer.apply(Delivery(offset=2, body=body, timestamp=None))
    assert consumer.model.events == 1
    assert consumer.model.offset == 3


async def test_missing_ts_defaults_to_the_message_timestamp() -> None:
    consumer, _ = make_consumer()
    body = orjson.dumps({"type": "view", "session_id": "s", "item_id": "a"})
    await consumer.apply(Delivery(offset=0, body=body, timestamp=1_234_567.0))
    assert consumer.model.clock == 1_234_567.0


async def test_whole_malformed_body_is_copied_raw_and_consumption_goes_on() -> None:
    consumer, log = make_consumer()
    await log.publish(b"\xff\xfe{", "x")
    await log.publish(orjson.dumps(view("s", "a")), "x")
    task = asyncio.create_task(consumer.run())
    for _ in range(100):
        if consumer.model.offset == 1:
            break
        await asyncio.sleep(0.01)
    await log.close()
    await asyncio.wait_for(task, 1)
    assert consumer.model.events == 1
    assert [(c.code, c.element) for c in log.invalid] == [("malformed", b"\xff\xfe{")]


async def test_large_message_yields_to_the_event_loop_while_applying() -> None:
    consumer, _ = make_consumer()
    body = orjson.dumps([view(f"s{i % 50}", f"i{i % 300}") for i in range(5000)])
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await consumer.apply(Delivery(offset=0, body=body, timestamp=None))
    task.cancel()
    assert consumer.model.events == 5000
    # 5000 events in slices of APPLY_SLICE: the loop ran other tasks in between.
    assert ticks >= 5000 // APPLY_SLICE - 1


async def test_cancelling_mid_message_still_applies_the_whole_message() -> None:
    consumer, _ = make_consumer()
    body = orjson.dumps([view(f"s{i % 50}", f"i{i % 300}") for i in range(5000)])
    task = asyncio.create_task(consumer.apply(Delivery(offset=4, body=body, timestamp=None)))
    for _ in range(3):
        await asyncio.sleep(0)  # let it start, a few slices in
    task.cancel()
    # A checkpoint waits for the lock, then sees the whole message or none of it.
    async with consumer.lock:
        assert (consumer.model.offset, consumer.model.events) == (4, 5000)


async def test_an_event_the_model_fails_on_is_recorded_and_the_rest_applied(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    consumer, log = make_consumer()
    original = consumer.model._apply

    def apply(event: Event) -> bool:
        if getattr(event, "item_id", None) == "boom":
            raise ValueError("bug")
        return original(event)

    monkeypatch.setattr(consumer.model, "_apply", apply)
    body = orjson.dumps([view("s", "a"), view("s", "boom"), view("s", "b")])
    await consumer.apply(Delivery(offset=0, body=body, timestamp=None))
    assert (consumer.model.offset, consumer.model.events) == (0, 2)
    assert [(c.code, c.index) for c in log.invalid] == [("apply_failed", 1)]
    assert "ValueError('bug')" in log.invalid[0].reason
    assert orjson.loads(log.invalid[0].element)["item_id"] == "boom"


async def test_counts_events_by_type_once_per_message() -> None:
    consumer, _ = make_consumer()
    first = [
        {**view("s", "a"), "event_id": "e1"},
        {"type": "purchase", "session_id": "s", "item_id": "a", "ts": 1e9},
        {"type": "view", "session_id": "s"},  # no item_id: invalid
    ]
    again = [{**view("s", "a"), "event_id": "e1"}, view("s", "b")]  # e1: a duplicate
    await consumer.apply(Delivery(offset=0, body=orjson.dumps(first), timestamp=None))
    await consumer.apply(Delivery(offset=1, body=b"{not json", timestamp=time.time() - 30))
    await consumer.apply(Delivery(offset=2, body=orjson.dumps(again), timestamp=time.time()))
    await consumer.apply(Delivery(offset=2, body=orjson.dumps(again), timestamp=None))  # held
    stats = consumer.metrics.consumer
    assert stats.messages == 3
    assert stats.received == {"view": 3, "purchase": 1}
    assert stats.applied == {"view": 2, "purchase": 1}
    assert stats.duplicates == 1
    assert stats.invalid == {"invalid": 1, "malformed": 1}
    assert stats.apply_seconds.count == 3
    # Only the two messages with a timestamp: about 30 s and about 0 s late.
    lag = stats.arrival_lag_seconds
    assert lag.count == 2
    assert 30 <= lag.sum < 40


async def test_an_event_that_fails_to_apply_is_received_but_not_applied(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    consumer, _ = make_consumer()

    def apply(event: Event) -> bool:
        raise ValueError("bug")

    monkeypatch.setattr(consumer.model, "_apply", apply)
    await consumer.apply(Delivery(offset=0, body=orjson.dumps(view("s", "a")), timestamp=None))
    stats = consumer.metrics.consumer
    assert (stats.received, stats.applied) == ({"view": 1}, {})
    assert stats.invalid == {"apply_failed": 1}
    assert stats.duplicates == 0


class SwallowingLog(MemoryEventLog):
    """A log whose read turns a cancellation into a BrokerError, as Python 3.11's
    asyncio.wait_for does when the cancellation meets a failing read."""

    async def consume(self, start_offset: int | None) -> AsyncIterator[Delivery]:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            raise BrokerError("the consumer channel closed") from None
        yield Delivery(offset=0, body=b"", timestamp=None)


async def test_a_cancellation_lost_in_a_broker_error_still_stops_the_consumer() -> None:
    log = SwallowingLog()
    consumer = Consumer(log, Model(ModelConfig(), SessionsConfig()), BrokerConfig(), Metrics())
    task = asyncio.create_task(consumer.run())
    await asyncio.sleep(0.01)
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=2)
    assert task in done and task.cancelled()
