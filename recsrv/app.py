"""Wiring: builds the aiohttp application and runs it until a signal stops it.

Resources are cleanup contexts, set up in order and torn down in reverse: the event
log connection, then the state (restore, consumer, checkpoints, final checkpoint).
Shutdown has three phases: stop taking requests, let in-flight ones finish
(server.shutdown_timeout_s), close resources. A second SIGINT/SIGTERM exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator

import orjson
import structlog
from aiohttp import web

from recsrv.broker import EventLog, open_event_log
from recsrv.checkpointer import Checkpointer
from recsrv.config import Config
from recsrv.http.api import CHECKPOINTER, RUNTIME, add_routes, error_middleware
from recsrv.http.cors import install_cors
from recsrv.http.storefront import SSE_HUB, add_storefront_routes, make_hub
from recsrv.runtime import Runtime
from recsrv.store import CheckpointStore, open_store

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
    app[CHECKPOINTER] = Checkpointer(runtime)
    hub = app[SSE_HUB] = make_hub(runtime)
    runtime.consumer.on_applied = lambda _, events: hub.events_applied(events)
    add_routes(app)
    add_storefront_routes(app)
    install_cors(app, config.auth.cors_origins)
    # Live streams end at the start of shutdown, not after the grace period.
    app.on_shutdown.append(lambda _: hub.close())
    app.cleanup_ctx.append(_event_log)
    app.cleanup_ctx.append(_state)
    return app


async def _event_log(app: web.Application) -> AsyncIterator[None]:
    runtime = app[RUNTIME]
    await runtime.log.start()
    yield
    await runtime.log.close()


async def _state(app: web.Application) -> AsyncIterator[None]:
    """Restore, then consume and checkpoint; at shutdown, stop and write a last checkpoint."""
    runtime, checkpointer = app[RUNTIME], app[CHECKPOINTER]
    task = asyncio.create_task(_restore_and_run(runtime, checkpointer), name="recsrv-state")
    task.add_done_callback(lambda done: _report_end(runtime, done))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    if runtime.restored:
        await checkpointer.final()
    await runtime.store.close()


async def _restore_and_run(runtime: Runtime, checkpointer: Checkpointer) -> None:
    # The server already answers /healthz (and /readyz with 503) while this restores.
    await checkpointer.restore()
    runtime.restored_event.set()
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(runtime.consumer.run(), name="recsrv-consumer")
        tasks.create_task(checkpointer.run(), name="recsrv-checkpoints")


def _report_end(runtime: Runtime, task: asyncio.Task[None]) -> None:
    """The consumer only ends on a bug: say so loudly and stop being ready."""
    if not task.cancelled() and task.exception() is not None:
        logger.error("state_task_stopped", error=repr(task.exception()))
        runtime.problems["consumer"] = f"the consumer stopped: {task.exception()!r}"


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


async def serve(config: Config, stop: asyncio.Event, demo: bool = False) -> None:
    """Serve until `stop` is set, then shut down in order."""
    app = build_app(config)
    runtime = app[RUNTIME]
    if demo:
        demo_task = asyncio.create_task(_load_demo(runtime), name="recsrv-demo")
        app.on_shutdown.append(lambda _: _cancel(demo_task))
    logger.info(
        "starting",
        mode="embedded" if config.embedded else "production",
        broker=runtime.log.describe,
        store=runtime.store.describe,
        config=config.source,
    )
    if not (config.auth.secret_keys or config.auth.public_keys):
        logger.warning("no API keys configured: the API is open to anyone who can reach it")
    runner = web.AppRunner(app, shutdown_timeout=config.server.shutdown_timeout_s, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.server.host, config.server.port)
    await site.start()
    logger.info("listening", url=f"http://{config.server.host}:{config.server.port}")
    try:
        await stop.wait()
    finally:
        logger.info("stopping")
        await runner.cleanup()
        logger.info("stopped")


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def run(config: Config, demo: bool = False) -> int:
    """Run the server in this process until SIGINT or SIGTERM."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal() -> None:
            if stop.is_set():
                os._exit(1)  # second signal: do not wait for a clean shutdown
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        await serve(config, stop, demo)

    asyncio.run(main())
    return 0
