"""Restore falls back past a damaged checkpoint, in a real `recsrv run`, on both stores.

Each test keeps a stream of 660 events in the real RabbitMQ and two checkpoints of it,
an older one after 300 events and a newer one after 600, written by the app in this
process (with small chunks, so that a MongoDB checkpoint has several). It then damages
the newer checkpoint (or the settings, or the store), starts `python -m recsrv run`
and waits until that process is ready and has read the stream to its end. Its state
must hold exactly the 660 events (each applied once: they carry no `event_id` that
would hide a second application), it must have replayed exactly the messages after
the checkpoint it restored, and its log must name the checkpoint it skipped, why,
and the one it restored.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import structlog
from bson import Binary
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from recsrv import checkpointer
from recsrv.broker.memory import MemoryEventLog
from recsrv.checkpointer import Checkpointer
from recsrv.config import BrokerConfig, Config, StoreConfig
from recsrv.errors import CheckpointDamaged, StoreError
from recsrv.runtime import Runtime
from recsrv.store import CheckpointInfo, codec
from recsrv.store.files import FileStore
from tests.conftest import (
    NxServer,
    ServerFactory,
    free_port,
    post_events,
    spawn_recsrv,
    wait_for_events,
)
from tests.integration.test_checkpoints import checkpoint_now, shop_events
from tests.integration.test_crash import env_for

# The MongoDB-unreachable test waits out PyMongo's 5 s server selection before the
# first retry; every wait below has its own deadline, well inside this timeout.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

PER_MESSAGE = 100
OLDER, NEWER, TOTAL = 300, 600, 660  # events in the stream at each checkpoint, at the end
MESSAGES = {OLDER: 3, NEWER: 6, TOTAL: 7}  # messages in the stream at the same points
READY_WITHIN_S = 30.0
SMALL_CHUNK = 16 * 1024


def stream(count: int, start: int = 0) -> list[dict[str, Any]]:
    """Shop events without event ids: an event applied twice would count twice."""
    events = shop_events(count, start)
    for event in events:
        del event["event_id"]
    return events


# ---- the stores, and how each is damaged ------------------------------------------


class FileCheckpoints:
    """A file store in the test's directory, seen from outside."""

    kind = "files"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.config = StoreConfig(url=f"file://{directory}", checkpoint_interval_s=3600)

    async def delete_data(self, checkpoint: str) -> None:
        (self.directory / f"{checkpoint}.data").unlink()

    async def delete_chunk(self, checkpoint: str) -> None:
        """A data file that lost its end (all of it is one file here)."""
        path = self.directory / f"{checkpoint}.data"
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])

    async def flip_bytes(self, checkpoint: str) -> None:
        path = self.directory / f"{checkpoint}.data"
        data = bytearray(path.read_bytes())
        middle = len(data) // 2
        data[middle : middle + 8] = bytes(b ^ 0xFF for b in data[middle : middle + 8])
        path.write_bytes(bytes(data))

    async def add_complete_without_data(self, like: str) -> str:
        """Metadata marked complete, newer than `like`, whose data was never written."""
        metadata = orjson.loads((self.directory / f"{like}.json").read_bytes())
        checkpoint = f"{like}-nodata"
        metadata.update(id=checkpoint, created_at=metadata["created_at"] + 1, complete=1)
        (self.directory / f"{checkpoint}.json").write_bytes(orjson.dumps(metadata))
        return checkpoint


class MongoCheckpoints:
    """A MongoDB store (a database of the test's own), seen from outside."""

    kind = "mongodb"

    def __init__(self, config: StoreConfig) -> None:
        self.config = config

    @contextlib.asynccontextmanager
    async def database(self) -> AsyncIterator[AsyncDatabase[dict[str, Any]]]:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(self.config.url)
        try:
            yield client.get_default_database()
        finally:
            await client.close()

    async def delete_data(self, checkpoint: str) -> None:
        async with self.database() as db:
            deleted = await db["checkpoint_chunks"].delete_many({"checkpoint": checkpoint})
        assert deleted.deleted_count > 1  # small chunks: the checkpoint had several

    async def delete_chunk(self, checkpoint: str) -> None:
        async with self.database() as db:
            deleted = await db["checkpoint_chunks"].delete_one({"_id": f"{checkpoint}.000001"})
        assert deleted.deleted_count == 1

    async def flip_bytes(self, checkpoint: str) -> None:
        # Deleted and inserted again: nx-27017 cannot replace documents holding binary.
        async with self.database() as db:
            chunks = db["checkpoint_chunks"]
            document = await chunks.find_one({"_id": f"{checkpoint}.000000"})
            assert document is not None
            data = bytearray(document["data"])
            data[100:108] = bytes(b ^ 0xFF for b in data[100:108])
            await chunks.delete_one({"_id": document["_id"]})
            await chunks.insert_one({**document, "data": Binary(bytes(data))})

    async def add_complete_without_data(self, like: str) -> str:
        """Metadata marked complete, newer than `like`, without a single chunk."""
        async with self.database() as db:
            metadata = await db["checkpoints"].find_one({"_id": like})
            assert metadata is not None
            checkpoint = f"{like}-nodata"
            metadata.update(
                _id=checkpoint, id=checkpoint, created_at=metadata["created_at"] + 1, complete=1
            )
            chunk_ids = [f"{checkpoint}.{seq:06d}" for seq in range(metadata["chunks"])]
            metadata["chunk_ids"] = chunk_ids
            await db["checkpoints"].insert_one(metadata)
        return checkpoint


