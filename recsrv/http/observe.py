"""Request metrics and log context, and the probes of event-loop lag and consumer lag.

`install_observability` adds to the app, before it starts:
- an outermost middleware that gives each request an id (X-Request-Id when the
  caller sent a sane one, else a new one), binds it and the session id into the
  structlog context, and counts the request by route template, method and status;
- an on_response_prepare hook that echoes X-Request-Id, streamed responses included;
- a cleanup context with two background probes: how late the event loop runs a
  timer, and where the stream ends (the consumer's lag in messages);
- the SSE subscriber count, read from the hub at scrape time.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import secrets
import time
from collections.abc import AsyncIterator
from contextvars import ContextVar
from dataclasses import dataclass

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from structlog.contextvars import bind_contextvars

from recsrv.errors import BrokerError
from recsrv.http.api import RUNTIME
from recsrv.http.storefront import SSE_HUB
from recsrv.metrics import UNMATCHED_ROUTE, HttpStats, Metrics
from recsrv.runtime import Runtime

logger = structlog.get_logger("recsrv.observe")

REQUEST_ID_HEADER = "X-Request-Id"
# What a caller's request id may be: printable ASCII, no spaces, bounded, so it is
# safe in a log line and in a response header.
SANE_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")
MAX_SESSION_ID_CHARS = 128
# The status counted for a request whose handler was cancelled before it answered
# (nginx's "client closed request"; aiohttp cancels handlers at shutdown, and on a
# closed connection when the server runs with handler_cancellation).
CANCELLED_STATUS = 499
LOOP_PROBE_S = 0.25
# How often the stream's end is read: a probe costs a round trip and a short-lived
# consumer on the broker, so it is sampled, not read on every scrape.
STREAM_END_PROBE_S = 5.0


@dataclass(slots=True)
class _Exchange:
    """The current request's id, and the status sent once its response is prepared."""

    request_id: str
    sent_status: int | None = None


# aiohttp runs each request in a task of its own, so a value set here never leaks into
# another request (nothing to clear afterwards).
_exchange: ContextVar[_Exchange | None] = ContextVar("recsrv_exchange", default=None)


def install_observability(app: web.Application) -> None:
    """Add the metrics middleware and background probes to `app` (before it starts)."""
    runtime = app[RUNTIME]
    # First in the list, so outermost: it sees the status error_middleware answers with.
    app.middlewares.insert(0, observe_middleware(runtime.metrics.http))
    app.on_response_prepare.append(_on_prepare)
    hub = app[SSE_HUB]
    runtime.metrics.watch_subscribers(lambda: hub.count)
    app.cleanup_ctx.append(_probes)


# New request ids: a random prefix per process and a counter, unique across processes
# and restarts, and ten times cheaper than a uuid4 per request.
_ID_PREFIX = secrets.token_hex(6)
_id_counter = itertools.count(1)


def request_id_from(header: str | None) -> str:
    """The caller's request id when it is sane, else a new one."""
    if header is not None and SANE_REQUEST_ID.fullmatch(header):
        return header
    return f"{_ID_PREFIX}-{next(_id_counter):x}"


def observe_middleware(stats: HttpStats) -> Middleware:
    @web.middleware
    async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        request_id = request_id_from(request.headers.get(REQUEST_ID_HEADER))
        exchange = _Exchange(request_id)
        _exchange.set(exchange)
        session_id = request.query.get("session_id") or request.match_info.get("session_id")
        if session_id and len(session_id) <= MAX_SESSION_ID_CHARS:
            bind_contextvars(request_id=request_id, session_id=session_id)
        else:
            bind_contextvars(request_id=request_id)
        # The route's template, never the raw path: one time series per route.
        resource = request.match_info.route.resource
        route = UNMATCHED_ROUTE if resource is None else resource.canonical
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # statuses below 400 pass error_middleware
            stats.finished(route, request.method, exc.status, time.perf_counter() - started)
            raise
        except asyncio.CancelledError:
            # A stream the client left ends so when the server cancels handlers of
            # closed connections: it is counted with the status it was sent with.
            status = exchange.sent_status
            stats.finished(route, request.method, status or CANCELLED_STATUS, None)
            raise
        except Exception:
            stats.finished(route, request.method, 500, time.perf_counter() - started)
            raise
        # A response already sent when the handler returns is a stream (SSE): its
        # length is the subscriber's stay, and would swamp the latencies.
        seconds = None if response.prepared else time.perf_counter() - started
        stats.finished(route, request.method, response.status, seconds)
        return response

    return observe


async def _on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """Echo the request id (streams too: their headers leave before the handler ends)."""
    exchange = _exchange.get()
    if exchange is not None:
        response.headers[REQUEST_ID_HEADER] = exchange.request_id
        exchange.sent_status = response.status


async def _probes(app: web.Application) -> AsyncIterator[None]:
    runtime = app[RUNTIME]
    tasks = [
        asyncio.create_task(probe_loop_lag(runtime.metrics), name="recsrv-loop-lag"),
        asyncio.create_task(probe_stream_end(runtime), name="recsrv-stream-end"),
    ]
    yield
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def probe_loop_lag(metrics: Metrics, interval_s: float = LOOP_PROBE_S) -> None:
    """Sleep `interval_s` again and again; record how much later than asked it wakes."""
    loop = asyncio.get_running_loop()
    while True:
        asked = loop.time() + interval_s
        await asyncio.sleep(interval_s)
        metrics.loop_lag_seconds.observe(max(loop.time() - asked, 0.0))


async def probe_stream_end(runtime: Runtime, interval_s: float = STREAM_END_PROBE_S) -> None:
    """Sample the stream's newest offset; /metrics reports the lag behind it."""
    # Once restored, the event log is started (it starts first) and the offset means
    # something.
    await runtime.restored_event.wait()
    while True:
        await sample_stream_end(runtime)
        await asyncio.sleep(interval_s)


async def sample_stream_end(runtime: Runtime) -> None:
    try:
        runtime.metrics.stream_end = await runtime.log.end_offset()
    except BrokerError as exc:
        # Unknown: the lag is left out of /metrics rather than shown stale; /readyz
        # and the consumer report the broker's failure.
        runtime.metrics.stream_end = None
        _raise_if_cancelling(exc)
        logger.debug("stream_end_unreadable", error=str(exc))
    except Exception as exc:
        # A probe must outlive a bug in what it probes, or the lag would go missing
        # for the rest of the run.
        runtime.metrics.stream_end = None
        _raise_if_cancelling(exc)
        logger.exception("stream_end_probe_failed")


def _raise_if_cancelling(error: Exception) -> None:
    """Re-raise a cancellation that an error swallowed.

    Python 3.11's asyncio.wait_for loses a cancellation that arrives as the awaited
    future fails (end_offset waits that way): the task then sees only the error, and
    a shutdown waiting for the probe would wait forever.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from error
