"""REST under load: GET /v1/recommendations while events are ingested (design P3).

Starts a real `recsrv run` on RabbitMQ, publishes a catalog of --items items and a
history of --sessions realistic shopping sessions (Zipf-popular items, browsing
within a category, some carts, purchases and known users), and waits until all of
it is applied. Then, --repeat times, it drives

- recsrv: `GET /v1/recommendations?session_id=…&k=10` with wrk (--connections
  connections, a Lua script rotating over the live sessions), while --rate events/s
  are published to the stream (100 per message) for those same sessions;
- bare: a separate aiohttp process whose only handler returns the bytes recsrv
  answered for one of those sessions, driven by the same wrk command and the same
  ingest traffic (which it ignores), so both runs share the machine's load.

Prints requests/s and wrk's p50/p99 latency for each, the median ratio
recsrv / bare (target >= 0.5) and recsrv's median p99 (target <= 10 ms), and how
many events recsrv applied per second during its runs.

With --workers N (N > 1), a second server, `recsrv run --workers N` on the same
stream and port-sharing workers, is started once the first has built the state and
waited for until every worker has applied it; each repetition then drives it too,
with the same wrk command, and the median ratio of its requests/s to the one-worker
server's is design P3w (target >= 1.5 for N = 2). Both servers ingest the events
published during every run, so each run's machine load is the same for both.

    python bench/rest.py [--items 50000] [--sessions 40000] [--seconds 10]
        [--connections 32] [--rate 1000] [--repeat 3] [--workers 1] [--json PATH]

(Not bench/http.py: a module named `http` next to the script would shadow the
standard library's for everything the script imports.)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import aiormq
import orjson
from prometheus_client.parser import text_string_to_metric_families
from services import AMQP_URL, delete_broker_objects, free_port, run_benchmark

WRK = os.environ.get("RECSRV_BENCH_WRK", "wrk")
CATEGORIES = 200
HISTORY_SPAN_S = 2 * 3600.0  # the history ends now; sessions idle < 30 min are live
EVENTS_PER_MESSAGE = 500
KINDS = ["view"] * 15 + ["click"] * 2 + ["add_to_cart"] * 2 + ["purchase", "remove_from_cart"]

LUA = """
local paths = {%s}
local next_path = 1
init = function(args)
  next_path = math.random(#paths)
end
request = function()
  next_path = next_path %% #paths + 1
  return wrk.format("GET", paths[next_path])
end
done = function(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p99_us": %%d, ' ..
    '"max_us": %%d, "non_2xx": %%d, "socket_errors": %%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, errors.status, errors.connect + errors.read + errors.write + errors.timeout))
end
"""


class Shop:
    """A synthetic shop: items in categories with Zipf-like popularity, and shoppers
    who browse mostly within one category."""

    def __init__(self, items: int, seed: int = 11) -> None:
        self.items = items
        self.rng = random.Random(seed)
        self.categories = min(CATEGORIES, max(1, items // 10))

    def catalog(self) -> Iterator[dict[str, Any]]:
        for n in range(self.items):
            yield {
                "type": "catalog.upsert",
                "item": {
                    "item_id": f"i{n}",
                    "title": f"Item {n}",
                    "category": f"c{n % self.categories}",
                    "price": round(1 + (n * 7919 % 20000) / 100, 2),
                    "in_stock": n % 50 != 0,
                },
                "ts": time.time() - HISTORY_SPAN_S,
            }

    def item_in(self, category: int) -> str:
        """A popular-first item of the category (rank drawn from a Pareto tail)."""
        per_category = max(1, self.items // self.categories)
        rank = min(int(self.rng.paretovariate(1.1)) - 1, per_category - 1)
        return f"i{(rank * self.categories + category) % self.items}"

    def category(self) -> int:
        return min(int(self.rng.paretovariate(0.8)) - 1, self.categories - 1)

    def session(self, session_id: str, start: float) -> list[dict[str, Any]]:
        home = self.category()
        user = f"u{self.rng.randrange(20_000)}" if self.rng.random() < 0.3 else None
        events = []
        ts = start
        for _ in range(max(2, int(self.rng.expovariate(1 / 10)))):
            category = home if self.rng.random() < 0.85 else self.category()
            event = {
                "type": self.rng.choice(KINDS),
                "session_id": session_id,
                "item_id": self.item_in(category),
                "ts": ts,
            }
            if user is not None:
                event["user_id"] = user
            events.append(event)
            ts += self.rng.expovariate(1 / 20)
        return events


def history(shop: Shop, sessions: int) -> tuple[list[dict[str, Any]], list[str]]:
    """Sessions starting evenly over the HISTORY_SPAN_S seconds before now, and the ids
    of those still live at its end (last event within 25 of the 30 minutes of TTL)."""
    now = time.time()
    events: list[dict[str, Any]] = []
    last_seen = {}
    for n in range(sessions):
        start = now - HISTORY_SPAN_S + HISTORY_SPAN_S * n / max(1, sessions)
        session = shop.session(f"s{n}", start)
        events.extend(session)
        last_seen[f"s{n}"] = session[-1]["ts"]
    events.sort(key=lambda event: event["ts"])
    clock = events[-1]["ts"]
    return events, [s for s, ts in last_seen.items() if ts > clock - 1500]


def batches(events: list[dict[str, Any]], size: int) -> Iterator[bytes]:
    for start in range(0, len(events), size):
        yield orjson.dumps(events[start : start + size])


@contextlib.asynccontextmanager
async def recsrv_server(
    workdir: Path, profile: str | None, workers: int = 1, stream: dict[str, str] | None = None
) -> AsyncIterator[tuple[str, dict[str, str], int]]:
    """A `recsrv run [--workers N]` on RabbitMQ, on the stream named in `stream`'s
    environment or (None) on names of its own, deleted afterwards; under cProfile if
    `profile` names an output file; (base URL, env, pid)."""
    run_id = uuid.uuid4().hex[:8]
    port = free_port()
    names = {
        "RECSRV_BROKER__EXCHANGE": f"brest.{run_id}",
        "RECSRV_BROKER__QUEUE": f"brest.{run_id}.q",
        "RECSRV_BROKER__INVALID_EXCHANGE": f"brest.{run_id}.inv",
    }
    env = {
        **os.environ,
        "RECSRV_SERVER__PORT": str(port),
        "RECSRV_LOG__LEVEL": "warning",
        "RECSRV_LOG__FORMAT": "json",
        "RECSRV_STORE__URL": f"file://{workdir / f'state-{run_id}'}",
        # P6 measures checkpoints; here one mid-run would only add noise.
        "RECSRV_STORE__CHECKPOINT_INTERVAL_S": "3600",
        "RECSRV_BROKER__URL": AMQP_URL,
        "RECSRV_BROKER__MAX_AGE": "1h",
        **(names if stream is None else {name: stream[name] for name in names}),
    }
    log = (workdir / f"recsrv-{run_id}.log").open("wb")
    profiler = ["-m", "cProfile", "-o", profile] if profile else []
    server = await asyncio.create_subprocess_exec(
        *[sys.executable, *profiler, "-m", "recsrv", "run", "--workers", str(workers)],
        env=env,
        stdout=log,
        stderr=log,
    )
    try:
        yield f"http://127.0.0.1:{port}", env, server.pid
    finally:
        server.send_signal(signal.SIGTERM)
        await server.wait()
        log.close()
        if stream is None:
            await delete_broker_objects(env)


@contextlib.asynccontextmanager
async def bare_server(body_file: Path, log_file: Path) -> AsyncIterator[str]:
    """This script's --bare-server mode in a process of its own; its base URL."""
    port = free_port()
    log = log_file.open("wb")
    server = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--bare-server", str(port), str(body_file), stdout=log, stderr=log
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            await poll(http, base + "/", lambda body: True)
        yield base
    finally:
        server.send_signal(signal.SIGTERM)
        await server.wait()
        log.close()


def serve_bare(port: int, body_file: str) -> None:
    """The limit: an aiohttp handler that returns fixed bytes, nothing else."""
    from aiohttp import web

    body = Path(body_file).read_bytes()

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


async def poll(http: aiohttp.ClientSession, url: str, ok: Any, within_s: float = 600) -> Any:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            async with http.get(url) as response:
                if response.status == 200:
                    body = await response.json(content_type=None)
                    if ok(body):
                        return body
        except (aiohttp.ClientError, ValueError):
            pass
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{url} did not answer as expected within {within_s:.0f} s")


async def model_events(http: aiohttp.ClientSession, base: str) -> int:
    body = await poll(http, base + "/v1/popular?k=1", lambda body: True)
    return int(body["model"]["events"])


async def every_worker_applied(base: str, workers: int, events: int, within_s: float) -> None:
    """Until each of the `workers` of the server at `base` has applied `events` events
    (read from its /metrics, which holds every worker's figures)."""
    deadline = time.monotonic() + within_s
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(base + "/metrics") as response:
                    text = await response.text()
                applied = [
                    sample.value
                    for family in text_string_to_metric_families(text)
                    if family.name == "recsrv_model_events"
                    for sample in family.samples
                ]
                if len(applied) == workers and min(applied) >= events:
                    return
            await asyncio.sleep(0.5)
    raise TimeoutError(f"not every one of {workers} workers applied {events:,} events")


async def ingest(
    exchange: aio_pika.abc.AbstractExchange, shop: Shop, sessions: list[str], rate: float
) -> None:
    """Publish `rate` events/s, 100 per message, for the sessions under load, until
    cancelled."""
    per_message = 100
    interval = per_message / rate
    rng = random.Random(5)
    next_at = time.monotonic()
    while True:
        now = time.time()
        events = [
            {
                "type": "view" if rng.random() < 0.9 else "add_to_cart",
                "session_id": rng.choice(sessions),
                "item_id": shop.item_in(shop.category()),
                "ts": now,
            }
            for _ in range(per_message)
        ]
        try:
            await exchange.publish(aio_pika.Message(orjson.dumps(events)), "view")
        except (aiormq.exceptions.AMQPError, ConnectionError) as exc:
            # The robust connection reconnects; this message is lost, the load goes on.
            print(f"  ingest publish failed ({exc!r}); going on", flush=True)
            await asyncio.sleep(0.5)
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))


