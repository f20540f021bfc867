"""Shared fixtures: real RabbitMQ names per test, and a real HTTP server per test.

Integration tests talk to the RabbitMQ at RECSRV_TEST_AMQP_URL (default: the local
one, guest/guest). Each test gets its own exchange and queue names, deleted
afterwards, so runs never see each other's events.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

import aio_pika
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from recsrv.app import build_app
from recsrv.broker.memory import MemoryEventLog
from recsrv.config import BrokerConfig, Config

AMQP_URL = os.environ.get("RECSRV_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


@pytest.fixture
def broker_names() -> dict[str, str]:
    run = uuid.uuid4().hex[:10]
    return {
        "exchange": f"recsrv.test.{run}.events",
        "queue": f"recsrv.test.{run}.events.stream",
        "invalid_exchange": f"recsrv.test.{run}.events.invalid",
    }


@pytest.fixture
async def amqp_config(broker_names: dict[str, str]) -> AsyncIterator[BrokerConfig]:
    """A BrokerConfig for the real RabbitMQ with unique names; deletes them afterwards."""
    yield BrokerConfig(url=AMQP_URL, max_age="1h", **broker_names)
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        for queue in (broker_names["queue"], broker_names["invalid_exchange"]):
            await channel.queue_delete(queue)
        for exchange in (broker_names["exchange"], broker_names["invalid_exchange"]):
            await channel.exchange_delete(exchange)


@pytest.fixture
async def amqp_publish(
    amqp_config: BrokerConfig,
) -> AsyncIterator[Callable[[Any], Awaitable[None]]]:
    """Publish a JSON value (or raw bytes) to the test exchange, with confirms."""
    connection = await aio_pika.connect(AMQP_URL)
    channel = await connection.channel(publisher_confirms=True)

    async def publish(body: Any, routing_key: str = "test") -> None:
        exchange = await channel.get_exchange(amqp_config.exchange)
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        await exchange.publish(aio_pika.Message(data), routing_key=routing_key)

    yield publish
    await connection.close()


ServerFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
async def make_server() -> AsyncIterator[ServerFactory]:
    """Start the whole app on a real loopback port; close every one made afterwards."""
    clients: list[TestClient[Any, Any]] = []

    async def make(config: Config | None = None, **sections: Any) -> TestClient[Any, Any]:
        config = replace(config or Config(), **sections)
        log = MemoryEventLog() if config.broker.url == "memory://" else None
        client: TestClient[Any, Any] = TestClient(TestServer(build_app(config, log)))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in reversed(clients):
        await client.close()


@pytest.fixture(params=["memory", "amqp"])
async def client(
    request: pytest.FixtureRequest, make_server: ServerFactory, amqp_config: BrokerConfig
) -> TestClient[Any, Any]:
    """The server in embedded mode and against the real RabbitMQ: same behaviour."""
    if request.param == "memory":
        return await make_server()
    return await make_server(broker=amqp_config)


async def wait_for_events(
    client: TestClient[Any, Any], events: int, within_s: float = 10.0
) -> dict[str, Any]:
    """Poll until the model has applied at least `events` events; return its info."""
    deadline = time.monotonic() + within_s
    while True:
        response = await client.get("/v1/popular", params={"k": "1"})
        model: dict[str, Any] = (await response.json())["model"]
        if model["events"] >= events:
            return model
        if time.monotonic() > deadline:
            raise AssertionError(f"model reached {model} but {events} events were expected")
        await asyncio.sleep(0.02)


async def post_events(client: TestClient[Any, Any], events: Any) -> Any:
    response = await client.post("/v1/events", data=orjson.dumps(events), headers=JSON)
    assert response.status == 202, await response.text()
    return await response.json()


JSON = {"Content-Type": "application/json"}
