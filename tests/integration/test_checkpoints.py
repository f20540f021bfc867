"""Checkpoints and recovery against the real stores and the real RabbitMQ.

MongoDB here is the nx-27017 wire-protocol server (or RECSRV_TEST_MONGODB_URL); the
file store writes under the test's tmp_path.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog
from aiohttp.test_utils import TestClient
from pymongo import AsyncMongoClient

from recsrv.config import AuthConfig, BrokerConfig, StoreConfig
from recsrv.store import CheckpointHead, ChunkList
from recsrv.store.files import FileStore
from recsrv.store.mongo import MongoStore
from tests.conftest import (
    JSON,
    NxServer,
    RabbitMQ,
    ServerFactory,
    item_seen,
    marker,
    post_events,
    wait_for_events,
    wait_until,
)
from tests.integration.test_metrics import scrape_until, value

Client = TestClient[Any, Any]
TS = 1_700_000_000


def shop_events(count: int, start: int = 0, users: bool = True) -> list[dict[str, Any]]:
    """A deterministic stream: sessions browsing, carting and buying, with event ids."""
    events: list[dict[str, Any]] = []
    for n in range(start, start + count):
        session = f"s{n // 12}"
        kind = ("view", "view", "click", "add_to_cart", "view", "purchase")[n % 6]
        event: dict[str, Any] = {
            "type": kind,
            "session_id": session,
            "item_id": f"i{(n * 7919) % 211}",
            "ts": TS + n,
            "event_id": f"e{n}",
        }
        if users and (n // 12) % 3 == 0:
            event["user_id"] = f"u{(n // 12) % 17}"
        events.append(event)
    return events


QUERIES: list[dict[str, str]] = [
    *({"session_id": f"s{n}"} for n in range(0, 400, 37)),
    *({"user_id": f"u{n}"} for n in range(0, 17, 4)),
    *({"item_id": f"i{n}", "k": "20"} for n in range(0, 211, 53)),
]


async def answers(client: Client) -> list[Any]:
    """What the fixed set of queries answers, without the model position."""
    result = []
    for query in QUERIES:
        body = await (await client.get("/v1/recommendations", params=query)).json()
        result.append((body["items"], body["strategy"]))
    for item in ("i0", "i53", "i106"):
        body = await (await client.get(f"/v1/items/{item}/similar")).json()
        result.append(body["items"])
    return result


async def checkpoint_now(client: Client, **headers: str) -> dict[str, Any]:
    response = await client.post("/v1/admin/checkpoint", headers=headers)
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def wait_ready(client: Client, within_s: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + within_s
    while True:
        response = await client.get("/readyz")
        if response.status == 200:
            body: dict[str, Any] = await response.json()
            return body
        if time.monotonic() > deadline:
            raise AssertionError(await response.text())
        await asyncio.sleep(0.05)


async def publish_all(amqp_publish: Any, events: list[dict[str, Any]], per: int = 100) -> None:
    for start in range(0, len(events), per):
        await amqp_publish(events[start : start + per])


async def test_clean_restart_restores_with_no_replay(
    make_server: ServerFactory,
    amqp_config: BrokerConfig,
    amqp_publish: Any,
    mongo_store: StoreConfig,
) -> None:
    first = await make_server(broker=amqp_config, store=mongo_store)
    await publish_all(amqp_publish, shop_events(3000))
    await wait_for_events(first, 3000)
    before = await answers(first)
    model = (await (await first.get("/v1/popular")).json())["model"]
    await first.close()  # clean shutdown writes a final checkpoint

    second = await make_server(broker=amqp_config, store=mongo_store)
    ready = await wait_ready(second)
    assert ready["offset"] == model["offset"]
    assert await answers(second) == before
    assert (await (await second.get("/v1/popular")).json())["model"] == model
    metrics = await (await second.get("/metrics")).text()
    assert "recsrv_messages_consumed_total 0.0" in metrics  # nothing was replayed


async def test_embedded_mode_restores_from_checkpoint_files(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    store = StoreConfig(url=f"file://{tmp_path / 'state'}")
    first = await make_server(store=store)
    for start in range(0, 1200, 300):
        await post_events(first, shop_events(300, start))
    await wait_for_events(first, 1200)
    before = await answers(first)
    await first.close()
    # One checkpoint, and the lock file of the checkpoint writer's lease.
    assert sorted(p.suffix for p in (tmp_path / "state").iterdir()) == [".data", ".json", ".lock"]

    second = await make_server(store=store)
    await wait_ready(second)
    assert await answers(second) == before
    model = (await (await second.get("/v1/popular")).json())["model"]
    # The in-process log starts empty each run; the state carries its event count.
    assert model == {"offset": -1, "events": 1200}
    await post_events(second, shop_events(12, 5000))
    await wait_for_events(second, 1212)


async def test_admin_checkpoint_keeps_the_configured_number(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    directory = tmp_path / "state"
    store = StoreConfig(url=f"file://{directory}", keep_checkpoints=2)
    auth = AuthConfig(secret_keys=("s3cret",), public_keys=("pub",))
    client = await make_server(store=store, auth=auth)
    assert (await client.post("/v1/admin/checkpoint")).status == 401
    wrong = {"Authorization": "Bearer nope"}
    assert (await client.post("/v1/admin/checkpoint", headers=wrong)).status == 401
    public = {"Authorization": "Bearer pub"}
    response = await client.post("/v1/admin/checkpoint", headers=public)
    assert response.status == 403
    assert (await response.json())["error"] == "forbidden"
    secret = {"Authorization": "Bearer s3cret"}
    ids = []
    for round_ in range(3):
        await post_events(client, shop_events(50, round_ * 50), headers=secret)
        await wait_for_events(client, 50 * (round_ + 1), headers=secret)
        info = await checkpoint_now(client, **secret)
        assert info["events"] == 50 * (round_ + 1)
        ids.append(info["id"])
    # Nothing changed since the last one: the same checkpoint answers.
    assert (await checkpoint_now(client, **secret))["id"] == ids[-1]
    kept = [info.id for info in await FileStore(str(directory)).complete()]
    assert kept == [ids[2], ids[1]]


class CrashingChunks(ChunkList):
    """A checkpoint whose third chunk never comes: the writer dies half way."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        taken = 0
        async for chunk in super().__aiter__():
            if taken == 2:
                raise OSError("simulated crash")
            taken += 1
            yield chunk


