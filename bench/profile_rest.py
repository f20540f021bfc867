"""Where a GET /v1/recommendations spends its time: cProfile around a wrk run (P3).

The same shop and load as bench/rest.py, but the server runs in this process
(embedded event log, events published to it directly at --rate per second) so that
the profiler sees the request path only, not the building of the state. Prints the
functions with the most time of their own, and the cumulative time of recsrv's.

    python bench/profile_rest.py [--items 50000] [--sessions 40000] [--seconds 10]
        [--rate 1000] [--top 35] [--output server.prof]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import pstats
import random
import shutil
import tempfile
import time
from pathlib import Path

import orjson
from aiohttp import web
from rest import LUA, Shop, batches, history, wrk
from services import embedded_config, free_port

from recsrv.app import build_app
from recsrv.http.api import RUNTIME


async def feed(runtime: object, shop: Shop, sessions: list[str], rate: float) -> None:
    log = runtime.log  # type: ignore[attr-defined]
    rng = random.Random(5)
    next_at = time.monotonic()
    while True:
        events = [
            {
                "type": "view",
                "session_id": rng.choice(sessions),
                "item_id": shop.item_in(shop.category()),
                "ts": time.time(),
            }
            for _ in range(100)
        ]
        await log.publish(orjson.dumps(events), "view")
        next_at += 100 / rate
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))


async def run(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="recsrv-profile-rest-"))
    port = free_port()
    app = build_app(embedded_config(workdir, port))
    runtime = app[RUNTIME]
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    shop = Shop(args.items)
    events, live = history(shop, args.sessions)
    live = live[-5000:]
    for body in [*batches(list(shop.catalog()), 1000), *batches(events, 500)]:
        await runtime.log.publish(body, "load")
    total = args.items + len(events)
    for _ in range(6000):  # at most 10 minutes
        if runtime.model.events >= total:
            break
        await asyncio.sleep(0.1)
    script = workdir / "rotate.lua"
    script.write_text(LUA % ", ".join(f'"/v1/recommendations?session_id={s}&k=10"' for s in live))
    args.threads = 2
    feeder = asyncio.create_task(feed(runtime, shop, live, args.rate))
    profiler = cProfile.Profile()
    profiler.enable()
    figures = await wrk(f"http://127.0.0.1:{port}", script, args)
    profiler.disable()
    feeder.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await feeder
    await runner.cleanup()
    shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"under cProfile: {figures['rps']:,.0f} req/s, p99 {figures['p99_us'] / 1000:.1f} ms, "
        f"{figures['requests']:,.0f} requests"
    )
    if args.output:
        profiler.dump_stats(args.output)
    stats = pstats.Stats(profiler)
    stats.sort_stats("tottime").print_stats(args.top)
    stats.sort_stats("cumtime").print_stats("recsrv|aiohttp/web_protocol", args.top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--sessions", type=int, default=40_000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--top", type=int, default=35)
    parser.add_argument("--output", help="also write the raw stats here")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