Checkpoints = FileCheckpoints | MongoCheckpoints

# What recsrv logs as the reason when each damage above is done to a checkpoint.
REASONS = {
    "delete_data": {"files": "No such file", "mongodb": "lacks chunk 0"},
    "delete_chunk": {"files": "bytes, its metadata says", "mongodb": "lacks chunk 1"},
    "flip_bytes": {"files": "checksum mismatch", "mongodb": "checksum mismatch"},
    "add_complete_without_data": {"files": "No such file", "mongodb": "lacks chunk 0"},
}


@pytest.fixture(params=["files", "mongodb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Checkpoints:
    if request.param == "files":
        return FileCheckpoints(tmp_path / "checkpoints")
    return MongoCheckpoints(request.getfixturevalue("mongo_store"))


# ---- the stream and its two checkpoints -------------------------------------------


Publish = Callable[[Any], Awaitable[None]]
Prepare = Callable[[StoreConfig], Awaitable[tuple[str, str]]]


async def publish(amqp_publish: Publish, events: list[dict[str, Any]]) -> None:
    for start in range(0, len(events), PER_MESSAGE):
        await amqp_publish(events[start : start + PER_MESSAGE])


@pytest.fixture
def prepare(
    make_server: ServerFactory,
    amqp_config: BrokerConfig,
    amqp_publish: Publish,
    monkeypatch: pytest.MonkeyPatch,
) -> Prepare:
    """Fill the stream and write the two checkpoints into a store; their ids, oldest first."""
    monkeypatch.setattr(codec, "CHUNK_BYTES", SMALL_CHUNK)  # only for this process

    async def prepare(store: StoreConfig) -> tuple[str, str]:
        client = await make_server(broker=amqp_config, store=store)
        ids = []
        for start, end in ((0, OLDER), (OLDER, NEWER)):
            await publish(amqp_publish, stream(end - start, start))
            await wait_for_events(client, end)
            ids.append((await checkpoint_now(client))["id"])
        await client.close()  # nothing changed since: no checkpoint at shutdown
        await publish(amqp_publish, stream(TOTAL - NEWER, NEWER))  # only the stream has these
        return ids[0], ids[1]

    return prepare


# ---- a real `recsrv run` ----------------------------------------------------------


@dataclass
class Recsrv:
    """One `python -m recsrv run` process and its JSON log."""

    process: subprocess.Popen[bytes]
    log: Path
    base: str
    http: aiohttp.ClientSession

    def logged(self, event: str) -> list[dict[str, Any]]:
        entries = []
        for line in self.log.read_bytes().splitlines():
            try:
                entry = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(entry, dict) and entry.get("event") == event:
                entries.append(entry)
        return entries

    def failure(self, message: str) -> AssertionError:
        return AssertionError(f"{message}\n--- recsrv log:\n{self.log.read_text()[-4000:]}")

    async def get(self, path: str, within_s: float = READY_WITHIN_S) -> tuple[int, Any]:
        """GET `path`, trying again while the process is not listening yet."""
        deadline = time.monotonic() + within_s
        while True:
            if self.process.poll() is not None:
                raise self.failure(f"recsrv exited with {self.process.returncode}")
            try:
                async with self.http.get(self.base + path) as response:
                    return response.status, await response.json()
            except aiohttp.ClientConnectionError as exc:
                if time.monotonic() > deadline:
                    raise self.failure(f"GET {path}: {exc!r} for {within_s} s") from exc
            await asyncio.sleep(0.1)

    async def wait_logged(self, event: str, within_s: float = READY_WITHIN_S) -> None:
        deadline = time.monotonic() + within_s
        while not self.logged(event):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise self.failure(f"no {event!r} logged within {within_s} s")
            await asyncio.sleep(0.1)

    async def wait_caught_up(self, within_s: float = READY_WITHIN_S) -> dict[str, Any]:
        """Poll /readyz until it is 200 with no lag: restored, and the stream read to
        its end (nothing more is published, so the state is final). Its model."""
        deadline = time.monotonic() + within_s
        while True:
            status, body = await self.get("/readyz", max(deadline - time.monotonic(), 0))
            if status == 200 and body["lag"] == 0:
                model: dict[str, Any] = (await self.get("/v1/popular?k=1"))[1]["model"]
                return model
            if time.monotonic() > deadline:
                raise self.failure(f"not caught up within {within_s} s: {body}")
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        """SIGTERM (a clean shutdown), SIGKILL if that takes over 20 s."""
        if self.process.poll() is None:
            self.process.terminate()
        try:
            await asyncio.to_thread(self.process.wait, 20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            await asyncio.to_thread(self.process.wait)

    async def replayed(self) -> int:
        """Messages read from the stream since the process started."""
        async with self.http.get(self.base + "/metrics") as response:
            for line in (await response.text()).splitlines():
                if line.startswith("recsrv_messages_consumed_total "):
                    return int(float(line.split()[1]))
        raise self.failure("no recsrv_messages_consumed_total in /metrics")


StartRecsrv = Callable[..., Awaitable[Recsrv]]


@pytest.fixture
async def start_recsrv(tmp_path: Path, amqp_config: BrokerConfig) -> AsyncIterator[StartRecsrv]:
    """Start `recsrv run` on the test's stream and a given store; always ended after."""
    started: list[Recsrv] = []
    http = aiohttp.ClientSession()

    async def start(store: StoreConfig, **env: str) -> Recsrv:
        settings = {**env_for(amqp_config, store), "RECSRV_STORE__CHECKPOINT_INTERVAL_S": "3600"}
        port = free_port()
        process, log = spawn_recsrv(tmp_path, port, {**settings, **env})
        server = Recsrv(process, log, f"http://127.0.0.1:{port}", http)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            await server.stop()
        await http.close()


async def assert_restored(
    server: Recsrv, restored: str | None, skipped: dict[str, str], replayed: int
) -> None:
    """Caught up with exactly the stream's events; the log says which checkpoints were
    skipped, each with a reason containing the given text, and which was restored."""
    model = await server.wait_caught_up()
    assert model["events"] == TOTAL, model
    unusable = {
        entry["checkpoint"]: entry["error"] for entry in server.logged("checkpoint_unusable")
    }
    assert unusable.keys() == skipped.keys(), unusable
    for checkpoint, reason in skipped.items():
        assert reason in unusable[checkpoint], unusable
    if restored is None:
        assert [entry["unusable"] for entry in server.logged("no_checkpoint")] == [len(skipped)]
        assert server.logged("restored") == []
    else:
        assert [entry["checkpoint"] for entry in server.logged("restored")] == [restored]
    assert await server.replayed() == replayed


# ---- damaged checkpoints ----------------------------------------------------------


@pytest.mark.parametrize("damage", ["delete_data", "delete_chunk", "flip_bytes"])
async def test_a_damaged_checkpoint_is_skipped_for_the_older_one(
    damage: str, store: Checkpoints, prepare: Prepare, start_recsrv: StartRecsrv
) -> None:
    older, newer = await prepare(store.config)
    await getattr(store, damage)(newer)
    server = await start_recsrv(store.config)
    reason = {newer: REASONS[damage][store.kind]}
    await assert_restored(server, older, reason, MESSAGES[TOTAL] - MESSAGES[OLDER])


async def test_metadata_marked_complete_without_any_data_is_skipped(
    store: Checkpoints, prepare: Prepare, start_recsrv: StartRecsrv
) -> None:
    _, newer = await prepare(store.config)
    empty = await store.add_complete_without_data(like=newer)
    server = await start_recsrv(store.config)
    reason = {empty: REASONS["add_complete_without_data"][store.kind]}
    await assert_restored(server, newer, reason, MESSAGES[TOTAL] - MESSAGES[NEWER])


async def test_checkpoints_of_other_settings_give_way_to_the_stream(
    store: Checkpoints, prepare: Prepare, start_recsrv: StartRecsrv
) -> None:
    older, newer = await prepare(store.config)
    server = await start_recsrv(store.config, RECSRV_MODEL__NEIGHBORS="20")
    mismatch = "model.neighbors is 50 in it, 20 here"
    await assert_restored(server, None, {newer: mismatch, older: mismatch}, MESSAGES[TOTAL])


# ---- the store down at start: retried, never skipped -------------------------------


async def not_ready_until_restored(server: Recsrv) -> None:
    """The restore failed and is being retried: /readyz says so with a 503."""
    await server.wait_logged("restore_failed")
    status, body = await server.get("/readyz")
    assert status == 503, body
    assert "cannot restore the state" in body["message"], body


async def test_a_file_store_unreachable_at_start_is_waited_for(
    tmp_path: Path, prepare: Prepare, start_recsrv: StartRecsrv
) -> None:
    prepared = FileCheckpoints(tmp_path / "prepared")
    _, newer = await prepare(prepared.config)
    # The store's path is a link to a volume not mounted yet: it cannot be created.
    link = tmp_path / "store"
    link.symlink_to(tmp_path / "unmounted")
    store = FileCheckpoints(link)
    server = await start_recsrv(store.config)
    await not_ready_until_restored(server)
    # Now mounted: the link is swapped atomically to the directory with the checkpoints.
    (tmp_path / "store.new").symlink_to(prepared.directory)
    os.replace(tmp_path / "store.new", link)
    await assert_restored(server, newer, {}, MESSAGES[TOTAL] - MESSAGES[NEWER])
    assert "cannot create" in server.logged("restore_failed")[0]["error"]


async def test_a_mongodb_unreachable_at_start_is_waited_for(
    tmp_path: Path, prepare: Prepare, start_recsrv: StartRecsrv
) -> None:
    (tmp_path / "mongo").mkdir()
    mongo = NxServer(tmp_path, data_dir=str((tmp_path / "mongo").resolve()))
    await asyncio.to_thread(mongo.start)
    try:
        config = StoreConfig(url=f"{mongo.url}/recsrv", checkpoint_interval_s=3600)
        _, newer = await prepare(config)
        await asyncio.to_thread(mongo.stop)
        server = await start_recsrv(config)
        await not_ready_until_restored(server)
        await asyncio.to_thread(mongo.start)  # the same port and data
        await assert_restored(server, newer, {}, MESSAGES[TOTAL] - MESSAGES[NEWER])
        assert "cannot open" in server.logged("restore_failed")[0]["error"]
        await server.stop()  # its final checkpoint, while the store is up
    finally:
        await asyncio.to_thread(mongo.stop)


# ---- the store failing after it listed the checkpoints -----------------------------


class LostOnFirstRead(FileStore):
    """A file store whose connection is lost once, just after it listed the checkpoints."""

    reads = 0

    async def read(self, info: CheckpointInfo) -> AsyncIterator[bytes]:
        self.reads += 1
        if self.reads == 1:
            raise StoreError(f"cannot read checkpoint {info.id}: connection lost")
        async for chunk in super().read(info):
            yield chunk


@pytest.fixture
async def two_file_checkpoints(make_server: ServerFactory, tmp_path: Path) -> tuple[Path, str, str]:
    """A directory with two checkpoints, of 50 and of 100 events; their ids, oldest first."""
    directory = tmp_path / "two"
    client = await make_server(store=StoreConfig(url=f"file://{directory}"))
    ids = []
    for start in (0, 50):
        await post_events(client, stream(50, start))
        await wait_for_events(client, start + 50)
        ids.append((await checkpoint_now(client))["id"])
    await client.close()
    return directory, ids[0], ids[1]


async def test_a_store_failing_mid_read_is_retried_not_skipped(
    two_file_checkpoints: tuple[Path, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a checkpoint found broken is skipped: a store that fails is retried, and the
    newest checkpoint restored once it answers again."""
    directory, _, newer = two_file_checkpoints
    monkeypatch.setattr(checkpointer, "RETRY_DELAYS_S", (0.05,))
    store = LostOnFirstRead(str(directory))
    runtime = Runtime.build(Config(), MemoryEventLog(), store)
    with structlog.testing.capture_logs() as logs:
        await asyncio.wait_for(Checkpointer(runtime).restore(), 10)
    assert [(entry["event"], entry.get("checkpoint")) for entry in logs] == [
        ("restore_failed", None),
        ("restored", newer),
    ]
    assert runtime.model.events == 100
    assert runtime.problems == {}


async def test_the_file_store_tells_a_damaged_checkpoint_from_a_store_gone(
    two_file_checkpoints: tuple[Path, str, str],
) -> None:
    directory, older, newer = two_file_checkpoints
    store = FileStore(str(directory))
    infos = {info.id: info for info in await store.complete()}
    (directory / f"{newer}.data").unlink()
    with pytest.raises(CheckpointDamaged, match="No such file"):
        _ = [chunk async for chunk in store.read(infos[newer])]
    directory.rename(directory.with_name("away"))  # the whole volume is gone
    with pytest.raises(StoreError, match="No such file") as raised:
        _ = [chunk async for chunk in store.read(infos[older])]
    assert not isinstance(raised.value, CheckpointDamaged)