async def wrk(url: str, script: Path, args: argparse.Namespace) -> dict[str, float]:
    command = [
        WRK,
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{args.seconds}s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {err.decode()[-2000:]}")
    line = next(x for x in out.decode().splitlines() if x.startswith("WRK_JSON "))
    figures: dict[str, float] = orjson.loads(line.removeprefix("WRK_JSON "))
    figures["rps"] = figures["requests"] / (figures["duration_us"] / 1e6)
    return figures


async def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="recsrv-bench-rest-"))
    shop = Shop(args.items)
    events, live = history(shop, args.sessions)
    live = live[-args.request_sessions :]
    print(
        f"{args.items:,} items, {args.sessions:,} sessions ({len(events):,} events), "
        f"{len(live):,} live sessions requested"
    )
    script = workdir / "rotate.lua"
    paths = ", ".join(f'"/v1/recommendations?session_id={s}&k=10"' for s in live)
    script.write_text(LUA % paths)
    try:
        server = recsrv_server(workdir, args.profile)
        async with server as (base, env, pid), aiohttp.ClientSession() as http:
            await poll(http, base + "/readyz", lambda body: True)
            connection = await aio_pika.connect_robust(AMQP_URL)
            async with connection:
                channel = await connection.channel(publisher_confirms=True)
                exchange = await channel.get_exchange(env["RECSRV_BROKER__EXCHANGE"])
                started = time.perf_counter()
                bodies = [
                    *batches(list(shop.catalog()), 1000),
                    *batches(events, EVENTS_PER_MESSAGE),
                ]
                for start in range(0, len(bodies), 100):
                    await asyncio.gather(
                        *(
                            exchange.publish(aio_pika.Message(b), "load")
                            for b in bodies[start : start + 100]
                        )
                    )
                total = args.items + len(events)
                # Minutes at most, even on a loaded machine; longer means events were
                # lost (the broker restarted under the publisher, say): give up.
                await poll(
                    http,
                    base + "/v1/popular?k=1",
                    lambda body: body["model"]["events"] >= total,
                    within_s=300,
                )
                print(f"state built from {total:,} events in {time.perf_counter() - started:.1f} s")
                async with http.get(
                    f"{base}/v1/recommendations?session_id={live[-1]}&k=10"
                ) as response:
                    body = await response.read()
                    strategy = orjson.loads(body)["strategy"]
                body_file = workdir / "body.json"
                body_file.write_bytes(body)
                print(
                    f"the bare server answers {len(body)} bytes (recsrv's list for "
                    f"{live[-1]}, strategy {strategy})"
                )
                async with contextlib.AsyncExitStack() as more:
                    bases = {"recsrv": base}
                    if args.workers > 1:
                        many = recsrv_server(workdir, None, args.workers, env)
                        many_base, _, many_pid = await more.enter_async_context(many)
                        await every_worker_applied(many_base, args.workers, total, 600)
                        bases[f"recsrv --workers {args.workers}"] = many_base
                        print(f"{args.workers} workers built the same state from the stream")
                    results = await compare(
                        args, http, bases, exchange, shop, live, script, workdir, body_file
                    )
                    results["server_rss_mib"] = rss_mib(pid)
                    if args.workers > 1:
                        results["workers_rss_mib"] = [rss_mib(c) for c in children(many_pid)]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return results


