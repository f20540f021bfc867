"""after=EVENT_ID: waiting for an event to be applied, on a real model."""

from __future__ import annotations

import asyncio
import time

from recsrv.config import ModelConfig, SessionsConfig
from recsrv.events import Event, parse_element
from recsrv.model import Model
from recsrv.read_after_write import ReadAfterWrite


def view(event_id: str) -> Event:
    element = {"type": "view", "session_id": "s", "item_id": "shoe", "ts": 1.0e9}
    return parse_element({**element, "event_id": event_id}, default_ts=1.0e9)


def new_model() -> Model:
    return Model(ModelConfig(), SessionsConfig())


async def test_an_event_already_applied_answers_at_once() -> None:
    model = new_model()
    model.apply(view("e-1"))
    waiters = ReadAfterWrite(lambda: model)
    started = time.monotonic()
    assert await waiters.wait("e-1", timeout_s=30.0) is True
    assert time.monotonic() - started < 1.0


async def test_an_event_applied_during_the_wait_ends_it() -> None:
    model = new_model()
    waiters = ReadAfterWrite(lambda: model)
    first = asyncio.create_task(waiters.wait("e-2", timeout_s=30.0))
    second = asyncio.create_task(waiters.wait("e-2", timeout_s=30.0))
    other = asyncio.create_task(waiters.wait("e-3", timeout_s=30.0))
    await asyncio.sleep(0.01)
    assert waiters.waiting == 3
    started = time.monotonic()
    event = view("e-2")
    model.apply(event)
    waiters.events_applied([view("e-9"), event])  # what the consumer does per delivery
    assert await first is True and await second is True
    assert time.monotonic() - started < 1.0
    assert not other.done() and waiters.waiting == 1
    other.cancel()
    await asyncio.gather(other, return_exceptions=True)
    assert waiters.waiting == 0  # a cancelled request leaves nothing behind


async def test_an_event_that_never_comes_waits_the_timeout_and_says_so() -> None:
    waiters = ReadAfterWrite(new_model)
    started = time.monotonic()
    assert await waiters.wait("never", timeout_s=0.2) is False
    assert 0.19 <= time.monotonic() - started < 2.0  # the loop may fire a hair early
    assert waiters.waiting == 0


async def test_a_restored_model_is_the_one_asked() -> None:
    """A restore swaps the runtime's model: its remembered ids count from then on."""
    models = [new_model()]
    waiters = ReadAfterWrite(lambda: models[0])
    assert await waiters.wait("e-4", timeout_s=0.01) is False
    restored = new_model()
    restored.apply(view("e-4"))
    models[0] = restored
    assert await waiters.wait("e-4", timeout_s=30.0) is True