@pytest.mark.parametrize("kind", ["files", "mongodb"])
async def test_interrupted_checkpoint_leaves_the_previous_one_in_force(
    kind: str,
    make_server: ServerFactory,
    tmp_path: Path,
    mongo_store: StoreConfig,
) -> None:
    if kind == "files":
        config = StoreConfig(url=f"file://{tmp_path / 'state'}")
        store: Any = FileStore(str(tmp_path / "state"))
    else:
        config = mongo_store
        store = MongoStore(config.url)
    first = await make_server(store=config)
    await post_events(first, shop_events(600))
    await wait_for_events(first, 600)
    before = await answers(first)
    good = await checkpoint_now(first)

    # A newer checkpoint dies half way through its chunks.
    await store.open()
    broken = CheckpointHead(
        id="zzzz-broken", created_at=time.time() + 10, offset=10**9, events=10**9, format=1
    )
    with pytest.raises(Exception, match="simulated crash"):
        await store.write(CrashingChunks(broken, [b"a", b"b", b"c", b"d"]))
    assert [info.id for info in await store.complete()] == [good["id"]]
    await first.close()

    second = await make_server(store=config)
    await wait_ready(second)
    assert await answers(second) == before
    assert (await (await second.get("/v1/popular")).json())["model"]["events"] == 600
    # The next checkpoint clears what the broken one left behind.
    await post_events(second, shop_events(6, 600))
    await wait_for_events(second, 606)
    await checkpoint_now(second)
    if kind == "files":
        assert not list((tmp_path / "state").glob("zzzz-broken*"))
    else:
        chunks = store._database()["checkpoint_chunks"]
        assert await chunks.count_documents({"checkpoint": "zzzz-broken"}) == 0
    await store.close()


