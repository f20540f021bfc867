"""Checkpoints of the whole state: restore at start, periodic, on demand, at shutdown.

A checkpoint is taken between two messages: under the consumer's lock (no event is
half applied, none is applied meanwhile) a worker thread copies the state's arrays
(`Copying`), which takes a fraction of the time encoding them would, and the lock is
released once the last is copied. Only then does a worker thread cut the copies into
chunks while the store writes the chunks already made, at most IN_FLIGHT chunks behind
the encoder (`write`), letting each copy go once written. Encoding beside the copy
started the write earlier, but three threads then took turns at the GIL and the event
loop lost the race several times in a row: the copy's stalls tripled (14-22 ms against
5 ms on a 200,000-session state) and the copy itself took longer (bench/notes.md, P6).
Reads keep being served throughout. When the store fails, the state lives on in
memory, the failure is logged once per outage, reported in /readyz and in metrics, and
the checkpoint is retried with back-off.

The sessions' ring buffers (each session's last events: two thirds of a large state)
are not copied under the lock. From the lock on, the model saves a ring row's old values
before its first change, and the encoder reads the buffers block by block when it gets
to them, putting the saved rows back over its copy (`recsrv.state.sessions.KeptRows`),
until the write has ended. That takes most of the copy out of the consumer's wait and
lets it overlap the store's write.

Replicas may share a store: only the holder of the checkpoint lease (recsrv.lease)
writes and prunes checkpoints; the others restore from them and skip their own.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final

import structlog

from recsrv.config import Config
from recsrv.errors import CheckpointDamaged, NotCheckpointWriter, StoreError
from recsrv.lease import CheckpointLease
from recsrv.model import Model
from recsrv.runtime import Runtime
from recsrv.state.sessions import KeptRows, Sessions
from recsrv.state.snapshot import STATE_FORMAT, SnapshotMismatch, dump_state, load_state
from recsrv.store import CheckpointHead, CheckpointInfo, CheckpointStore
from recsrv.store.codec import Deferred, Encoder, Named, Part, decode, detach

logger = structlog.get_logger("recsrv.checkpoint")

RETRY_DELAYS_S = (1.0, 2.0, 5.0, 10.0, 30.0)


def _load(chunks: list[bytes], sha256: str, config: Config) -> Model:
    """Decode and rebuild a model (runs in a worker thread)."""
    return load_state(decode(chunks, sha256), config.model, config.sessions)


def new_head(model: Model) -> CheckpointHead:
    """The head of a new checkpoint of `model` as it is now (taken under the lock)."""
    return CheckpointHead(
        id=f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:8]}",
        created_at=time.time(),
        offset=model.offset,
        events=model.events,
        format=STATE_FORMAT,
    )


class Copying:
    """The model's state as arrays of its own, which no later event changes, copied one
    by one by a worker thread. Started under the consumer's lock, which must be held
    until `finished` returns; `arrays` then hands each copy over once (to the encoder's
    thread), so that each can be let go once written.

    With `kept` (the sessions' ring buffers kept as they are now), those are not copied
    but read block by block by the encoder once the lock is gone (`KeptRows`)."""

    def __init__(self, model: Model, kept: KeptRows | None = None) -> None:
        self._copies: deque[Part] = deque()
        self._thread = asyncio.ensure_future(asyncio.to_thread(self._copy, model, kept))

    def _copy(self, model: Model, kept: KeptRows | None) -> None:
        self._copies.extend(detach(_deferring(dump_state(model), kept)))

    def arrays(self) -> Iterator[Part]:
        """The copies in order, each once and held no longer (after `finished`)."""
        while self._copies:
            yield self._copies.popleft()

    async def finished(self) -> None:
        """Until every array is copied, even when cancelled meanwhile: the copy reads the
        live arrays, so the lock must not go before it has ended."""
        try:
            await asyncio.shield(self._thread)
        except asyncio.CancelledError:
            await asyncio.wait([self._thread])
            raise


def _deferring(arrays: Iterable[Named], kept: KeptRows | None) -> Iterator[Part]:
    """`arrays`, with the ring buffers that `kept` holds as Deferred reads of it."""
    if kept is None:
        yield from arrays
        return
    rings = {f"sessions.{name}": name for name in KeptRows.RING_ARRAYS}
    for name, array in arrays:
        ring = rings.get(name)
        if ring is None:
            yield name, array
        else:
            yield name, Deferred(array.dtype, array.shape, functools.partial(kept.blocks, ring))


async def start_writing(model: Model, store: CheckpointStore) -> asyncio.Task[CheckpointInfo]:
    """Start a checkpoint of `model` as it is now, and return once its state is copied
    (the caller holds the consumer's lock until then) with the task that writes the
    copies. Nothing is encoded during the copy: see the module's docstring. The
    sessions' ring buffers are not copied: the model keeps what they were until the
    write has ended (`KeptRows`)."""
    head = new_head(model)
    sessions = model.sessions
    kept = sessions.keep_rows()
    try:
        copying = Copying(model, kept)
        await copying.finished()
    except BaseException:
        sessions.stop_keeping()
        raise
    return asyncio.ensure_future(_write_then_let_go(store, head, copying.arrays(), sessions))


async def _write_then_let_go(
    store: CheckpointStore, head: CheckpointHead, arrays: Iterable[Part], sessions: Sessions
) -> CheckpointInfo:
    try:
        return await write(store, head, arrays)
    finally:  # the encoder's thread has ended: nothing reads the ring buffers any more
        sessions.stop_keeping()


async def write(
    store: CheckpointStore, head: CheckpointHead, arrays: Iterable[Part]
) -> CheckpointInfo:
    """Write `arrays` (copies: `Copying.arrays`) to `store` as checkpoint `head`: a
    worker thread takes them one by one, letting each go once encoded, and encodes them
    while the store writes the chunks already made. The finished metadata, once the
    store has made the checkpoint complete."""
    stream = Encoding(head, arrays)
    try:
        return await store.write(stream)
    finally:
        await stream.close()


# Chunks made but not yet taken by the store (4 MiB each): the encoder is several
# times faster than either store, so more would only hold memory.
IN_FLIGHT: Final = 4


@dataclass(frozen=True, slots=True)
class _End:
    """The encoder's last word: the totals, or what stopped it."""

    count: int = 0
    size: int = 0
    sha256: str = ""
    error: BaseException | None = None


class Encoding:
    """A ChunkStream whose chunks a worker thread cuts from detached arrays (taken from
    `arrays` as it goes), handing each to the event loop (call_soon_threadsafe) and
    never more than IN_FLIGHT ahead of the store. close() stops the thread and waits
    for it (the store may fail half way)."""

    def __init__(self, head: CheckpointHead, arrays: Iterable[Part]) -> None:
        self.head = head
        self._queue: asyncio.Queue[bytes | _End] = asyncio.Queue()
        self._slots = threading.Semaphore(IN_FLIGHT)
        self._stop = threading.Event()
        self._info: CheckpointInfo | None = None
        loop = asyncio.get_running_loop()
        self._thread = loop.create_task(asyncio.to_thread(self._encode, loop, arrays))

    def _encode(self, loop: asyncio.AbstractEventLoop, arrays: Iterable[Part]) -> None:
        """The worker thread: a chunk per free slot, then the totals or the error."""
        encoder = Encoder()
        chunks = encoder.chunks(arrays)
        end: _End
        try:
            while True:
                self._slots.acquire()
                if self._stop.is_set():
                    return
                chunk = next(chunks, None)
                if chunk is None:
                    break
                loop.call_soon_threadsafe(self._queue.put_nowait, chunk)
                del chunk
            end = _End(encoder.count, encoder.size, encoder.sha256)
        except Exception as exc:  # handed to the store, which fails the write with it
            end = _End(error=exc)
        loop.call_soon_threadsafe(self._queue.put_nowait, end)

    def __aiter__(self) -> Encoding:
        return self

    async def __anext__(self) -> bytes:
        item = await self._queue.get()
        if isinstance(item, bytes):
            self._slots.release()
            return item
        if item.error is not None:
            raise item.error
        self._info = self.head.finish(item.count, item.size, item.sha256)
        raise StopAsyncIteration

    def info(self) -> CheckpointInfo:
        if self._info is None:
            raise RuntimeError(f"checkpoint {self.head.id} has chunks not yet taken")
        return self._info

    async def close(self) -> None:
        """Stop the encoder if it still runs, and wait until it has."""
        self._stop.set()
        self._slots.release(IN_FLIGHT + 1)  # wakes it if it waits for a slot
        await self._thread
        while not self._queue.empty():
            self._queue.get_nowait()


STORE_WARNING = "store"


class Checkpointer:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.store = runtime.store
        self.last: CheckpointInfo | None = None
        self.lease = CheckpointLease(self.store, runtime.instance, runtime.config.store.lease_s)
        self._writing = asyncio.Lock()
        self._outage_since: float | None = None
        # user.forget events applied when the last checkpoint was taken: a checkpoint
        # taken after a forget replaces every older one, which still hold the user.
        self._forgets_at_last = 0

    # ---- start ----------------------------------------------------------------

    async def restore(self) -> None:
        """Open the store and load the newest usable checkpoint, retrying while the store
        is unreachable; with none, the state starts empty and the whole retained stream
        is replayed."""
        failures = 0
        while True:
            try:
                await self.store.open()
                await self._restore_newest()
                self.runtime.problems.pop(STORE_WARNING, None)
                return
            except StoreError as exc:
                delay = RETRY_DELAYS_S[min(failures, len(RETRY_DELAYS_S) - 1)]
                if failures == 0:
                    logger.warning("restore_failed", error=str(exc), retry_in_s=delay)
                failures += 1
                self.runtime.problems[STORE_WARNING] = f"cannot restore the state: {exc}"
                await self.store.close()
                await asyncio.sleep(delay)

    async def _restore_newest(self) -> None:
        """Restore the newest checkpoint that can be read whole and fits the config.

        One that cannot (CheckpointDamaged: a missing file or chunk, a wrong size, bad
        bytes; SnapshotMismatch: another format or shape) is skipped for the next older
        one, and with none left the retained stream rebuilds the state. Any other
        StoreError means the store itself failed: it goes up to restore(), which retries.
        """
        config = self.runtime.config
        unusable = 0
        for info in await self.store.complete():
            started = time.perf_counter()
            try:
                chunks = [chunk async for chunk in self.store.read(info)]
                model = await asyncio.to_thread(_load, chunks, info.sha256, config)
            except (CheckpointDamaged, SnapshotMismatch) as exc:
                logger.warning("checkpoint_unusable", checkpoint=info.id, error=str(exc))
                unusable += 1
                continue
            if config.broker.url == "memory://":
                # The in-process log starts empty each run: offsets begin anew.
                model.offset = -1
            self.runtime.replace_model(model)
            self.last = info
            self.runtime.metrics.checkpoint_restored(info.created_at)
            logger.info(
                "restored",
                checkpoint=info.id,
                offset=info.offset,
                events=info.events,
                size_bytes=info.size,
                seconds=round(time.perf_counter() - started, 3),
            )
            return
        logger.info("no_checkpoint", store=self.store.describe, unusable=unusable)

    # ---- checkpoints ----------------------------------------------------------

    async def checkpoint(self) -> CheckpointInfo:
        """Take and write a checkpoint now (skipped if nothing changed since the last);
        NotCheckpointWriter when another replica holds the lease."""
        async with self._writing:
            if not self.lease.held and not await self.lease.renew():
                raise NotCheckpointWriter(self.lease.seen_holder or "another replica")
            model = self.runtime.model
            last = self.last
            if last is not None and (last.offset, last.events) == (model.offset, model.events):
                return last
            started = time.perf_counter()
            logger.debug("checkpoint_started", offset=model.offset, events=model.events)
            consumer = self.runtime.consumer
            async with consumer.lock:
                locked = time.perf_counter()
                forgets = consumer.forgets
                writing = await start_writing(model, self.store)
            lock_s = time.perf_counter() - locked
            info = await writing
            self.last = info
            await self._prune(forgets)
            seconds = time.perf_counter() - started
            self.runtime.metrics.checkpoint_written(info.size, seconds, info.created_at)
            logger.info(
                "checkpoint_written",
                checkpoint=info.id,
                offset=info.offset,
                events=info.events,
                size_bytes=info.size,
                seconds=round(seconds, 3),
                lock_seconds=round(lock_s, 3),
            )
            return info

    async def _prune(self, forgets: int) -> None:
        if not self.lease.held:
            return  # lost meanwhile: pruning is the new holder's (delete_incomplete too)
        keep = self.runtime.config.store.keep_checkpoints
        if forgets != self._forgets_at_last:
            keep = 1  # older checkpoints still hold the forgotten users
        complete = await self.store.complete()
        await self.store.delete([info.id for info in complete[keep:]])
        await self.store.delete_incomplete()
        self._forgets_at_last = forgets

    async def run(self) -> None:
        """Keep the lease, and checkpoint every store.checkpoint_interval_s while it is
        held; on failure retry with back-off."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.lease.keep(), name="recsrv-checkpoint-lease")
            tasks.create_task(self._periodic(), name="recsrv-checkpoint-periodic")

    async def _periodic(self) -> None:
        interval = self.runtime.config.store.checkpoint_interval_s
        delay = interval
        failures = 0
        while True:
            await asyncio.sleep(delay)
            if not self.lease.held:
                delay, failures = interval, 0
                continue  # another replica writes them
            try:
                await self.checkpoint()
            except NotCheckpointWriter:
                delay, failures = interval, 0
                continue
            except StoreError as exc:
                delay = min(RETRY_DELAYS_S[min(failures, len(RETRY_DELAYS_S) - 1)], interval)
                failures += 1
                self._report_failure(exc)
                continue
            delay, failures = interval, 0
            self._report_recovery()

    async def final(self) -> None:
        """The checkpoint at shutdown, if this replica writes them; then the lease goes.
        A failure is logged, the process still exits."""
        try:
            await self.checkpoint()
        except NotCheckpointWriter as exc:
            logger.info("final_checkpoint_skipped", reason=str(exc))
        except StoreError as exc:
            logger.error("final_checkpoint_failed", error=str(exc))
        await self.lease.release()

    def _report_failure(self, exc: StoreError) -> None:
        self.runtime.metrics.checkpoint_failures.inc()
        self.runtime.metrics.store_up.set(0)
        if self._outage_since is None:
            self._outage_since = time.time()
            logger.warning("checkpoint_failed", error=str(exc), store=self.store.describe)
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self._outage_since))
        self.runtime.warnings[STORE_WARNING] = f"checkpoints failing since {since}: {exc}"

    def _report_recovery(self) -> None:
        self.runtime.metrics.store_up.set(1)
        if self._outage_since is not None:
            logger.info(
                "checkpoint_store_recovered", down_s=round(time.time() - self._outage_since)
            )
            self._outage_since = None
            self.runtime.warnings.pop(STORE_WARNING, None)
