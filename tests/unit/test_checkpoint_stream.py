"""The streamed checkpoint: the encoder thread feeds the store chunk by chunk, never more
than IN_FLIGHT ahead, and stops whenever either side fails (recsrv.checkpointer)."""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from typing import Any

import numpy as np
import pytest

from recsrv import checkpointer
from recsrv.checkpointer import IN_FLIGHT, Copying, Encoding, start_writing, write
from recsrv.errors import StoreError
from recsrv.state import sessions as sessions_module
from recsrv.state.snapshot import dump_state
from recsrv.store import CheckpointHead, CheckpointInfo, ChunkStream, codec
from recsrv.store.codec import CHUNK_BYTES, Named, encode
from tests.unit.test_snapshot import build, later_events

HEAD = CheckpointHead(id="c1", created_at=1_700_000_000.25, offset=41, events=42, format=2)


def arrays(chunks: int) -> list[Named]:
    """Arrays that encode to about `chunks` chunks."""
    rng = np.random.default_rng(3)
    per_array = CHUNK_BYTES // 8 // 2
    return [(f"a{n}", rng.random(per_array)) for n in range(2 * chunks)]


class MemoryStore:
    """Takes chunks as a store would, optionally slowly or failing after some."""

    def __init__(self, delay_s: float = 0.0, fail_after: int | None = None) -> None:
        self.delay_s = delay_s
        self.fail_after = fail_after
        self.chunks: list[bytes] = []
        self.ahead: list[int] = []  # chunks made but not taken, each time one is taken
        self.info: CheckpointInfo | None = None
        self.stream: Encoding | None = None

    async def write(self, stream: ChunkStream) -> CheckpointInfo:
        assert isinstance(stream, Encoding)
        self.stream = stream
        async for chunk in stream:
            self.ahead.append(stream._queue.qsize())
            if self.fail_after is not None and len(self.chunks) == self.fail_after:
                raise StoreError("the store went away")
            self.chunks.append(chunk)
            await asyncio.sleep(self.delay_s)
        self.info = stream.info()
        return self.info


async def test_the_store_gets_every_chunk_and_the_totals() -> None:
    parts = arrays(6)
    whole = encode(iter(parts))
    store = MemoryStore()
    info = await write(store, HEAD, parts)  # type: ignore[arg-type]
    assert store.chunks == whole.chunks
    assert info == HEAD.finish(len(whole.chunks), whole.size, whole.sha256)


async def test_the_encoder_runs_at_most_in_flight_ahead_of_a_slow_store() -> None:
    store = MemoryStore(delay_s=0.02)
    await write(store, HEAD, arrays(12))  # type: ignore[arg-type]
    assert len(store.chunks) >= 12
    assert max(store.ahead) <= IN_FLIGHT
    assert max(store.ahead) >= IN_FLIGHT - 1  # it did run ahead while the store wrote


async def test_a_store_failing_half_way_stops_the_encoder() -> None:
    store = MemoryStore(fail_after=3)
    with pytest.raises(StoreError, match="went away"):
        await asyncio.wait_for(write(store, HEAD, arrays(20)), 10)  # type: ignore[arg-type]
    assert len(store.chunks) == 3
    assert store.info is None
    # The encoder thread was stopped and waited for, not left waiting for a slot.
    assert store.stream is not None and store.stream._thread.done()


async def test_an_encoder_failure_half_way_fails_the_write() -> None:
    parts = arrays(4)
    parts.append(("objects", np.array([{"a": 1}], dtype=object)))
    store = MemoryStore()
    with pytest.raises(StoreError, match="object dtype"):
        await write(store, HEAD, parts)  # type: ignore[arg-type]
    assert len(store.chunks) >= 3  # the chunks before it went to the store
    assert store.info is None
    assert store.stream is not None and store.stream._thread.done()


async def test_the_metadata_is_not_known_before_the_last_chunk() -> None:
    stream = Encoding(HEAD, arrays(2))
    try:
        with pytest.raises(RuntimeError, match="not yet taken"):
            stream.info()
        taken = [chunk async for chunk in stream]
        assert stream.info().chunks == len(taken)
    finally:
        await stream.close()


