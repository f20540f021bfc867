"""Checkpoints of the whole state: restore at start, periodic, on demand, at shutdown.

A checkpoint is taken between two messages (the consumer's lock is held, so no event
is half applied) and serialised in a worker thread; reads keep being served while it
runs. Writing to the store happens after the lock is released, and the chunks are let
go a few at a time afterwards. When the store fails,
the state lives on in memory, the failure is logged once per outage, reported in
/readyz and in metrics, and the checkpoint is retried with back-off.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import structlog

from recsrv.config import Config
from recsrv.errors import CheckpointDamaged, StoreError
from recsrv.model import Model
from recsrv.runtime import Runtime
from recsrv.state.snapshot import STATE_FORMAT, SnapshotMismatch, dump_state, load_state
from recsrv.store import CheckpointInfo
from recsrv.store.codec import Encoded, decode, encode

logger = structlog.get_logger("recsrv.checkpoint")

RETRY_DELAYS_S = (1.0, 2.0, 5.0, 10.0, 30.0)


def _load(chunks: list[bytes], sha256: str, config: Config) -> Model:
    """Decode and rebuild a model (runs in a worker thread)."""
    return load_state(decode(chunks, sha256), config.model, config.sessions)


async def snapshot(model: Model) -> Encoded:
    """The model's state as checkpoint chunks, serialised in a worker thread. The caller
    holds the consumer's lock until this returns (no event may be applied meanwhile)."""
    return await asyncio.to_thread(lambda: encode(dump_state(model)))


async def release(chunks: list[bytes]) -> None:
    """Empty `chunks` one at a time, newest first, letting the event loop run in between;
    the caller holds no other reference to them. Freeing the ~240 chunks of a 1 GB
    checkpoint at once stalled the loop for 60-90 ms here: most frees are instant, but
    those that hand memory back to the system take up to 5 ms each."""
    while chunks:
        chunks.pop()
        await asyncio.sleep(0)


STORE_WARNING = "store"


class Checkpointer:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.store = runtime.store
        self.last: CheckpointInfo | None = None
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
        """Take and write a checkpoint now (skipped if nothing changed since the last)."""
        async with self._writing:
            model = self.runtime.model
            last = self.last
            if last is not None and (last.offset, last.events) == (model.offset, model.events):
                return last
            started = time.perf_counter()
            logger.debug("checkpoint_started", offset=model.offset, events=model.events)
            consumer = self.runtime.consumer
            async with consumer.lock:
                forgets = consumer.forgets
                offset, events = model.offset, model.events
                encoded = await snapshot(model)
            info = CheckpointInfo(
                id=f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:8]}",
                created_at=time.time(),
                offset=offset,
                events=events,
                format=STATE_FORMAT,
                chunks=len(encoded.chunks),
                size=encoded.size,
                sha256=encoded.sha256,
            )
            try:
                await self.store.write(info, encoded.chunks)
            finally:
                await release(encoded.chunks)
            self.last = info
            await self._prune(forgets)
            seconds = time.perf_counter() - started
            self.runtime.metrics.checkpoint_written(info.size, seconds, info.created_at)
            logger.info(
                "checkpoint_written",
                checkpoint=info.id,
                offset=offset,
                events=events,
                size_bytes=info.size,
                seconds=round(seconds, 3),
            )
            return info

    async def _prune(self, forgets: int) -> None:
        keep = self.runtime.config.store.keep_checkpoints
        if forgets != self._forgets_at_last:
            keep = 1  # older checkpoints still hold the forgotten users
        complete = await self.store.complete()
        await self.store.delete([info.id for info in complete[keep:]])
        await self.store.delete_incomplete()
        self._forgets_at_last = forgets

    async def run(self) -> None:
        """Checkpoint every store.checkpoint_interval_s; on failure retry with back-off."""
        interval = self.runtime.config.store.checkpoint_interval_s
        delay = interval
        failures = 0
        while True:
            await asyncio.sleep(delay)
            try:
                await self.checkpoint()
            except StoreError as exc:
                delay = min(RETRY_DELAYS_S[min(failures, len(RETRY_DELAYS_S) - 1)], interval)
                failures += 1
                self._report_failure(exc)
                continue
            delay, failures = interval, 0
            self._report_recovery()

    async def final(self) -> None:
        """The checkpoint at shutdown; a failure is logged, the process still exits."""
        try:
            await self.checkpoint()
        except StoreError as exc:
            logger.error("final_checkpoint_failed", error=str(exc))

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