async def test_forget_removes_the_user_from_every_checkpoint(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    directory = tmp_path / "state"
    store = StoreConfig(url=f"file://{directory}", keep_checkpoints=5)
    client = await make_server(store=store)
    purchase = {
        "type": "purchase",
        "session_id": "s-x",
        "user_id": "u-gone",
        "items": [{"item_id": "milk"}, {"item_id": "eggs"}],
        "ts": TS,
    }
    await post_events(client, [purchase, *shop_events(100, users=False)])
    await wait_for_events(client, 101)
    await checkpoint_now(client)
    await post_events(client, shop_events(100, 100, users=False))
    await wait_for_events(client, 201)
    await checkpoint_now(client)
    assert len(await FileStore(str(directory)).complete()) == 2
    assert (await client.delete("/v1/users/u-gone")).status == 202
    await wait_for_events(client, 202)
    await checkpoint_now(client)
    remaining = await FileStore(str(directory)).complete()
    assert len(remaining) == 1
    assert b"u-gone" not in (directory / f"{remaining[0].id}.data").read_bytes()
    await client.close()
    second = await make_server(store=store)
    await wait_ready(second)
    body = await (await second.get("/v1/recommendations", params={"user_id": "u-gone"})).json()
    assert body["strategy"] == "popular"


# PyMongo leaks the socket of a connection attempt refused while the server is down
# (its PYTHON-3923); collect it here so the warning is not blamed on a later test.
# Only that warning is ignored, whether it is raised here or reported as an exception
# in the socket's finalizer; any other unraisable exception still fails the test.
# The timeout is above the sum of the test's own deadlines (about 150 s at worst; it
# takes 30 s here), so that a failure reports which wait ran out.
@pytest.mark.timeout(180)
@pytest.mark.filterwarnings("ignore:unclosed <socket:ResourceWarning")
@pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
)
async def test_mongodb_outage_keeps_serving_and_checkpoints_resume(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    server = NxServer(tmp_path, data_dir=str((tmp_path / "mongo").resolve()))
    (tmp_path / "mongo").mkdir()
    await asyncio.to_thread(server.start)
    store = StoreConfig(url=f"{server.url}/recsrv", checkpoint_interval_s=1)
    client = await make_server(store=store)
    try:
        await post_events(client, shop_events(100))
        await wait_for_events(client, 100)
        first = await checkpoint_now(client)
        await asyncio.to_thread(server.stop)
        with structlog.testing.capture_logs() as logs:
            for round_ in range(1, 4):
                await post_events(client, shop_events(100, round_ * 100))
                await wait_for_events(client, 100 * (round_ + 1))
                # A periodic checkpoint of this round's news has been tried and failed.
                await scrape_until(
                    client,
                    lambda samples, at_least=round_: (
                        (value(samples, "recsrv_checkpoint_failures_total") or 0) >= at_least
                    ),
                    f"{round_} failed checkpoint(s)",
                    within_s=10,
                )
            response = await client.post("/v1/admin/checkpoint")
            assert response.status == 503
            assert (await response.json())["error"] == "store_unavailable"
            ready = await wait_ready(client)
            assert any("checkpoints failing" in w for w in ready["warnings"])
            metrics = await (await client.get("/metrics")).text()
            assert "recsrv_checkpoint_store_up 0.0" in metrics
            assert "recsrv_checkpoint_failures_total" in metrics
        failures = [entry for entry in logs if entry["event"] == "checkpoint_failed"]
        assert len(failures) == 1  # once per outage, not once per attempt
        recs = await (await client.get("/v1/recommendations", params={"session_id": "s30"})).json()
        assert recs["model"]["events"] == 400  # serving from memory went on

        await asyncio.to_thread(server.start)
        deadline = time.monotonic() + 30
        while True:
            ready = await wait_ready(client)
            if not ready["warnings"]:
                break
            assert time.monotonic() < deadline, ready
            await asyncio.sleep(0.2)
        mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(server.url)
        documents = await mongo["recsrv"]["checkpoints"].find({"complete": 1}).to_list(None)
        await mongo.close()
        newest = max(documents, key=lambda d: d["created_at"])
        assert newest["events"] == 400
        assert newest["_id"] != first["id"]
    finally:
        await client.close()  # before the server goes: no connection attempt after it
        await asyncio.to_thread(server.stop)
        gc.collect()


async def test_replaying_the_same_events_changes_nothing(
    make_server: ServerFactory, amqp_config: BrokerConfig, amqp_publish: Any
) -> None:
    client = await make_server(broker=amqp_config)
    events = shop_events(2000)
    await publish_all(amqp_publish, events)
    await publish_all(amqp_publish, events)  # the same event ids, again
    await amqp_publish(marker("marker"))  # once it is applied, all before it are
    await wait_until(lambda: item_seen(client, "marker"), 20, "the marker applied")
    assert (await (await client.get("/v1/popular")).json())["model"]["events"] == 2001
    # The reference saw every event once (embedded mode; every event carries its ts).
    reference = await make_server()
    for start in range(0, 2000, 500):
        await post_events(reference, events[start : start + 500])
    await post_events(reference, [marker("marker")])
    await wait_for_events(reference, 2001)
    assert await answers(client) == await answers(reference)


# The consumer retries with back-off (up to 10 s between attempts) after the broker
# comes back; each wait below is bounded by its own deadline, whose sum stays inside
# this timeout so that a failure reports what did not happen.
@pytest.mark.timeout(150)
async def test_rabbitmq_restart_resumes_from_the_applied_offset(
    make_server: ServerFactory, amqp_config: BrokerConfig, rabbitmq: RabbitMQ
) -> None:
    client = await make_server(broker=amqp_config)
    published: set[str] = set()
    statuses: Counter[int] = Counter()
    stop = asyncio.Event()

    async def publisher() -> None:
        n = 0
        while True:
            batch = shop_events(20, n)
            response = await client.post("/v1/events", data=orjson.dumps(batch), headers=JSON)
            statuses[response.status] += 1
            if response.status == 202:
                published.update(e["event_id"] for e in batch)
                n += 20
                if stop.is_set():
                    return
            # A refused batch may still have reached the stream (its confirm lost with
            # the connection): it is sent again, and its event ids keep it counted once.
            # So the last batch sent is always one that was accepted.
            await asyncio.sleep(0.02)

    task = asyncio.create_task(publisher())
    try:
        await wait_for_events(client, 200, within_s=15)  # publishing and consuming
        await rabbitmq.stop()
        refused = statuses[503]
        await wait_until(
            lambda: statuses[503] > refused, 15, "a write refused while RabbitMQ is down"
        )
        await rabbitmq.start()
        after_restart = len(published)
        # The consumer reconnects (and with it the publishing channel) after its back-off.
        await wait_until(lambda: len(published) > after_restart, 30, "publishing resumed")
        stop.set()
        await asyncio.wait_for(task, 15)
    finally:
        task.cancel()
    unexpected = set(statuses) - {202, 503}
    assert not unexpected, statuses
    await post_events(client, [marker("marker-1")])
    await wait_until(lambda: item_seen(client, "marker-1"), 40, "the marker applied")
    model = (await (await client.get("/v1/popular")).json())["model"]
    # Every published event applied exactly once: none lost, none counted twice.
    assert model["events"] == len(published) + 1, statuses


async def test_mongodb_keeps_the_configured_number_and_forget_keeps_only_the_newest(
    make_server: ServerFactory, mongo_store: StoreConfig
) -> None:
    config = replace(mongo_store, keep_checkpoints=2)
    client = await make_server(store=config)
    store = MongoStore(config.url)
    await store.open()
    chunks = store._database()["checkpoint_chunks"]

    async def kept() -> tuple[list[str], list[str]]:
        """The complete checkpoints, newest first, and those that chunks belong to."""
        complete = [info.id for info in await store.complete()]
        return complete, sorted(await chunks.distinct("checkpoint"))

    async def newest_data() -> bytes:
        newest = (await store.complete())[0]
        return b"".join([chunk async for chunk in store.read(newest)])

    try:
        purchase = {
            "type": "purchase",
            "session_id": "s-x",
            "user_id": "u-gone",
            "items": [{"item_id": "milk"}],
            "ts": TS,
        }
        ids = []
        for round_ in range(3):
            events = shop_events(50, round_ * 50, users=False)
            await post_events(client, [purchase, *events] if round_ == 0 else events)
            await wait_for_events(client, 50 * (round_ + 1) + 1)
            ids.append((await checkpoint_now(client))["id"])
        assert await kept() == ([ids[2], ids[1]], sorted([ids[2], ids[1]]))
        assert b"u-gone" in await newest_data()  # stored as it is: the check below can fail

        assert (await client.delete("/v1/users/u-gone")).status == 202
        await wait_for_events(client, 152)
        newest = (await checkpoint_now(client))["id"]
        # The older ones still held the forgotten user: only the newest is left.
        assert await kept() == ([newest], [newest])
        assert b"u-gone" not in await newest_data()
    finally:
        await store.close()
