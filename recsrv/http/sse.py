"""Server-Sent Events: live recommendation lists per session (design section 5).

The consumer tells the hub which sessions its events touched. The hub waits a few
tens of milliseconds to coalesce a burst, then recomputes each changed session's
list once per distinct request shape (not once per subscriber), in slices so the
event loop stays responsive, and hands each subscriber the newest list. A
subscriber holds at most one pending list: a slow client skips lists it had no time
to read and never delays anyone else. Each handler writes to its own connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import structlog
from aiohttp import web
from aiohttp_sse import sse_response

from recsrv.events import Event, Interaction

logger = structlog.get_logger("recsrv.sse")

# Sessions whose lists are recomputed between two yields to the event loop.
RECOMPUTE_SLICE = 32


@dataclass(frozen=True, slots=True)
class ListRequest:
    """What a subscriber asked for: the list of GET /v1/recommendations with these."""

    session_id: str
    k: int
    category: str | None
    user_id: str | None


@dataclass(eq=False)
class Subscriber:
    request: ListRequest
    # The client address it came from (streams per address are capped).
    client: str = ""
    # The newest list not yet sent (older unsent ones are dropped), and its id.
    pending: tuple[int, bytes] | None = None
    # What the last list sent held (items and strategy, not the model position).
    last_sent: bytes | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False

    def offer(self, message_id: int, computed: Computed) -> None:
        self.pending = (message_id, computed.payload)
        self.last_sent = computed.content
        self.wake.set()


@dataclass(frozen=True, slots=True)
class Computed:
    """A list as sent (`payload`) and what identifies its content (`content`)."""

    content: bytes
    payload: bytes


class TooManySubscribers(Exception):
    """A stream cap is reached: 503 for the server's total (capacity), else 429."""

    def __init__(self, scope: str, limit: int, status: int) -> None:
        super().__init__(f"too many live streams {scope} (limit {limit})")
        self.scope = scope
        self.status = status


class SseHub:
    def __init__(
        self,
        compute: Callable[[ListRequest], Computed],
        coalesce_s: float,
        max_subscribers: int,
        max_per_session: int,
        max_per_client: int,
    ) -> None:
        self.compute = compute
        self.coalesce_s = coalesce_s
        self.max_subscribers = max_subscribers
        self.max_per_session = max_per_session
        self.max_per_client = max_per_client
        self.by_session: dict[str, set[Subscriber]] = {}
        self.by_client: dict[str, int] = {}
        self.count = 0
        self._dirty: set[str] = set()
        self._flush_task: asyncio.Task[None] | None = None
        # Wall-clock milliseconds at start: ids keep increasing across restarts.
        self._next_id = int(time.time() * 1000)
        self.closed = False

    def next_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def subscribe(self, request: ListRequest, client: str = "") -> Subscriber:
        if self.count >= self.max_subscribers:
            raise TooManySubscribers("in total", self.max_subscribers, 503)
        from_client = self.by_client.get(client, 0)
        if from_client >= self.max_per_client:
            raise TooManySubscribers("from this client address", self.max_per_client, 429)
        same_session = self.by_session.get(request.session_id, set())
        if len(same_session) >= self.max_per_session:
            raise TooManySubscribers("for this session", self.max_per_session, 429)
        subscriber = Subscriber(request, client)
        same_session.add(subscriber)
        self.by_session[request.session_id] = same_session
        self.by_client[client] = from_client + 1
        self.count += 1
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        same_session = self.by_session.get(subscriber.request.session_id)
        if same_session is None or subscriber not in same_session:
            return
        same_session.discard(subscriber)
        self.count -= 1
        left = self.by_client[subscriber.client] - 1
        if left:
            self.by_client[subscriber.client] = left
        else:
            del self.by_client[subscriber.client]
        if not same_session:
            del self.by_session[subscriber.request.session_id]

    def events_applied(self, events: Iterable[Event]) -> None:
        """Called by the consumer after each message: mark the touched sessions."""
        if not self.by_session:
            return
        for event in events:
            if type(event) is Interaction:
                if event.session_id in self.by_session:
                    self._dirty.add(event.session_id)
            else:
                # Catalog and privacy events can change any list.
                self._dirty.update(self.by_session)
        if self._dirty and self._flush_task is None and not self.closed:
            self._flush_task = asyncio.create_task(self._flush(), name="recsrv-sse-flush")

    async def _flush(self) -> None:
        try:
            await asyncio.sleep(self.coalesce_s)
            dirty, self._dirty = self._dirty, set()
            for position, session_id in enumerate(dirty):
                if position and position % RECOMPUTE_SLICE == 0:
                    await asyncio.sleep(0)
                self._publish(self.by_session.get(session_id, ()))
        finally:
            self._flush_task = None
            if self._dirty and not self.closed:
                self._flush_task = asyncio.create_task(self._flush(), name="recsrv-sse-flush")

    def _publish(self, subscribers: Iterable[Subscriber]) -> None:
        computed: dict[ListRequest, Computed] = {}
        for subscriber in list(subscribers):
            current = computed.get(subscriber.request)
            if current is None:
                current = computed[subscriber.request] = self.compute(subscriber.request)
            if current.content != subscriber.last_sent:
                subscriber.offer(self.next_id(), current)

    async def close(self) -> None:
        """End every stream (server shutdown)."""
        self.closed = True
        if self._flush_task is not None:
            self._flush_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flush_task
        for same_session in self.by_session.values():
            for subscriber in same_session:
                subscriber.closed = True
                subscriber.wake.set()


async def stream(
    request: web.Request,
    hub: SseHub,
    list_request: ListRequest,
    client: str,
    ping_interval_s: float,
    send_timeout_s: float,
) -> web.StreamResponse:
    """Serve one subscriber until it leaves or the server shuts down."""
    subscriber = hub.subscribe(list_request, client)
    try:
        async with sse_response(
            request, ping_interval=ping_interval_s, send_timeout=send_timeout_s
        ) as response:
            # The current list at once: on first connect and on every reconnect
            # (EventSource sends Last-Event-ID; the newest list is all it needs).
            current = hub.compute(list_request)
            subscriber.last_sent = current.content
            await response.send(
                current.payload.decode(), id=str(hub.next_id()), event="recommendations"
            )
            gone = asyncio.ensure_future(response.wait())
            try:
                await _pump(response, subscriber, gone)
            finally:
                gone.cancel()
        return response
    finally:
        hub.unsubscribe(subscriber)


async def _pump(
    response: web.StreamResponse, subscriber: Subscriber, gone: asyncio.Future[None]
) -> None:
    send = response.send  # type: ignore[attr-defined]
    while not subscriber.closed:
        waiter = asyncio.ensure_future(subscriber.wake.wait())
        await asyncio.wait((waiter, gone), return_when=asyncio.FIRST_COMPLETED)
        if not waiter.done():
            waiter.cancel()
            return  # the client went away (its heartbeat failed)
        subscriber.wake.clear()
        pending, subscriber.pending = subscriber.pending, None
        if pending is None or subscriber.closed:
            continue
        message_id, payload = pending
        try:
            await send(payload.decode(), id=str(message_id), event="recommendations")
        except (ConnectionResetError, RuntimeError, TimeoutError):
            return
