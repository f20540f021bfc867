"""Real `recsrv run` processes reading the same RabbitMQ stream and sharing one
checkpoint store (the MongoDB-wire server, as in production; a directory on one host
too): at the same offset they answer alike, item by item and score by score; one at a
time writes checkpoints, under a lease that another takes over when the writer dies; a
backend that wrote through one reads its write on another with after=EVENT_ID; and
behind HAProxy (Debian's, with deploy/haproxy.cfg) the writer can die under load
without a GET failing, its SSE subscribers reconnecting to another replica, and come
back restored from the checkpoint another replica wrote.
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

from recsrv.config import BrokerConfig, StoreConfig
from tests.conftest import (
    JSON,
    ROOT,
    broker_env,
    end_process,
    free_port,
    next_message,
    spawn_recsrv,
    wait_until,
)

# Short, so that a takeover fits in a test; renewed every third of it.
LEASE_S = 3.0


class Replica:
    """One `recsrv run` under a name of its own; started again after a kill, it keeps
    its name and port and logs to a file of its own (run-1.log, run-2.log, ...)."""

    def __init__(self, name: str, workdir: Path, env: dict[str, str]) -> None:
        self.name, self.workdir = name, workdir
        self.env = {**env, "RECSRV_SERVER__INSTANCE": name}
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.runs = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.log = workdir / "none.log"

    def start(self) -> None:
        self.runs += 1
        rundir = self.workdir / f"run-{self.runs}"
        rundir.mkdir(parents=True)
        self.process, self.log = spawn_recsrv(rundir, self.port, self.env)

    def kill(self) -> None:
        """SIGKILL: no goodbye to HAProxy, the streams or the store."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def logged(self, event: str) -> list[dict[str, Any]]:
        entries = [orjson.loads(line) for line in self.log.read_bytes().splitlines() if line]
        return [entry for entry in entries if entry.get("event") == event]


def start_replicas(
    tmp_path: Path, env: dict[str, str], names: tuple[str, ...]
) -> Iterator[list[Replica]]:
    started: list[Replica] = []
    try:
        for name in names:
            replica = Replica(name, tmp_path / name, env)
            replica.start()
            started.append(replica)
        yield started
    finally:
        running = [r.process for r in started if r.process is not None]
        for process in running:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in running:
            end_process(process, within_s=20)


def replica_env(amqp_config: BrokerConfig) -> dict[str, str]:
    return {
        **broker_env(amqp_config),
        "RECSRV_STORE__LEASE_S": str(LEASE_S),
        "RECSRV_STORE__CHECKPOINT_INTERVAL_S": "3600",  # only those the test asks for
    }


@pytest.fixture
def replicas(
    tmp_path: Path, amqp_config: BrokerConfig, mongo_store: StoreConfig
) -> Iterator[list[Replica]]:
    """Three `recsrv run` on the stream of amqp_config (names of this test's own),
    sharing one MongoDB database."""
    env = {**replica_env(amqp_config), "RECSRV_STORE__URL": mongo_store.url}
    yield from start_replicas(tmp_path, env, ("replica-a", "replica-b", "replica-c"))


@pytest.fixture(params=["files", "mongodb"])
def pair_sharing_a_store(
    request: pytest.FixtureRequest, tmp_path: Path, amqp_config: BrokerConfig
) -> Iterator[list[Replica]]:
    """Two `recsrv run` sharing one store: a directory, or a MongoDB database."""
    if request.param == "files":
        url = f"file://{tmp_path / 'shared-store'}"
    else:
        url = request.getfixturevalue("mongo_store").url
    env = {**replica_env(amqp_config), "RECSRV_STORE__URL": url}
    yield from start_replicas(tmp_path, env, ("replica-a", "replica-b"))


