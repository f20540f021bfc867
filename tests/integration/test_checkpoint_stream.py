"""Streamed checkpoints against the real stores: the file store and the MongoDB-wire
server (or RECSRV_TEST_MONGODB_URL). The encoder makes chunks while the store writes
them; what is restored is bit for bit what was captured under the lock, events applied
during the write change nothing in it, and a write that fails half way leaves no
complete checkpoint behind."""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import numpy as np
import pytest

from recsrv import checkpointer
from recsrv.broker.memory import MemoryEventLog
from recsrv.checkpointer import Checkpointer, Copying, start_writing, write
from recsrv.config import Config, StoreConfig
from recsrv.errors import StoreError
from recsrv.model import Model
from recsrv.runtime import Runtime
from recsrv.state.snapshot import STATE_FORMAT, dump_state, load_state
from recsrv.store import (
    CheckpointHead,
    CheckpointInfo,
    CheckpointStore,
    ChunkStream,
    codec,
    open_store,
)
from recsrv.store.codec import Named, decode, encode
from recsrv.store.files import FileStore
from recsrv.store.mongo import MongoStore
from tests.unit.test_snapshot import MODEL, SESSIONS, build, feed, later_events, state_of

SMALL_CHUNK = 8 * 1024  # the ~0.7 MB test state in about 90 chunks


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codec, "CHUNK_BYTES", SMALL_CHUNK)


@pytest.fixture
async def store(store_config: StoreConfig) -> AsyncIterator[CheckpointStore]:
    opened = open_store(store_config)
    await opened.open()
    yield opened
    await opened.close()


def head(name: str) -> CheckpointHead:
    """Each newer than the last, with a float that a round trip must keep exactly."""
    return CheckpointHead(name, time.time() + 0.123456, offset=7, events=8, format=STATE_FORMAT)


async def read_all(store: CheckpointStore, info: CheckpointInfo) -> bytes:
    return b"".join([chunk async for chunk in store.read(info)])


async def capture(model: Model) -> list[Named]:
    """Every copy, once the whole state is copied (as when the lock is let go)."""
    copying = Copying(model)
    await copying.finished()
    return list(copying.arrays())


async def test_a_streamed_checkpoint_restores_bit_identical(store: CheckpointStore) -> None:
    model, shop = build()
    expected = encode(dump_state(model))
    captured = copy.deepcopy(state_of(model))  # state_of shares the live lists
    arrays = await capture(model)
    # Events applied once the lock is released change the live arrays, not the copies.
    feed(model, later_events(shop), first_offset=model.offset + 1, seed=2)
    assert state_of(model) != captured

    info = await write(store, head("c-stream"), arrays)

    assert info.chunks == len(expected.chunks) > 50  # many chunks were streamed
    assert (info.size, info.sha256) == (expected.size, expected.sha256)
    assert await store.complete() == [info]  # created_at and all, exactly as written
    data = await read_all(store, info)
    assert data == b"".join(expected.chunks)
    restored = load_state(decode([data], info.sha256), MODEL, SESSIONS)
    assert state_of(restored) == captured


class Watched:
    """Hands each chunk to `store` after awaiting `on_chunk()` (a hook per chunk)."""

    def __init__(self, store: CheckpointStore, on_chunk: Callable[[], Awaitable[None]]) -> None:
        self.store = store
        self.on_chunk = on_chunk

    async def write(self, stream: ChunkStream) -> CheckpointInfo:
        on_chunk = self.on_chunk

        class Hooked:
            head = stream.head

            async def __aiter__(self) -> AsyncIterator[bytes]:
                async for chunk in stream:
                    await on_chunk()
                    yield chunk

            def info(self) -> CheckpointInfo:
                return stream.info()

        return await self.store.write(Hooked())

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


