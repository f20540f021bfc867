"""Two real `recsrv run` processes reading the same RabbitMQ stream, each with a store of
its own: at the same offset they answer alike, item by item and score by score, and a
backend that wrote through one reads its write on the other with after=EVENT_ID.

(Both write checkpoints, each to its own store: one writer per store is the rule until
replicas share a store under a lease.)
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from tests.conftest import (
    AMQP_URL,
    JSON,
    delete_broker_names,
    free_port,
    new_broker_names,
    spawn_recsrv,
    wait_until,
)


class Replica:
    def __init__(self, name: str, process: subprocess.Popen[bytes], port: int, log: Path):
        self.name, self.process, self.log = name, process, log
        self.base = f"http://127.0.0.1:{port}"


@pytest.fixture
async def broker_names() -> AsyncIterator[dict[str, str]]:
    names = new_broker_names()
    yield names
    await delete_broker_names(names)


@pytest.fixture
def replicas(tmp_path: Path, broker_names: dict[str, str]) -> Iterator[list[Replica]]:
    env = {"RECSRV_BROKER__URL": AMQP_URL}
    env.update({f"RECSRV_BROKER__{key.upper()}": value for key, value in broker_names.items()})
    started: list[Replica] = []
    try:
        for name in ("replica-a", "replica-b"):
            workdir = tmp_path / name
            workdir.mkdir()
            port = free_port()
            process, log = spawn_recsrv(workdir, port, {**env, "RECSRV_SERVER__INSTANCE": name})
            started.append(Replica(name, process, port, log))
        yield started
    finally:
        for replica in started:
            if replica.process.poll() is None:
                replica.process.send_signal(signal.SIGTERM)
        for replica in started:
            try:
                replica.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                replica.process.kill()
                replica.process.wait()


async def get(http: aiohttp.ClientSession, url: str, **params: str) -> Any:
    async with http.get(url, params=params) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def ready(http: aiohttp.ClientSession, replica: Replica) -> bool:
    assert replica.process.poll() is None, replica.log.read_text()
    try:
        async with http.get(replica.base + "/readyz") as response:
            return response.status == 200
    except aiohttp.ClientConnectionError:
        return False


def history() -> list[dict[str, Any]]:
    """Sessions over a small shop: browsing, carts, purchases, some with users."""
    shelves = [["tent", "stove", "mat", "lamp"], ["pan", "pot", "lid"], ["hoe", "rake", "seed"]]
    events: list[dict[str, Any]] = []
    ts = 1_700_000_000.0
    for n in range(30):
        shelf = shelves[n % 3]
        session = {"session_id": f"s{n}"} | ({"user_id": f"u{n % 7}"} if n % 2 else {})
        for step in range(4):
            item = shelf[(n + step) % len(shelf)]
            kind = "view" if step < 2 else ("add_to_cart" if step == 2 else "purchase")
            events.append({"type": kind, "item_id": item, "ts": ts, **session})
            ts += 30.0
    return events


async def test_replicas_at_the_same_offset_answer_alike(replicas: list[Replica]) -> None:
    first, second = replicas
    async with aiohttp.ClientSession() as http:
        for replica in replicas:
            await wait_until(lambda r=replica: ready(http, r), 30, f"{replica.name} ready")
        # Written through the first replica, applied by both from the stream.
        last = {"type": "view", "session_id": "s29", "item_id": "lamp", "event_id": "last"}
        body = orjson.dumps([*history(), {**last, "ts": 1_700_010_000.0}])
        async with http.post(first.base + "/v1/events", data=body, headers=JSON) as response:
            assert response.status == 202, await response.text()
        queries = [
            ("/v1/recommendations", {"session_id": "s29", "k": "8"}),
            ("/v1/recommendations", {"session_id": "s4", "user_id": "u3", "k": "8"}),
            ("/v1/recommendations", {"user_id": "u5", "k": "8"}),
            ("/v1/recommendations", {"item_id": "pot", "k": "5"}),
            ("/v1/items/stove/similar", {"k": "5"}),
            ("/v1/items/pan/bought-together", {"k": "5"}),
            ("/v1/popular", {"k": "10"}),
        ]
        answers = {}
        for replica in replicas:
            answers[replica.name] = [
                await get(http, replica.base + path, after="last", **params)
                for path, params in queries
            ]
        for a, b in zip(answers[first.name], answers[second.name], strict=True):
            assert a["model"]["after"] is True and b["model"]["after"] is True
            assert a["model"] == b["model"]  # the same offset, the same event count
            assert a["model"]["events"] == len(history()) + 1
            # Item by item and score by score: the same floats, not merely close ones.
            assert a["items"] == b["items"] and a["strategy"] == b["strategy"]
        assert any(len(answer["items"]) >= 5 for answer in answers[first.name])


async def test_after_on_another_replica_waits_for_the_write(replicas: list[Replica]) -> None:
    """A backend posts to one replica and reads at once from the other: after=EVENT_ID
    makes the read wait for the event, and an id that never comes answers 200 with
    model.after false once server.after_timeout_ms (500) has passed."""
    first, second = replicas
    async with aiohttp.ClientSession() as http:
        for replica in replicas:
            await wait_until(lambda r=replica: ready(http, r), 30, f"{replica.name} ready")
        for n in range(5):
            event: dict[str, Any] = {"type": "view", "session_id": "buyer", "item_id": f"item-{n}"}
            event |= {"ts": 1_700_000_000.0 + n, "event_id": f"e-{n}"}
            async with http.post(
                first.base + "/v1/events", data=orjson.dumps(event), headers=JSON
            ) as response:
                assert response.status == 202
            listed = await get(
                http, second.base + "/v1/recommendations", session_id="buyer", after=f"e-{n}"
            )
            assert listed["model"]["after"] is True
            assert listed["model"]["events"] == n + 1
            assert listed["strategy"] == "session"
        started = time.monotonic()
        never = await get(http, second.base + "/v1/popular", after="never-posted")
        assert never["model"]["after"] is False
        assert 0.49 <= time.monotonic() - started < 5.0
        ready_body = await get(http, second.base + "/readyz")
        assert ready_body["instance"] == "replica-b"
