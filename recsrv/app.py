"""Wiring: builds the aiohttp application and runs it until a signal stops it.

Resources are cleanup contexts, set up in order and torn down in reverse: the event
log connection, then the state (restore, consumer, checkpoints, final checkpoint).

Shutdown on SIGTERM or SIGINT, in this order:
1. stop listening, and close idle keep-alive connections;
2. stop consuming: the message in hand is applied whole, nothing after it (a RabbitMQ
   stream keeps the rest for the next start); the periodic checkpoints stop too;
3. end the live SSE streams (they would otherwise hold step 4 for its whole timeout);
4. let in-flight requests finish, for at most server.shutdown_timeout_s, then cancel
   them;
5. with memory://, apply what those requests appended to the in-process log, which
   ends with the process; then the final checkpoint, then close the store and the
   event log. Exit status 0.
A second signal exits at once with status 1: the newest complete checkpoint stays
the one a restart restores, and the stream replays the rest.

A worker of `recsrv run --workers N` (recsrv.workers) runs the same way, with a
`WorkerPlace`: it binds the port with SO_REUSEPORT, serves its own metrics to its
siblings on a unix socket (recsrv.worker_metrics) and answers /metrics for all of
them, stops when its supervisor is gone, and takes a repeat of the stop signal
within SIGNAL_ECHO_S for the same stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import os
import signal
import time
from collections.abc import AsyncIterator, Sequence

import orjson
import structlog
from aiohttp import web

from recsrv.broker import Delivery, EventLog, open_event_log
from recsrv.broker.memory import MemoryEventLog
from recsrv.checkpointer import Checkpointer
from recsrv.config import Config
from recsrv.events import Event
from recsrv.http.api import ALL_WORKERS, CHECKPOINTER, RUNTIME, add_routes, error_middleware
from recsrv.http.cors import install_cors
from recsrv.http.observe import install_observability
from recsrv.http.security import install_security
from recsrv.http.sse import SseHub
from recsrv.http.storefront import SSE_HUB, add_storefront_routes, make_hub
from recsrv.runtime import Runtime
from recsrv.store import CheckpointStore, open_store
from recsrv.worker_metrics import WorkerMetrics, serve_own_metrics
from recsrv.workers import SIGNAL_ECHO_S, WorkerPlace, watch_supervisor

logger = structlog.get_logger("recsrv")

# The demo history spans the last three days; its catalog is older still.
DEMO_HISTORY_S = 3 * 86400 + 60
DEMO_BATCH = 1000


def build_app(
    config: Config, log: EventLog | None = None, store: CheckpointStore | None = None
) -> web.Application:
    """The whole server as an aiohttp app; `log` and `store` override those of the config."""
    runtime = Runtime.build(
        config,
        log if log is not None else open_event_log(config.broker),
        store if store is not None else open_store(config.store),
    )
    app = web.Application(
        middlewares=[error_middleware], client_max_size=config.server.max_body_bytes
    )
    app[RUNTIME] = runtime
    checkpointer = app[CHECKPOINTER] = Checkpointer(runtime)
    runtime.metrics.watch_lease(lambda: checkpointer.lease.held)
    hub = app[SSE_HUB] = make_hub(runtime)
    runtime.consumer.on_applied = functools.partial(_events_applied, runtime, hub)
    add_routes(app)
    add_storefront_routes(app)
    install_cors(app, config.auth.cors_origins)
    install_observability(app)
    install_security(app)
    state = app[STATE_TASK] = StateTask(runtime, app[CHECKPOINTER])
    # At the start of shutdown, before in-flight requests are waited for (module doc).
    app.on_shutdown.append(lambda _: state.stop())
    app.on_shutdown.append(lambda _: hub.close())
    app.cleanup_ctx.append(_event_log)
    app.cleanup_ctx.append(_state)
    return app


def _events_applied(runtime: Runtime, hub: SseHub, _: Delivery, events: Sequence[Event]) -> None:
    """After each delivery: live lists to push, and reads waiting for these events."""
    hub.events_applied(events)
    runtime.read_after_write.events_applied(events)


async def _event_log(app: web.Application) -> AsyncIterator[None]:
    runtime = app[RUNTIME]
    await runtime.log.start()
    yield
    await runtime.log.close()


async def _state(app: web.Application) -> AsyncIterator[None]:
    """Restore, then consume and checkpoint; at shutdown, a last checkpoint."""
    state = app[STATE_TASK]
    state.start()
    yield
    await state.stop()  # already stopped by on_shutdown, unless start-up failed
    await state.finish()


class StateTask:
    """The task that restores the state, then consumes the log and checkpoints it."""

    def __init__(self, runtime: Runtime, checkpointer: Checkpointer) -> None:
        self.runtime = runtime
        self.checkpointer = checkpointer
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name="recsrv-state")
        runtime = self.runtime
        self.task.add_done_callback(lambda done: _report_end(runtime, done))

    async def _run(self) -> None:
        # The server already answers /healthz (and /readyz with 503) while this restores.
        await self.checkpointer.restore()
        # What start-up made (modules, the restored state) lives as long as the server:
        # out of the collector's sight, a full collection walks only what came after,
        # instead of holding the event loop for tens of milliseconds (bench/notes.md).
        # No collection first: it would hold the loop as long, requests already being
        # answered; a little start-up garbage frozen with the rest is the price.
        gc.freeze()
        self.runtime.restored_event.set()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.runtime.consumer.run(), name="recsrv-consumer")
            tasks.create_task(self.checkpointer.run(), name="recsrv-checkpoints")

    async def stop(self) -> None:
        """Stop consuming and checkpointing (a message being applied is finished first)."""
        task = self.task
        if task is None or task.done():
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        async with self.runtime.consumer.lock:
            pass  # a large message is applied in a shielded task: wait until it is whole
        model = self.runtime.model
        logger.info("consuming_stopped", offset=model.offset, events=model.events)

    async def finish(self) -> None:
        """After the last request: the final checkpoint, then close the store."""
        if self.runtime.restored:
            try:
                await self._apply_rest_of_memory_log()
                await self.checkpointer.final()
            finally:
                gc.unfreeze()  # a process that goes on (tests, embedders) collects it again
        await self.runtime.store.close()

    async def _apply_rest_of_memory_log(self) -> None:
        # The in-process log ends with the process: events that requests in flight at
        # the signal published to it are applied now, so the final checkpoint keeps
        # them. A RabbitMQ stream keeps such events for the next start instead.
        log, consumer = self.runtime.log, self.runtime.consumer
        if isinstance(log, MemoryEventLog):
            for delivery in log.messages[consumer.model.offset + 1 :]:
                await consumer.apply(delivery)


STATE_TASK = web.AppKey("state_task", StateTask)


def _report_end(runtime: Runtime, task: asyncio.Task[None]) -> None:
    """The consumer only ends on a bug: say so loudly and stop being ready."""
    if not task.cancelled() and task.exception() is not None:
        error = task.exception()
        # A TaskGroup wraps the one error that ended it: name that error, not the group.
        while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
            error = error.exceptions[0]
        logger.error("state_task_stopped", error=repr(error))
        runtime.problems["consumer"] = f"the consumer stopped: {error!r}"


async def _load_demo(runtime: Runtime) -> None:
    """Publish the demo catalog and its prepared history through the normal event path.

    Every demo event carries an event_id, so loading it again is de-duplicated.
    """
    from recsrv.demo import catalog_events, history

    await runtime.restored_event.wait()
    now = time.time()
    events = catalog_events(now - DEMO_HISTORY_S) + history(now)
    for start in range(0, len(events), DEMO_BATCH):
        await runtime.log.publish(orjson.dumps(events[start : start + DEMO_BATCH]), "demo")
    logger.info("demo_loaded", events=len(events))


async def serve(
    config: Config, stop: asyncio.Event, demo: bool = False, worker: WorkerPlace | None = None
) -> None:
    """Serve until `stop` is set, then shut down in order; `worker`: as that worker."""
    app = build_app(config)
    runtime = app[RUNTIME]
    if worker is not None:
        app[ALL_WORKERS] = WorkerMetrics(runtime.metrics, str(worker.index), worker.siblings())
    if demo:
        demo_task = asyncio.create_task(_load_demo(runtime), name="recsrv-demo")
        app.on_shutdown.append(lambda _: _cancel(demo_task))
    logger.info(
        "starting",
        # By the URL rules of open_event_log and open_store; each side is chosen alone.
        broker_kind="memory" if config.broker.url == "memory://" else "rabbitmq",
        broker=runtime.log.describe,
        store_kind="files" if config.store.url.startswith("file://") else "mongodb",
        store=runtime.store.describe,
        config=config.source,
    )
    if config.auth.open:
        logger.warning("no API keys configured: the API is open to anyone who can reach it")
    runner = web.AppRunner(app, shutdown_timeout=config.server.shutdown_timeout_s, access_log=None)
    await runner.setup()
    site = web.TCPSite(
        runner, config.server.host, config.server.port, reuse_port=worker is not None
    )
    await site.start()
    logger.info("listening", url=f"http://{config.server.host}:{config.server.port}")
    try:
        async with contextlib.AsyncExitStack() as duties:
            if worker is not None:
                # Its socket appearing also tells the supervisor that it listens.
                path = worker.socket(worker.index)
                await duties.enter_async_context(serve_own_metrics(runtime.metrics, path))
                watch = asyncio.create_task(
                    watch_supervisor(stop, worker.directory), name="recsrv-supervisor"
                )
                duties.push_async_callback(_cancel, watch)
            await stop.wait()
    finally:
        logger.info("stopping")
        await runner.cleanup()
        logger.info("stopped")


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def run(config: Config, demo: bool = False, worker: WorkerPlace | None = None) -> int:
    """Run the server in this process until SIGINT or SIGTERM; `worker`: as that worker
    of `recsrv run --workers N`."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        signalled_at: float | None = None

        def on_signal() -> None:
            nonlocal signalled_at
            now = time.monotonic()
            echo = signalled_at is not None and now - signalled_at < SIGNAL_ECHO_S
            if worker is not None and echo:
                return  # the same stop, also forwarded by the supervisor (recsrv.workers)
            if stop.is_set():
                # Second signal: do not wait for a clean shutdown.
                logger.warning("exiting_at_once", reason="second signal during shutdown")
                os._exit(1)
            stop.set()
            signalled_at = now

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        await serve(config, stop, demo, worker)

    asyncio.run(main())
    return 0