async def test_the_write_starts_once_the_whole_state_is_copied(
    store: CheckpointStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing is encoded while the state is copied under the lock (a third thread at
    the GIL made the loop's stalls three times as long), and once the lock is let go
    the store gets the whole state."""
    model, _ = build()
    expected = encode(dump_state(model))
    copy_all = checkpointer.detach
    copy_ended: list[float] = []

    def slow_copy(arrays: Any) -> Any:
        for named in copy_all(arrays):
            time.sleep(0.01)  # a large state: copying takes a while
            yield named
        copy_ended.append(time.perf_counter())

    monkeypatch.setattr(checkpointer, "detach", slow_copy)
    chunk_times: list[float] = []

    async def note() -> None:
        chunk_times.append(time.perf_counter())

    writing = await start_writing(model, Watched(store, note))  # type: ignore[arg-type]
    assert copy_ended, "start_writing returned before the copy ended"
    info = await writing
    assert chunk_times and chunk_times[0] > copy_ended[0]
    assert (info.size, info.sha256) == (expected.size, expected.sha256)
    assert await read_all(store, info) == b"".join(expected.chunks)


class Failing:
    """A stream that hands over `after` chunks of `inner` and then fails or hangs."""

    def __init__(self, inner: ChunkStream, after: int, hang: bool, taken: asyncio.Event) -> None:
        self.head = inner.head
        self.inner = inner
        self.after = after
        self.hang = hang
        self.taken = taken

    async def __aiter__(self) -> AsyncIterator[bytes]:
        count = 0
        async for chunk in self.inner:
            if count == self.after:
                self.taken.set()
                if self.hang:
                    await asyncio.Event().wait()  # until cancelled
                raise StoreError("the encoder died")
            count += 1
            yield chunk

    def info(self) -> CheckpointInfo:
        return self.inner.info()


class Interrupting:
    """Hands the store a Failing stream around the real one."""

    def __init__(self, store: CheckpointStore, after: int, hang: bool = False) -> None:
        self.store = store
        self.after = after
        self.hang = hang
        self.taken = asyncio.Event()  # set when the stream reached `after`

    async def write(self, stream: ChunkStream) -> CheckpointInfo:
        return await self.store.write(Failing(stream, self.after, self.hang, self.taken))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


async def assert_only(store: CheckpointStore, good: CheckpointInfo, broken: str) -> None:
    """`good` is the one complete checkpoint, and once incomplete ones are removed
    nothing of `broken` is left."""
    assert await store.complete() == [good]
    await store.delete_incomplete()
    if isinstance(store, FileStore):
        assert sorted(p.name for p in store.directory.iterdir()) == [
            f"{good.id}.data",
            f"{good.id}.json",
        ]
    else:
        assert isinstance(store, MongoStore)
        db = store._database()
        assert await db["checkpoints"].count_documents({"_id": broken}) == 0
        assert await db["checkpoint_chunks"].count_documents({"checkpoint": broken}) == 0
    assert await read_all(store, good) == b"".join(encode(dump_state(build()[0])).chunks)


@pytest.mark.parametrize("hang", [False, True], ids=["fails", "cancelled"])
async def test_a_write_that_stops_half_way_leaves_no_complete_checkpoint(
    store: CheckpointStore, hang: bool
) -> None:
    model, _ = build()
    good = await write(store, head("a-good"), await capture(model))
    interrupting = Interrupting(store, after=20, hang=hang)
    arrays = await capture(model)
    task = asyncio.ensure_future(write(interrupting, head("b-broken"), arrays))  # type: ignore[arg-type]
    if hang:
        # Cancelled in the middle of the stream (shutdown, say), not by an error.
        await asyncio.wait_for(interrupting.taken.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    else:
        with pytest.raises(StoreError, match="encoder died"):
            await task
    # write() stopped the encoder thread and waited for it, whatever happened.
    await assert_only(store, good, "b-broken")


async def test_an_encoder_failure_half_way_leaves_no_complete_checkpoint(
    store: CheckpointStore,
) -> None:
    model, _ = build()
    good = await write(store, head("a-good"), await capture(model))
    arrays = [*await capture(model), ("objects", np.array([{"a": 1}], dtype=object))]
    with pytest.raises(StoreError, match="object dtype"):
        await write(store, head("b-broken"), arrays)  # it comes after every chunk
    await assert_only(store, good, "b-broken")


async def test_events_are_applied_while_a_checkpoint_is_written(
    store: CheckpointStore, store_config: StoreConfig
) -> None:
    """The consumer's lock is held only while the state is copied: events go on during
    the write, and the checkpoint holds the state from before them."""
    config = Config(store=store_config, model=MODEL, sessions=SESSIONS)
    writing = asyncio.Event()

    async def slowly() -> None:  # a write that takes a while
        writing.set()
        await asyncio.sleep(0.01)

    slow = Watched(store, slowly)
    runtime = Runtime.build(config, MemoryEventLog(), slow)  # type: ignore[arg-type]
    model, shop = build()
    runtime.replace_model(model)
    captured = copy.deepcopy(state_of(model))  # state_of shares the live lists
    position = (model.offset, model.events)

    task = asyncio.ensure_future(Checkpointer(runtime).checkpoint())
    await asyncio.wait_for(writing.wait(), 10)
    async with asyncio.timeout(1):
        async with runtime.consumer.lock:
            feed(model, later_events(shop), first_offset=model.offset + 1, seed=2)
    assert not task.done()  # the events went in while the checkpoint was being written
    info = await task
    assert (info.offset, info.events) == position

    fresh = Runtime.build(config, MemoryEventLog(), open_store(store_config))
    await Checkpointer(fresh).restore()
    await fresh.store.close()
    restored = fresh.model
    assert restored.offset == -1  # the in-process log starts again at 0
    restored.offset = position[0]
    assert state_of(restored) == captured