async def compare(
    args: argparse.Namespace,
    http: aiohttp.ClientSession,
    bases: dict[str, str],
    exchange: aio_pika.abc.AbstractExchange,
    shop: Shop,
    live: list[str],
    script: Path,
    workdir: Path,
    body_file: Path,
) -> dict[str, Any]:
    """Each run: the one-worker server (`bases["recsrv"]`), the other servers of
    `bases` (--workers), then the bare one, all with the same wrk command."""
    base = bases["recsrv"]
    ours: list[dict[str, float]] = []
    others: dict[str, list[dict[str, float]]] = {name: [] for name in bases if name != "recsrv"}
    bare: list[dict[str, float]] = []
    applied_rates: list[float] = []
    async with bare_server(body_file, workdir / "bare.log") as bare_base:
        for _ in range(args.repeat):
            feeder = asyncio.create_task(ingest(exchange, shop, live, args.rate))
            try:
                before, started = await model_events(http, base), time.perf_counter()
                ours.append(await wrk(base, script, args))
                applied_rates.append(
                    (await model_events(http, base) - before) / (time.perf_counter() - started)
                )
                for name, runs in others.items():
                    runs.append(await wrk(bases[name], script, args))
                bare.append(await wrk(bare_base, script, args))
            finally:
                feeder.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await feeder
            show("recsrv", ours[-1])
            for name, runs in others.items():
                show(name, runs[-1])
            show("bare  ", bare[-1])
    ratios = [o["rps"] / b["rps"] for o, b in zip(ours, bare, strict=True)]
    result = {
        "runs": args.repeat,
        "items": args.items,
        "sessions": args.sessions,
        "connections": args.connections,
        "seconds": args.seconds,
        "ingest_rate": args.rate,
        "recsrv_rps": statistics.median(o["rps"] for o in ours),
        "bare_rps": statistics.median(b["rps"] for b in bare),
        "ratio": statistics.median(ratios),
        "ratio_runs": ratios,
        "recsrv_p50_ms": statistics.median(o["p50_us"] for o in ours) / 1000,
        "recsrv_p99_ms": statistics.median(o["p99_us"] for o in ours) / 1000,
        "recsrv_p99_runs_ms": [o["p99_us"] / 1000 for o in ours],
        "bare_p99_ms": statistics.median(b["p99_us"] for b in bare) / 1000,
        "non_2xx": sum(o["non_2xx"] + b["non_2xx"] for o, b in zip(ours, bare, strict=True)),
        "socket_errors": sum(
            o["socket_errors"] + b["socket_errors"] for o, b in zip(ours, bare, strict=True)
        ),
        "applied_events_s": statistics.median(applied_rates),
    }
    for name, runs in others.items():
        # P3w: the same wrk command against --workers N, as a ratio to one worker.
        scaling = [o["rps"] / w["rps"] for o, w in zip(runs, ours, strict=True)]
        result |= {
            "workers": args.workers,
            "workers_rps": statistics.median(r["rps"] for r in runs),
            "workers_ratio": statistics.median(scaling),
            "workers_ratio_runs": scaling,
            "workers_p99_ms": statistics.median(r["p99_us"] for r in runs) / 1000,
        }
        print(
            f"P3w {name}: {result['workers_rps']:,.0f} req/s, "
            f"{result['workers_ratio']:.2f} x one worker (target >= 1.5 for 2; runs "
            f"{', '.join(f'{r:.2f}' for r in scaling)}), p99 {result['workers_p99_ms']:.1f} ms"
        )
    print(
        f"P3 GET /v1/recommendations, {args.connections} connections, {args.items:,} items, "
        f"ingesting {args.rate:,.0f} events/s: recsrv {result['recsrv_rps']:,.0f} req/s vs bare "
        f"{result['bare_rps']:,.0f} req/s, ratio {result['ratio']:.2f} (target >= 0.5; runs "
        f"{', '.join(f'{r:.2f}' for r in ratios)}); recsrv p50 {result['recsrv_p50_ms']:.1f} ms, "
        f"p99 {result['recsrv_p99_ms']:.1f} ms (target <= 10 ms), median of {args.repeat}"
    )
    print(
        f"   recsrv applied {result['applied_events_s']:,.0f} events/s during its runs; "
        f"bare p99 {result['bare_p99_ms']:.1f} ms; non-2xx answers {result['non_2xx']}, "
        f"socket errors {result['socket_errors']}"
    )
    return result


def show(name: str, figures: dict[str, float]) -> None:
    print(
        f"  {name} {figures['rps']:9,.0f} req/s  p50 {figures['p50_us'] / 1000:6.2f} ms  "
        f"p99 {figures['p99_us'] / 1000:6.2f} ms  max {figures['max_us'] / 1000:6.1f} ms",
        flush=True,
    )


def children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as listed:
        return [int(child) for child in listed.read().split()]


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--bare-server":
        serve_bare(int(sys.argv[2]), sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--sessions", type=int, default=40_000)
    parser.add_argument("--request-sessions", type=int, default=5_000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", help="run recsrv under cProfile, writing stats here")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="also drive `recsrv run --workers N` in each run (P3w) when N > 1",
    )
    run_benchmark(parser, run)


if __name__ == "__main__":
    main()