async def test_the_lock_covers_only_the_copy() -> None:
    """Copying makes copies: once it has finished (the lock let go), the live arrays may
    change at once, and the checkpoint holds what they were."""
    model, _ = build()
    expected = encode(dump_state(model))
    copying = Copying(model)
    await copying.finished()
    model.catalog.price[:] = -1.0  # an event after the lock was released
    store = MemoryStore()
    info = await write(store, HEAD, copying.arrays())  # type: ignore[arg-type]
    assert store.chunks == expected.chunks
    assert (info.chunks, info.size, info.sha256) == (
        len(expected.chunks),
        expected.size,
        expected.sha256,
    )


async def test_each_copy_is_let_go_once_taken() -> None:
    """The copies are held by no one but their taker: each can be freed once its bytes
    are in chunks, not only at the end of the checkpoint."""
    model, _ = build()
    copying = Copying(model)
    await copying.finished()
    taking = copying.arrays()
    first = weakref.ref(next(taking)[1])
    next(taking)
    assert first() is None


async def test_a_cancelled_start_keeps_the_lock_until_the_copy_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The copy reads the live arrays: cancelled (at shutdown, say), start_writing still
    returns only once the worker thread is done with them, and nothing is written."""
    model, _ = build()
    copying = threading.Event()
    done: list[str] = []

    def dump_slowly(model: Any) -> Any:
        copying.set()
        for named in dump_state(model):
            time.sleep(0.005)
            yield named
        done.append("copied")

    monkeypatch.setattr(checkpointer, "dump_state", dump_slowly)
    monkeypatch.setattr(codec, "CHUNK_BYTES", 16 * 1024)  # many chunks, written slowly
    store = MemoryStore(delay_s=0.01)
    task = asyncio.ensure_future(start_writing(model, store))  # type: ignore[arg-type]
    await asyncio.to_thread(copying.wait, 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert done == ["copied"]
    # Nothing was written: the write starts only once the copy is done.
    assert store.stream is None and store.chunks == []


async def test_events_during_the_write_leave_the_checkpoint_as_it_was_at_the_lock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The ring buffers are read block by block while events change them (KeptRows):
    each block must still be the rows as they were when the lock was let go."""
    model, shop = build()
    expected = encode(dump_state(model))
    monkeypatch.setattr(sessions_module, "KEPT_BLOCK_BYTES", 1)  # a block per row
    monkeypatch.setattr(codec, "CHUNK_BYTES", 4 * 1024)  # many chunks, written slowly
    # Slow enough that the events (0.2 s of work here) all come before the last chunk,
    # with room for a loaded machine: 180 chunks of 5 ms.
    store = MemoryStore(delay_s=0.005)
    writing = await start_writing(model, store)  # type: ignore[arg-type]
    kept = model.sessions.kept
    assert kept is not None and kept.block_rows == 1
    events = later_events(shop)
    for start in range(0, len(events), 25):  # applied while the chunks are written
        for event in events[start : start + 25]:
            model.apply(event)
        await asyncio.sleep(0.001)
    assert not writing.done()  # every event came before the write ended
    info = await writing
    assert len(kept) >= 10  # rows the events changed, saved before they did
    assert b"".join(store.chunks) == b"".join(expected.chunks)
    assert info.sha256 == expected.sha256
    assert model.sessions.kept is None  # let go once written


async def test_a_failed_write_lets_the_ring_buffers_go(monkeypatch: pytest.MonkeyPatch) -> None:
    model, shop = build()
    monkeypatch.setattr(codec, "CHUNK_BYTES", 4 * 1024)
    store = MemoryStore(fail_after=1)
    writing = await start_writing(model, store)  # type: ignore[arg-type]
    with pytest.raises(StoreError, match="went away"):
        await writing
    assert model.sessions.kept is None
    for event in later_events(shop)[:100]:
        model.apply(event)  # no row is saved any more
    # The next checkpoint keeps them again, and holds the state as it is now.
    expected = encode(dump_state(model))
    store = MemoryStore()
    await (await start_writing(model, store))  # type: ignore[arg-type]
    assert b"".join(store.chunks) == b"".join(expected.chunks)