async def get(http: aiohttp.ClientSession, url: str, **params: str) -> Any:
    async with http.get(url, params=params) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def ready(http: aiohttp.ClientSession, replica: Replica) -> bool:
    assert replica.process is not None and replica.process.poll() is None, replica.log.read_text()
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
    first = replicas[0]
    async with aiohttp.ClientSession() as http:
        for replica in replicas:
            await wait_until(lambda r=replica: ready(http, r), 30, f"{replica.name} ready")
        # Written through the first replica, applied by every one from the stream.
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
        for other in replicas[1:]:
            for a, b in zip(answers[first.name], answers[other.name], strict=True):
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
    first, second, _ = replicas
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
    """deploy/haproxy.cfg in front of the three replicas."""
    executable = shutil.which("haproxy") or "/usr/sbin/haproxy"
    port = free_port()
    env = {
        **os.environ,
        "RECSRV_LISTEN": f"127.0.0.1:{port}",
        "RECSRV_1": replicas[0].base.removeprefix("http://"),
        "RECSRV_2": replicas[1].base.removeprefix("http://"),
        "RECSRV_3": replicas[2].base.removeprefix("http://"),
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


async def writers(http: aiohttp.ClientSession, replicas: list[Replica]) -> list[str]:
    """The names of the replicas whose /readyz says they hold the checkpoint lease."""
    held = []
    for replica in replicas:
        body = await get(http, replica.base + "/readyz")
        if body["checkpoint_writer"]:
            held.append(replica.name)
    return held


async def the_writer(http: aiohttp.ClientSession, replicas: list[Replica]) -> Replica:
    """The one replica that holds the lease, once one does."""

    async def one_holds() -> bool:
        return len(await writers(http, replicas)) == 1

    await wait_until(one_holds, LEASE_S + 5, "one replica holding the checkpoint lease")
    (name,) = await writers(http, replicas)
    return next(replica for replica in replicas if replica.name == name)


async def checkpoint(http: aiohttp.ClientSession, replica: Replica) -> tuple[int, Any]:
    async with http.post(replica.base + "/v1/admin/checkpoint") as response:
        return response.status, await response.json()


async def post_events(http: aiohttp.ClientSession, base: str, events: list[dict[str, Any]]) -> None:
    async with http.post(base + "/v1/events", data=orjson.dumps(events), headers=JSON) as response:
        assert response.status == 202, await response.text()


async def test_replicas_sharing_a_store_write_checkpoints_one_at_a_time(
    pair_sharing_a_store: list[Replica],
) -> None:
    """One writer; the other refuses with 409 and takes over within store.lease_s of
    the writer's death; restarted, the dead one restores the survivor's checkpoint."""
    replicas = pair_sharing_a_store
    async with aiohttp.ClientSession() as http:
        for replica in replicas:
            await wait_until(lambda r=replica: ready(http, r), 30, f"{replica.name} ready")
        events = history()
        await post_events(http, replicas[0].base, [*events[:60], {**events[60], "event_id": "m1"}])
        writer = await the_writer(http, replicas)
        (other,) = [replica for replica in replicas if replica is not writer]
        for replica in replicas:
            await get(http, replica.base + "/v1/popular", after="m1")
        for replica in replicas:  # what a Prometheus alert on the sum would read
            async with http.get(replica.base + "/metrics") as response:
                exposition = await response.text()
            held = 1.0 if replica is writer else 0.0
            assert f"recsrv_checkpoint_writer {held}" in exposition
        status, body = await checkpoint(http, writer)
        assert status == 200, body
        assert body["events"] == 61
        status, body = await checkpoint(http, other)
        assert status == 409 and body["error"] == "not_checkpoint_writer", body
        assert writer.name in body["message"]

        writer.kill()
        killed_at = time.monotonic()

        async def took_over() -> bool:
            return (await get(http, other.base + "/readyz"))["checkpoint_writer"] is True

        await wait_until(took_over, LEASE_S + 5, f"{other.name} taking the lease over")
        # The lease lasts LEASE_S unrenewed (renewed every third of it), and a replica
        # without it asks every second: within LEASE_S of the death, plus that second.
        assert time.monotonic() - killed_at <= LEASE_S + 1.5
        await post_events(http, other.base, [*events[61:], {**events[-1], "event_id": "m2"}])
        await get(http, other.base + "/v1/popular", after="m2")
        status, newest = await checkpoint(http, other)
        assert status == 200, newest
        assert newest["events"] == len(events) + 1

        writer.start()  # the same name, a new process: the lease stays with the other
        await wait_until(lambda: ready(http, writer), 30, f"{writer.name} ready again")
        (restored,) = writer.logged("restored")
        assert restored["checkpoint"] == newest["id"]
        assert restored["events"] == len(events) + 1
        for path in ("/v1/recommendations?session_id=s29&k=8", "/v1/popular?k=10"):
            async with http.get(writer.base + path) as a, http.get(other.base + path) as b:
                first, second = await a.json(), await b.json()
            assert first["items"] == second["items"] and first["model"] == second["model"]
            assert first["model"]["events"] == len(events) + 1
        assert await writers(http, replicas) == [other.name]


async def test_behind_haproxy_the_writer_dies_under_load_and_no_get_fails(
    replicas: list[Replica], haproxy: str
) -> None:
    """Issue 13's failover, on one machine: three replicas sharing a MongoDB database
    behind HAProxy, four readers and four SSE subscribers; the checkpoint writer is
    killed, another takes the lease, the killed one comes back from that checkpoint."""
    async with aiohttp.ClientSession() as http:
        for replica in replicas:
            await wait_until(lambda r=replica: ready(http, r), 30, f"{replica.name} ready")
        await in_rotation(http, haproxy, {replica.name for replica in replicas})
        last = {"type": "view", "session_id": "s29", "item_id": "lamp", "event_id": "last"}
        published = [*history(), {**last, "ts": 1_700_010_000.0}]
        await post_events(http, haproxy, published)
        for replica in replicas:
            listed = await get(http, replica.base + "/v1/popular", after="last")
            assert listed["model"]["after"] is True
        doomed = await the_writer(http, replicas)
        survivors = [replica for replica in replicas if replica is not doomed]
        status, body = await checkpoint(http, doomed)
        assert status == 200, body
        # Live streams through HAProxy, spread over the replicas by round robin.
        stream_url = haproxy + "/v1/sessions/s29/stream?k=5"
        streams = []
        for _ in range(6):
            stream = await http.get(stream_url)
            assert stream.status == 200
            streams.append((stream, await next_message(stream)))
        listed = await get(http, survivors[0].base + "/v1/recommendations", session_id="s29", k="5")
        current = listed["items"]
        assert all(first.data["items"] == current for _, first in streams)

        # Readers hammer HAProxy while the writer is killed.
        statuses: list[int | str] = []
        stop = asyncio.Event()
        url = haproxy + "/v1/recommendations?session_id=s29&k=5"
        readers = [asyncio.create_task(read_until(http, url, stop, statuses)) for _ in range(4)]
        await asyncio.sleep(1.0)
        before = len(statuses)
        doomed.kill()
        killed_at = time.monotonic()
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

        # Another replica holds the lease within store.lease_s (plus a second's poll).
        new_writer = await the_writer(http, survivors)
        assert time.monotonic() - killed_at <= LEASE_S + 1.5 + 4.0  # the 4 s of readers
        more = [{**event, "session_id": "late-" + str(event["session_id"])} for event in history()]
        more[-1]["event_id"] = "more"
        published += more
        await post_events(http, haproxy, more)
        await get(http, new_writer.base + "/v1/popular", after="more")
        status, newest = await checkpoint(http, new_writer)
        assert status == 200, newest

        # Back: restored from the checkpoint another replica wrote, then caught up.
        doomed.start()
        await wait_until(lambda: ready(http, doomed), 30, f"{doomed.name} ready again")
        (restored,) = doomed.logged("restored")
        assert restored["checkpoint"] == newest["id"]
        queries = ["/v1/recommendations?session_id=s29&k=8", "/v1/popular?k=10"]
        answers = {}
        for replica in replicas:
            answers[replica.name] = []
            for path in queries:
                async with http.get(replica.base + path + "&after=more") as response:
                    answers[replica.name].append(await response.json())
        for replica in replicas:
            for answer, reference in zip(answers[replica.name], answers[doomed.name], strict=True):
                # No event lost or counted twice, on any replica.
                assert answer["model"]["events"] == len(published)
                assert answer["items"] == reference["items"]
