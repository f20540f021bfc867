"""The consumer: reads the event log from the model's offset and applies it.

Each message is decoded once; its valid events are applied in order and its invalid
elements are copied, with their reasons, to the invalid-events exchange. A message
counts as applied only once every element is either in the state or recorded as
invalid, so nothing is silently dropped.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Sequence

import orjson
import structlog

from recsrv.broker import Delivery, EventLog, InvalidCopy
from recsrv.config import BrokerConfig
from recsrv.errors import BrokerError
from recsrv.events import USER_FORGET, Decoded, Event, Invalid, decode_body, event_to_json
from recsrv.metrics import Metrics, add_counts
from recsrv.model import Model

logger = structlog.get_logger("recsrv.consumer")

# Events applied between two yields to the event loop: at 50-100 µs an event here, a
# slice holds the loop for 2-3 ms, and a message of 100 events no longer delays every
# request in flight by 5-10 ms at once (P3's p99).
APPLY_SLICE = 32
# Invalid-element copies published before waiting for their confirms.
INVALID_WINDOW = 256
RETRY_DELAYS_S = (0.5, 1.0, 2.0, 5.0, 10.0)


class Consumer:
    def __init__(
        self,
        log: EventLog,
        model: Model,
        config: BrokerConfig,
        metrics: Metrics,
        on_applied: Callable[[Delivery, Sequence[Event]], None] | None = None,
    ) -> None:
        self.log = log
        self.model = model
        self.config = config
        self.metrics = metrics
        self.stats = metrics.consumer
        self.on_applied = on_applied
        # Reasons already logged: an invalid element is logged once per reason, not
        # once per element, so a flood of bad input cannot flood the logs.
        self._logged_reasons: set[str] = set()
        # Held while a message is half applied: a snapshot of the state (a checkpoint)
        # must see whole messages only, or a replay would count events twice.
        self.lock = asyncio.Lock()
        # user.forget events applied so far (the checkpointer prunes after one).
        self.forgets = 0

    async def run(self) -> None:
        """Consume forever; on a broker failure, reconnect with back-off and resume."""
        failures = 0
        while True:
            start = self.model.offset + 1 if self.model.offset >= 0 else None
            try:
                async for delivery in self.log.consume(start):
                    await self.apply(delivery)
                    failures = 0
                return
            except BrokerError as exc:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    # A cancellation lost in the error (Python 3.11's wait_for can
                    # drop one): stop, or shutdown would wait for us forever.
                    raise asyncio.CancelledError from exc
                delay = RETRY_DELAYS_S[min(failures, len(RETRY_DELAYS_S) - 1)]
                failures += 1
                logger.warning("consumer_failed", error=str(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                await self._reconnect()

    async def _reconnect(self) -> None:
        try:
            await self.log.close()
            await self.log.start()
        except BrokerError as exc:
            logger.warning("reconnect_failed", error=str(exc))

    async def apply(self, delivery: Delivery) -> None:
        """Apply one message, unless the model already holds it."""
        if delivery.offset <= self.model.offset:
            return
        started = time.perf_counter()
        stats = self.stats
        stats.messages += 1
        default_ts = delivery.timestamp if delivery.timestamp is not None else time.time()
        decoded = decode_body(
            delivery.body, default_ts=default_ts, max_elements=self.config.max_message_events
        )
        await self._record_invalids(delivery.offset, decoded.invalid)
        failed: list[Invalid] = []
        applying = self._apply_whole(decoded, delivery.offset, failed)
        if len(decoded.events) > APPLY_SLICE:
            # Applied in slices: shielded, so cancelling the consumer (shutdown) lets the
            # message finish and the final checkpoint, which waits for the lock, never
            # sees half of one. A smaller message has no await inside: it is atomic.
            await asyncio.shield(applying)
        else:
            await applying
        await self._record_invalids(delivery.offset, failed)
        stats.apply_seconds.observe(time.perf_counter() - started)
        if delivery.timestamp is not None:
            # A publisher's clock may run ahead; a negative lag means none.
            stats.arrival_lag_seconds.observe(max(time.time() - delivery.timestamp, 0.0))
        if self.on_applied is not None:
            self.on_applied(delivery, decoded.events)

    async def _apply_whole(self, decoded: Decoded, offset: int, failed: list[Invalid]) -> None:
        async with self.lock:
            await self._apply_events(decoded, failed)
            self.model.offset = offset

    async def _apply_events(self, decoded: Decoded, failed: list[Invalid]) -> None:
        # Counted by the model in plain dicts, a slice at a time, and added to the
        # metrics once per message. The rare events not applied (duplicates, failures)
        # are counted apart: received is applied + those, with no second count per event.
        applied_by_type: dict[str, int] = {}
        skipped_by_type: dict[str, int] = {}
        duplicates = 0
        events = decoded.events
        for start in range(0, len(events), APPLY_SLICE):
            if start:
                await asyncio.sleep(0)
            # One call per slice: the model applies the neighbour updates of the
            # whole slice at once (the same state as one event at a time).
            on_error = functools.partial(self._apply_failed, start, failed, skipped_by_type)
            outcome = self.model.apply_events(events[start : start + APPLY_SLICE], on_error)
            add_counts(applied_by_type, outcome.applied)
            if outcome.duplicates:
                add_counts(skipped_by_type, outcome.duplicates)
                duplicates += sum(outcome.duplicates.values())
        self.forgets += applied_by_type.get(USER_FORGET, 0)
        stats = self.stats
        add_counts(stats.applied, applied_by_type)
        add_counts(stats.received, applied_by_type)
        if skipped_by_type:
            add_counts(stats.received, skipped_by_type)
            stats.duplicates += duplicates

    async def _record_invalids(self, offset: int, invalids: Sequence[Invalid]) -> None:
        """Copy a message's invalid elements, INVALID_WINDOW awaiting confirms at once: one
        confirm round trip each would hold a message of 10,000 bad elements for seconds."""
        for start in range(0, len(invalids), INVALID_WINDOW):
            window = invalids[start : start + INVALID_WINDOW]
            await asyncio.gather(*(self._record_invalid(offset, invalid) for invalid in window))

    @staticmethod
    def _apply_failed(
        start: int,
        failed: list[Invalid],
        skipped_by_type: dict[str, int],
        position: int,
        event: Event,
        exc: Exception,
    ) -> None:
        # A bug must not stop the stream: the event is recorded as invalid with the
        # error (and the same happens on a replay, so state stays a function of the
        # stream). The model calls this inside its except block: the traceback is logged.
        position += start
        logger.exception("apply_failed", event_type=event.type, position=position)
        failed.append(
            Invalid(
                code="apply_failed",
                index=position,
                field=None,
                reason=f"internal error while applying: {exc!r}",
                element=orjson.dumps(event_to_json(event)),
            )
        )
        skipped_by_type[event.type] = skipped_by_type.get(event.type, 0) + 1

    async def _record_invalid(self, offset: int, invalid: Invalid) -> None:
        invalid_counts = self.stats.invalid
        invalid_counts[invalid.code] = invalid_counts.get(invalid.code, 0) + 1
        if invalid.reason not in self._logged_reasons and len(self._logged_reasons) < 10_000:
            self._logged_reasons.add(invalid.reason)
            logger.warning(
                "invalid_event",
                offset=offset,
                index=invalid.index,
                field=invalid.field,
                reason=invalid.reason,
            )
        copy = InvalidCopy(
            element=invalid.element,
            reason=invalid.reason,
            code=invalid.code,
            field=invalid.field,
            index=invalid.index,
            offset=offset,
        )
        await self.log.publish_invalid(copy)
