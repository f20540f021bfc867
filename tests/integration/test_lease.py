"""The checkpoint writer's lease and read marks, on each real store (a directory, and
the MongoDB-wire server): one holder at a time, taken over when it ends or expires,
and pruning that spares a checkpoint being read."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from recsrv.config import StoreConfig
from recsrv.errors import StoreError
from recsrv.lease import CheckpointLease, ended_on_this_host
from recsrv.store import CheckpointHead, CheckpointStore, ChunkList, open_store
from recsrv.store.files import LEASE_FILE, FileStore
from recsrv.store.mongo import MongoStore
from tests.conftest import NxServer


async def opened(config: StoreConfig) -> CheckpointStore:
    store = open_store(config)
    await store.open()
    return store


@pytest.fixture
async def two_stores(store_config: StoreConfig) -> AsyncIterator[tuple[CheckpointStore, ...]]:
    """Two replicas' handles on one store."""
    stores = (await opened(store_config), await opened(store_config))
    yield stores
    for store in stores:
        await store.close()


def head(checkpoint_id: str) -> CheckpointHead:
    return CheckpointHead(checkpoint_id, time.time(), 7, 70, 3)


async def test_one_holder_at_a_time_and_the_next_takes_it_once_released(
    two_stores: tuple[CheckpointStore, ...],
) -> None:
    a, b = two_stores
    assert await a.take_lease("replica-a", 30) == "replica-a"
    assert await b.take_lease("replica-b", 30) == "replica-a"
    assert await a.take_lease("replica-a", 30) == "replica-a"  # renewed
    assert await b.take_lease("replica-b", 30) == "replica-a"
    await b.release_lease("replica-b")  # not the holder: changes nothing
    assert await b.take_lease("replica-b", 30) == "replica-a"
    await a.release_lease("replica-a")
    assert await b.take_lease("replica-b", 30) == "replica-b"
    assert await a.take_lease("replica-a", 30) == "replica-b"


async def test_a_mongodb_lease_not_renewed_is_taken_over_after_lease_s(
    mongo_store: StoreConfig,
) -> None:
    a, b = await opened(mongo_store), await opened(mongo_store)
    try:
        assert await a.take_lease("replica-a", 1.0) == "replica-a"
        assert await b.take_lease("replica-b", 1.0) == "replica-a"
        await asyncio.sleep(1.2)
        assert await b.take_lease("replica-b", 1.0) == "replica-b"
        # The old holder, back from a pause, finds it gone.
        assert await a.take_lease("replica-a", 1.0) == "replica-b"
        # A replica restarted under its own name takes its lease back at once.
        c = await opened(mongo_store)
        try:
            assert await c.take_lease("replica-b", 1.0) == "replica-b"
        finally:
            await c.close()
    finally:
        await a.close()
        await b.close()


HOLDER = """
import asyncio, sys
from recsrv.store.files import FileStore
async def main():
    store = FileStore(sys.argv[1])
    await store.open()
    print(await store.take_lease("other-process", 30.0), flush=True)
    await asyncio.sleep(600)
asyncio.run(main())
"""


