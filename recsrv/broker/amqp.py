"""RabbitMQ event log: a topic exchange bound with '#' to a stream queue.

The stream keeps every message for `broker.max_age`, so state can be rebuilt by
replaying it from any offset. recsrv keeps its own position (the offset of the last
message applied); acks only return consumer credit, batched with multiple=True.

Deliveries are taken from aio-pika's transport (aiormq) directly: aio-pika would wrap
each in an IncomingMessage and run the callback in a task of its own, a large share
of what one small message costs to read, for nothing this consumer uses.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange
from aiormq.abc import AbstractChannel as RawChannel
from aiormq.abc import DeliveredMessage

from recsrv.broker import Delivery, InvalidCopy
from recsrv.config import BrokerConfig, redact_url
from recsrv.errors import BrokerError

# Errors aio-pika and its transport raise when the broker or the connection fails.
AMQP_ERRORS = (
    aiormq.exceptions.AMQPError,
    aiormq.exceptions.ChannelInvalidStateError,  # a RuntimeError: publish on a dead channel
    ConnectionError,
    OSError,
    asyncio.TimeoutError,
)

# How the end of the stream is probed (see end_offset): how long a probe result is
# reused, how long to wait for the first and the following deliveries, at most how
# long a probe runs on a busy stream, and its prefetch.
END_OFFSET_CACHE_S = 1.0
PROBE_FIRST_WAIT_S = 0.5
PROBE_NEXT_WAIT_S = 0.05
PROBE_MAX_S = 1.0
PROBE_PREFETCH = 1000


class AmqpEventLog:
    def __init__(self, config: BrokerConfig) -> None:
        self.config = config
        self.describe = f"RabbitMQ stream {config.queue!r} behind exchange {config.exchange!r}"
        self._connection: AbstractConnection | None = None
        self._publish_channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._invalid_exchange: AbstractExchange | None = None
        self._end_offset_cache: tuple[float, int] | None = None
        # The highest offset any consumer of ours has received: the stream reaches at
        # least that far, whatever a probe says.
        self._highest_received = -1

    async def start(self) -> None:
        try:
            self._connection = await aio_pika.connect(
                self.config.url, timeout=self.config.connect_timeout_s
            )
            channel = await self._connection.channel(publisher_confirms=True)
            self._publish_channel = channel
            self._exchange = await channel.declare_exchange(
                self.config.exchange, aio_pika.ExchangeType.TOPIC, durable=True
            )
            stream = await channel.declare_queue(
                self.config.queue,
                durable=True,
                arguments={"x-queue-type": "stream", "x-max-age": self.config.max_age},
            )
            await stream.bind(self._exchange, routing_key="#")
            self._invalid_exchange = await channel.declare_exchange(
                self.config.invalid_exchange, aio_pika.ExchangeType.TOPIC, durable=True
            )
            invalid_queue = await channel.declare_queue(self.config.invalid_exchange, durable=True)
            await invalid_queue.bind(self._invalid_exchange, routing_key="#")
        except AMQP_ERRORS as exc:
            await self.close()
            where = redact_url(self.config.url)
            raise BrokerError(f"cannot set up RabbitMQ at {where}: {exc!r}") from exc

    async def publish(self, body: bytes, routing_key: str) -> None:
        exchange = self._require(self._exchange)
        message = aio_pika.Message(
            body,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            timestamp=time.time(),
        )
        try:
            confirmation = await exchange.publish(message, routing_key=routing_key)
        except AMQP_ERRORS as exc:
            raise BrokerError(f"publish to {self.config.exchange!r} failed: {exc!r}") from exc
        if not isinstance(confirmation, aiormq.spec.Basic.Ack):
            raise BrokerError(f"RabbitMQ did not confirm the publish: {confirmation!r}")

    async def publish_invalid(self, copy: InvalidCopy) -> None:
        exchange = self._require(self._invalid_exchange)
        headers: dict[str, Any] = {
            "x-recsrv-reason": copy.reason,
            "x-recsrv-code": copy.code,
            "x-recsrv-offset": copy.offset,
        }
        if copy.field is not None:
            headers["x-recsrv-field"] = copy.field
        if copy.index is not None:
            headers["x-recsrv-index"] = copy.index
        message = aio_pika.Message(
            copy.element,
            headers=headers,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            timestamp=time.time(),
        )
        try:
            await exchange.publish(message, routing_key=copy.code)
        except AMQP_ERRORS as exc:
            name = self.config.invalid_exchange
            raise BrokerError(f"publish to {name!r} failed: {exc!r}") from exc

    async def consume(self, start_offset: int | None) -> AsyncIterator[Delivery]:
        start: int | str = "first" if start_offset is None else int(start_offset)
        # Not aio-pika's queue iterator: on close it nacks what it buffered, and a
        # stream answers a nack by closing the whole connection. Deliveries not yet
        # acked are simply dropped with the channel; the offset is ours to keep.
        inbox: Inbox = asyncio.Queue()
        channel, raw = await self._open_consumer(start, self.config.prefetch, inbox)
        unacked: int | None = None  # delivery tag
        pending = 0
        try:
            while True:
                message = await _next_message(inbox)
                yield _delivery(message)
                # The caller asked for the next message: this one is processed.
                unacked, pending = _tag(message), pending + 1
                if pending >= self.config.ack_every:
                    await raw.basic_ack(unacked, multiple=True)
                    unacked, pending = None, 0
        except AMQP_ERRORS as exc:
            raise BrokerError(f"consuming {self.config.queue!r} failed: {exc!r}") from exc
        finally:
            await _close_quietly(channel, raw, unacked)

    async def _open_consumer(
        self,
        start: int | str,
        prefetch: int,
        inbox: Inbox,
    ) -> tuple[AbstractChannel, RawChannel]:
        """A channel of its own consuming the stream from `start` into `inbox`, and its
        aiormq channel (where deliveries are acked)."""
        connection = self._require(self._connection)
        try:
            channel: AbstractChannel = await connection.channel()
            # Wakes the reader when the channel dies: it is waiting on the inbox.
            channel.close_callbacks.add(lambda _, exc: inbox.put_nowait(ChannelClosed(exc)))
            # A stream refuses a consumer without a prefetch limit.
            await channel.set_qos(prefetch_count=prefetch)
            raw = await channel.get_underlay_channel()
            await raw.basic_consume(
                self.config.queue, self._receiver(inbox), arguments={"x-stream-offset": start}
            )
        except AMQP_ERRORS as exc:
            raise BrokerError(f"cannot consume {self.config.queue!r}: {exc!r}") from exc
        return channel, raw

    def _receiver(self, inbox: Inbox) -> Callable[[DeliveredMessage], Coroutine[Any, Any, None]]:
        async def receive(message: DeliveredMessage) -> None:
            offset = _headers(message).get("x-stream-offset")
            if isinstance(offset, int) and offset > self._highest_received:
                self._highest_received = offset
            # Unbounded: the prefetch limit bounds what the broker sends ahead.
            inbox.put_nowait(message)

        return receive

    async def end_offset(self) -> int:
        """The newest offset: the highest our consumers received, or what a short-lived
        consumer started at "last" reads (the stream's last chunk, until it goes quiet).

        A passive declare's message_count alone would be cheaper, but RabbitMQ refreshes
        it only every few seconds, which would report a restarting consumer as caught up.
        """
        now = time.monotonic()
        if self._end_offset_cache and now - self._end_offset_cache[0] < END_OFFSET_CACHE_S:
            return self._end_offset_cache[1]
        # A stream known not to be empty gets time to deliver its last chunk even on a
        # loaded machine; an empty one answers nothing, so that wait must stay short.
        count = await self._stale_length()
        known_end = self._highest_received
        first_wait = (
            self.config.connect_timeout_s if count or known_end >= 0 else PROBE_FIRST_WAIT_S
        )
        inbox: Inbox = asyncio.Queue()
        channel, raw = await self._open_consumer("last", PROBE_PREFETCH, inbox)
        end, wait, deadline = known_end, first_wait, now + first_wait + PROBE_MAX_S
        try:
            while time.monotonic() < deadline:
                try:
                    message = await asyncio.wait_for(_next_message(inbox), wait)
                except TimeoutError:
                    break
                end, wait = max(end, _header_offset(message)), PROBE_NEXT_WAIT_S
                await raw.basic_ack(_tag(message))
        except AMQP_ERRORS as exc:
            raise BrokerError(f"cannot read the end of {self.config.queue!r}: {exc!r}") from exc
        finally:
            await _close_quietly(channel, raw, None)
        self._end_offset_cache = (now, end)
        return end

    async def _stale_length(self) -> int:
        """The stream's message count as RabbitMQ last refreshed it (seconds old)."""
        channel = self._require(self._publish_channel)
        try:
            queue = await channel.declare_queue(self.config.queue, passive=True)
        except AMQP_ERRORS as exc:
            raise BrokerError(f"cannot declare {self.config.queue!r}: {exc!r}") from exc
        return queue.declaration_result.message_count or 0

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        self._exchange = self._invalid_exchange = self._publish_channel = None
        if connection is not None and not connection.is_closed:
            await connection.close()

    def _require(self, value: Any) -> Any:
        if value is None:
            raise BrokerError("the RabbitMQ connection is not open")
        return value


class ChannelClosed:
    """Put in a consumer's inbox when its channel closes."""

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


Inbox = asyncio.Queue[DeliveredMessage | ChannelClosed]


async def _next_message(inbox: Inbox) -> DeliveredMessage:
    """The next delivery, or BrokerError if the channel closed first."""
    item = await inbox.get()
    if isinstance(item, ChannelClosed):
        raise BrokerError(f"the consumer channel closed: {item.error!r}")
    return item


async def _close_quietly(channel: AbstractChannel, raw: RawChannel, unacked: int | None) -> None:
    if channel.is_closed:
        return
    try:
        if unacked is not None:
            await raw.basic_ack(unacked, multiple=True)
        await channel.close()
    except Exception:
        # The connection is going away anyway. aiormq fails what was pending on a
        # connection closed cleanly (our own close at shutdown) with a bare Exception.
        pass


def _headers(message: DeliveredMessage) -> dict[str, Any]:
    return message.header.properties.headers or {}


def _tag(message: DeliveredMessage) -> int:
    tag = message.delivery_tag
    if tag is None:
        raise BrokerError(f"a delivery without a delivery tag: {message.delivery!r}")
    return tag


def _header_offset(message: DeliveredMessage) -> int:
    offset = _headers(message).get("x-stream-offset")
    if not isinstance(offset, int):
        raise BrokerError(f"delivery without an x-stream-offset header: {_headers(message)!r}")
    return offset


def _delivery(message: DeliveredMessage) -> Delivery:
    stamp = message.header.properties.timestamp
    return Delivery(
        offset=_header_offset(message),
        body=message.body,
        timestamp=stamp.timestamp() if stamp is not None else None,
    )
