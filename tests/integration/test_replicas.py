"""Two real `recsrv run` processes reading the same RabbitMQ stream, each with a store of
its own: at the same offset they answer alike, item by item and score by score; a
backend that wrote through one reads its write on the other with after=EVENT_ID; and
behind HAProxy (Debian's, with deploy/haproxy.cfg) one of them can die under load
without a GET failing, its SSE subscribers reconnecting to the other.

(Both write checkpoints, each to its own store: one writer per store is the rule until
replicas share a store under a lease.)
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from recsrv.config import BrokerConfig
from tests.conftest import (
    JSON,
    ROOT,
    end_process,
    free_port,
    next_message,
    spawn_recsrv,
    wait_until,
)


class Replica:
    def __init__(self, name: str, process: subprocess.Popen[bytes], port: int, log: Path):
        self.name, self.process, self.log = name, process, log
        self.base = f"http://127.0.0.1:{port}"


@pytest.fixture
def replicas(tmp_path: Path, amqp_config: BrokerConfig) -> Iterator[list[Replica]]:
    """Two `recsrv run` on the stream of amqp_config (names of this test's own)."""
    env = {
        "RECSRV_BROKER__URL": amqp_config.url,
        "RECSRV_BROKER__EXCHANGE": amqp_config.exchange,
        "RECSRV_BROKER__QUEUE": amqp_config.queue,
        "RECSRV_BROKER__INVALID_EXCHANGE": amqp_config.invalid_exchange,
        "RECSRV_BROKER__MAX_AGE": amqp_config.max_age,
    }
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
            end_process(replica.process, within_s=20)


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


@pytest.fixture
def haproxy(tmp_path: Path, replicas: list[Replica]) -> Iterator[str]:
    """deploy/haproxy.cfg in front of the two replicas; its third server is a port where
    nothing listens, as a replica that is down from the start."""
    executable = shutil.which("haproxy") or "/usr/sbin/haproxy"
    port = free_port()
    env = {
        **os.environ,
        "RECSRV_LISTEN": f"127.0.0.1:{port}",
        "RECSRV_1": replicas[0].base.removeprefix("http://"),
        "RECSRV_2": replicas[1].base.removeprefix("http://"),
        "RECSRV_3": f"127.0.0.1:{free_port()}",
    }
    with (tmp_path / "haproxy.log").open("wb") as log:
        process = subprocess.Popen(
            [executable, "-db", "-f", str(ROOT / "deploy" / "haproxy.cfg")],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        end_process(process)


async def in_rotation(http: aiohttp.ClientSession, haproxy: str, names: set[str]) -> None:
    """Until HAProxy has sent /readyz to every replica in `names`."""
    seen: set[str] = set()

    async def all_seen() -> bool:
        try:
            async with http.get(haproxy + "/readyz") as response:
                if response.status == 200:
                    seen.add((await response.json())["instance"])
        except aiohttp.ClientError:
            pass
        return seen == names

    await wait_until(all_seen, 30, f"HAProxy sending to {sorted(names)}")


async def read_until(
    http: aiohttp.ClientSession, url: str, stop: asyncio.Event, statuses: list[int | str]
) -> None:
    """GET `url` again and again until `stop`, recording each status (or error)."""
    while not stop.is_set():
        try:
            async with http.get(url) as response:
                await response.read()
                statuses.append(response.status)
        except aiohttp.ClientError as exc:
            statuses.append(repr(exc))


async def has_ended(stream: aiohttp.ClientResponse) -> bool:
    """Whether a live stream was cut (its replica died), as opposed to open and quiet."""
    try:
        await next_message(stream, within_s=0.5)
    except (EOFError, aiohttp.ClientPayloadError):  # HAProxy cuts the chunked body
        return True
    except TimeoutError:
        return False
    return False


async def test_behind_haproxy_a_replica_dies_under_load_and_no_get_fails(
    replicas: list[Replica], haproxy: str
) -> None:
    doomed, survivor = replicas
    async with aiohttp.ClientSession() as http:
        for replica in replicas:
            await wait_until(lambda r=replica: ready(http, r), 30, f"{replica.name} ready")
        await in_rotation(http, haproxy, {"replica-a", "replica-b"})
        last = {"type": "view", "session_id": "s29", "item_id": "lamp", "event_id": "last"}
        body = orjson.dumps([*history(), {**last, "ts": 1_700_010_000.0}])
        async with http.post(haproxy + "/v1/events", data=body, headers=JSON) as response:
            assert response.status == 202, await response.text()
        for replica in replicas:
            listed = await get(http, replica.base + "/v1/popular", after="last")
            assert listed["model"]["after"] is True
        # Live streams through HAProxy, spread over the replicas by round robin.
        stream_url = haproxy + "/v1/sessions/s29/stream?k=5"
        streams = []
        for _ in range(4):
            stream = await http.get(stream_url)
            assert stream.status == 200
            streams.append((stream, await next_message(stream)))
        listed = await get(http, survivor.base + "/v1/recommendations", session_id="s29", k="5")
        current = listed["items"]
        assert all(first.data["items"] == current for _, first in streams)

        # Readers hammer HAProxy while the first replica is killed.
        statuses: list[int | str] = []
        stop = asyncio.Event()
        url = haproxy + "/v1/recommendations?session_id=s29&k=5"
        readers = [asyncio.create_task(read_until(http, url, stop, statuses)) for _ in range(4)]
        await asyncio.sleep(1.0)
        before = len(statuses)
        doomed.process.kill()  # SIGKILL: no goodbye to HAProxy or to the streams
        doomed.process.wait()
        await asyncio.sleep(4.0)  # past HAProxy's health checks (fall 2, inter 1 s)
        stop.set()
        await asyncio.gather(*readers)
        assert before > 20 and len(statuses) > before + 20
        failed = [status for status in statuses if status != 200]
        assert not failed, failed[:5]

        # The killed replica's subscribers lost their stream; through HAProxy again,
        # with the id they last saw, they get the current list at once.
        ended = [first for stream, first in streams if await has_ended(stream)]
        for stream, _ in streams:
            stream.close()
        assert ended, "no stream was on the killed replica"
        for first in ended:
            started = time.monotonic()
            headers = {"Last-Event-ID": first.id or ""}
            async with http.get(stream_url, headers=headers) as again:
                assert again.status == 200
                message = await next_message(again)
            assert time.monotonic() - started < 2.0
            assert message.data["items"] == current