async def test_a_file_lease_ends_with_the_process_that_held_it(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    holder = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        HOLDER,
        str(directory),
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    store = FileStore(str(directory))
    try:
        assert holder.stdout is not None
        line = await asyncio.wait_for(holder.stdout.readline(), 30)
        assert line.strip() == b"other-process"
        await store.open()
        assert await store.take_lease("replica-b", 30.0) == "other-process"
        holder.send_signal(signal.SIGKILL)
        await asyncio.wait_for(holder.wait(), 10)
        assert await store.take_lease("replica-b", 30.0) == "replica-b"
        assert (directory / LEASE_FILE).read_text() == "replica-b"
    finally:
        if holder.returncode is None:
            holder.kill()
            await holder.wait()
        await store.close()


async def test_pruning_spares_a_checkpoint_being_read_until_the_read_ends(
    two_stores: tuple[CheckpointStore, ...],
) -> None:
    writer, reader = two_stores
    chunks = [bytes([n]) * 1000 for n in range(5)]
    info = await writer.write(ChunkList(head("20261130T000000-read"), chunks))
    reading = reader.read(info)
    first = await anext(reading)
    await writer.delete([info.id])  # the writer prunes while the read goes on
    assert [c.id for c in await writer.complete()] == [info.id]
    rest = [chunk async for chunk in reading]
    assert b"".join([first, *rest]) == b"".join(chunks)  # files read back in other cuts
    await writer.delete([info.id])  # the read is over: now it goes
    assert await writer.complete() == []


async def test_a_checkpoint_read_whole_leaves_nothing_that_blocks_pruning(
    two_stores: tuple[CheckpointStore, ...],
) -> None:
    writer, reader = two_stores
    info = await writer.write(ChunkList(head("20261130T000000-done"), [b"x" * 100, b"y"]))
    assert b"".join([chunk async for chunk in reader.read(info)]) == b"x" * 100 + b"y"
    await writer.delete([info.id])
    assert await writer.complete() == []


async def test_a_mongodb_checkpoint_pruned_while_written_is_never_complete(
    mongo_store: StoreConfig,
) -> None:
    """A replica that took the lease over prunes incomplete checkpoints, those of a
    writer that lost it among them: that writer must not mark its own complete."""
    deposed, holder = await opened(mongo_store), await opened(mongo_store)

    def chunks_pruned_midway() -> list[bytes]:
        return [b"a" * 100, b"b" * 100, b"c" * 100]

    class Pruned(ChunkList):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            sent = 0
            async for chunk in super().__aiter__():
                if sent == 2:
                    await holder.delete_incomplete()
                sent += 1
                yield chunk

    try:
        with pytest.raises(StoreError, match="removed while it was written"):
            await deposed.write(Pruned(head("20261130T000000-gone"), chunks_pruned_midway()))
        assert await holder.complete() == []
        # The chunk written after the pruning went with the failed write.
        assert isinstance(holder, MongoStore)
        chunks = holder._database()["checkpoint_chunks"]
        assert await chunks.count_documents({"checkpoint": "20261130T000000-gone"}) == 0
        assert await holder._database()["checkpoints"].count_documents({}) == 0
    finally:
        await deposed.close()
        await holder.close()


async def test_the_lease_counts_as_held_for_two_thirds_of_lease_s(tmp_path: Path) -> None:
    store = FileStore(str(tmp_path / "store"))
    await store.open()
    other = FileStore(str(tmp_path / "store"))
    await other.open()
    try:
        lease = CheckpointLease(store, "replica-a", 1.5)
        rival = CheckpointLease(other, "replica-b", 1.5)
        assert not lease.held
        assert await lease.renew() and lease.held
        assert not await rival.renew() and not rival.held
        assert rival.seen_holder == "replica-a"
        await asyncio.sleep(1.1)  # past 2/3 of 1.5 s, with no renewal
        assert not lease.held
        await lease.renew()
        assert lease.held
        await lease.release()
        assert not lease.held
        assert await rival.renew() and rival.held
    finally:
        await store.close()
        await other.close()


MONGO_HOLDER = """
import asyncio, os, socket, sys
from recsrv.store.mongo import MongoStore
async def main():
    store = MongoStore(sys.argv[1])
    await store.open()
    name = f"{socket.gethostname()}-{os.getpid()}"  # server.instance's default
    print(await store.take_lease(name, 30.0), flush=True)
    await asyncio.sleep(600)
asyncio.run(main())
"""


async def test_a_dead_process_of_this_host_under_a_default_name_gives_way_at_once(
    mongo_store: StoreConfig,
) -> None:
    """kill -9 of a lone replica under the default name (host and pid), then a restart
    (another pid): the new process need not wait store.lease_s to write again."""
    holder = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        MONGO_HOLDER,
        mongo_store.url,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    store = await opened(mongo_store)
    try:
        assert holder.stdout is not None
        name = (await asyncio.wait_for(holder.stdout.readline(), 30)).strip().decode()
        assert name == f"{socket.gethostname()}-{holder.pid}"
        lease = CheckpointLease(store, "restarted", 30.0)
        assert not await lease.renew()  # it runs: its lease stands
        assert lease.seen_holder == name and not ended_on_this_host(name)
        holder.send_signal(signal.SIGKILL)
        await asyncio.wait_for(holder.wait(), 10)
        assert ended_on_this_host(name)
        assert await lease.renew()  # at once, not 30 s later
        assert not ended_on_this_host("elsewhere-1")
        assert not ended_on_this_host(f"{socket.gethostname()}-{os.getpid()}")
    finally:
        if holder.returncode is None:
            holder.kill()
            await holder.wait()
        await store.close()


# PyMongo leaks the socket of a connection refused while the server is down (its
# PYTHON-3923, as in test_checkpoints.py): collected here, and only that is ignored.
@pytest.mark.filterwarnings("ignore:unclosed <socket:ResourceWarning")
@pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
)
async def test_a_store_down_is_a_store_error_not_a_lease_held_elsewhere(tmp_path: Path) -> None:
    """A checkpoint asked for while the store is down must say the store is down (503),
    also once the lease has run out, not that another replica writes (409)."""
    server = NxServer(tmp_path)
    await asyncio.to_thread(server.start)
    store = await opened(StoreConfig(url=f"{server.url}/recsrv"))
    try:
        lease = CheckpointLease(store, "replica-a", 1.5)
        assert await lease.renew()
        await asyncio.to_thread(server.stop)
        await asyncio.sleep(1.1)  # past 2/3 of lease_s: no longer counted as held
        with pytest.raises(StoreError):
            await lease.renew()
        assert not lease.held
    finally:
        await store.close()  # before the server goes: no connection attempt after it
        await asyncio.to_thread(server.stop)
        gc.collect()


async def test_a_file_lease_held_under_the_same_name_by_another_store_is_not_ours(
    tmp_path: Path,
) -> None:
    """Two servers of one process (one default name) on one directory: one writer."""
    first, second = FileStore(str(tmp_path / "store")), FileStore(str(tmp_path / "store"))
    await first.open()
    await second.open()
    try:
        assert await first.take_lease("host-1", 30.0) == "host-1"
        assert await second.take_lease("host-1", 30.0) != "host-1"
    finally:
        await first.close()
        await second.close()
