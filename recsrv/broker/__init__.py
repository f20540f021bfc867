"""The event log: where every change of state arrives, in order, with an offset.

Two implementations share the `EventLog` protocol: `amqp.AmqpEventLog` (a
RabbitMQ stream queue behind a topic exchange) and `memory.MemoryEventLog` (an
in-process append-only list with the same offset semantics, for embedded mode and
tests). `open_event_log` picks one from `broker.url`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from recsrv.config import BrokerConfig


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message read from the log."""

    offset: int
    body: bytes
    # Seconds since the epoch from the message's `timestamp` property, if it had one.
    timestamp: float | None


@dataclass(frozen=True, slots=True)
class InvalidCopy:
    """What the consumer copies to the invalid-events exchange for one bad element."""

    element: bytes
    reason: str
    code: str
    field: str | None
    index: int | None
    offset: int


class EventLog(Protocol):
    """A replayable, ordered log of event messages."""

    describe: str

    async def start(self) -> None:
        """Connect and declare what is needed; raise BrokerError if that fails."""

    async def publish(self, body: bytes, routing_key: str) -> None:
        """Append one message; return only once the log has confirmed it."""

    async def publish_invalid(self, copy: InvalidCopy) -> None:
        """Copy a rejected element, with its reason, where operators can inspect it."""

    def consume(self, start_offset: int | None) -> AsyncIterator[Delivery]:
        """Yield messages from `start_offset` (None: the first retained one), forever.

        A message counts as processed when the caller asks for the next one.
        """

    async def end_offset(self) -> int:
        """The offset of the newest message in the log (-1 when empty); may lag a little."""

    async def close(self) -> None:
        """Stop consuming and release connections."""


def open_event_log(config: BrokerConfig) -> EventLog:
    if config.url == "memory://":
        from recsrv.broker.memory import MemoryEventLog

        return MemoryEventLog()
    from recsrv.broker.amqp import AmqpEventLog

    return AmqpEventLog(config)
