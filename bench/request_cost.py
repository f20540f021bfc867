"""What one GET /v1/recommendations costs through the whole HTTP path, in process (P3).

Loads a state saved by `bench/list_cost.py --save-state FILE` into a real recsrv app
(`build_app`: every middleware, signal and metric of `recsrv run`, on an embedded
event log and a throw-away file store), serves it on a local port, and drives it
from the same process with --connections keep-alive connections of a minimal raw
socket client, each sending `GET /v1/recommendations?session_id=…&k=10` for the live
sessions in turn (closed loop, as wrk does). Prints the process time per request and,
for comparison, that of `recommend` alone on the same sessions. The client is a few
lines of asyncio streams: it costs some µs a request, the same before and after a
change.

    python bench/request_cost.py --load-state FILE [--requests 4000] [--passes 3]
        [--connections 8] [--path /v1/recommendations] [--http-only] [--quiet]

--http-only answers every request with one list computed up front (the handler's
`recommend` replaced), so that the figure is the HTTP path alone: middlewares,
hooks, parameters, the JSON, metrics, aiohttp and the client.

For instruction counts, which no other load changes: `valgrind --tool=callgrind
python bench/request_cost.py --load-state FILE --requests N --passes 1 --quiet` with
N = 0 and N = 400; the difference of the two totals over 400 is the instructions per
request (client included).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path

from aiohttp import web
from list_cost import load
from services import embedded_config, free_port

from recsrv import recommend as recommend_module
from recsrv.app import build_app
from recsrv.http.api import RUNTIME
from recsrv.model import Model
from recsrv.recommend import RecList, recommend


async def client(port: int, paths: list[str]) -> None:
    """One keep-alive connection: each request sent once the previous answer is read."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for path in paths:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"{path}: {head.decode(errors='replace')}")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
    finally:
        writer.close()
        await writer.wait_closed()


async def drive(port: int, paths: list[str], connections: int) -> float:
    """Process time per request, in µs, of every request in `paths` over `connections`."""
    started = time.process_time()
    await asyncio.gather(*(client(port, paths[c::connections]) for c in range(connections)))
    return (time.process_time() - started) / max(len(paths), 1) * 1e6


def per_list(model: Model, sessions: list[str], passes: int) -> float:
    """Process time of `recommend` alone, in µs per list: the minimum of `passes`."""
    best = float("inf")
    for _ in range(passes):
        started = time.process_time()
        for session in sessions:
            recommend(model, session_id=session, k=10)
        best = min(best, (time.process_time() - started) / max(len(sessions), 1))
    return best * 1e6


def answer_with(recs: RecList) -> None:
    """Make the handlers' `recommend` answer `recs` whatever they ask (--http-only)."""
    recommend_module.recommend = lambda *args, **kwargs: recs


async def run(args: argparse.Namespace) -> None:
    model, live = load(args.load_state)
    if args.http_only:
        answer_with(recommend(model, session_id=live[0], k=10))
    workdir = Path(tempfile.mkdtemp(prefix="recsrv-request-cost-"))
    port = free_port()
    app = build_app(embedded_config(workdir, port))
    runtime = app[RUNTIME]
    empty = runtime.model
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await runtime.restored_event.wait()  # an empty store: restored at once
        runtime.replace_model(model)
        sessions = live[50:]
        every = [f"{args.path}?session_id={s}&k=10" for s in sessions]
        # Imports, caches, buffers: 200 requests first, whatever --requests says (also
        # with --requests 0, so that callgrind's N = 0 run pays for them too).
        await drive(port, every[:200], args.connections)
        paths = (every * (args.requests // max(len(every), 1) + 1))[: args.requests]
        best = float("inf")
        for _ in range(args.passes):
            best = min(best, await drive(port, paths, args.connections))
        print(
            f"{best:,.0f} µs per request ({len(paths):,} requests, {args.connections} "
            f"connections{', one canned list' if args.http_only else ''})"
        )
        if not args.quiet and not args.http_only:
            alone = per_list(model, sessions[: len(paths)], args.passes)
            print(f"recommend alone {alone:,.0f} µs; the rest {best - alone:,.0f} µs")
    finally:
        # The server's own empty model back, so that the checkpoint written at shutdown
        # is not the whole loaded state (seconds, and most of a callgrind run).
        runtime.replace_model(empty)
        await runner.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--load-state", type=Path, required=True)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--path", default="/v1/recommendations")
    parser.add_argument("--http-only", action="store_true", help="one canned list")
    parser.add_argument("--quiet", action="store_true", help="no recommend alone (callgrind)")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
