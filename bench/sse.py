"""Live lists to many subscribers: event published → updated list received (design P4).

Starts `recsrv run` (RabbitMQ by default, or --embedded), opens --subscribers SSE
streams on distinct sessions, then publishes one view event at a time for a random
subscribed session (--rate per second, --seconds long) and measures how long until
that session's stream delivers the changed list. Prints p50/p99 latency (target
p99 <= 100 ms) and the server's RSS and CPU time.

    python bench/sse.py [--subscribers 1000] [--rate 100] [--seconds 20] [--embedded]
        [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable

import aio_pika
import aiohttp
import orjson
from services import AMQP_URL, delete_broker_objects, free_port, run_benchmark

ITEMS = 2000


def history() -> list[bytes]:
    """Earlier shoppers, so every item has neighbours and lists change on each view."""
    rng = random.Random(3)
    batches, batch = [], []
    for n in range(40_000):
        batch.append(
            {
                "type": "view",
                "session_id": f"old{n // 8}",
                "item_id": f"i{(n // 8 * 13 + rng.randrange(40)) % ITEMS}",
                "ts": time.time() - 3600 + n * 0.01,
            }
        )
        if len(batch) == 500:
            batches.append(orjson.dumps(batch))
            batch = []
    return batches


class Subscriber:
    def __init__(self, session: str) -> None:
        self.session = session
        self.arrivals: asyncio.Queue[float] = asyncio.Queue()

    async def run(self, http: aiohttp.ClientSession, base: str, opened: asyncio.Event) -> None:
        async with http.get(f"{base}/v1/sessions/{self.session}/stream?k=10") as response:
            first = True
            async for line in response.content:
                if line.startswith(b"data:"):
                    if first:
                        first = False
                        opened.set()
                    else:
                        self.arrivals.put_nowait(time.perf_counter())


def process_stats(pid: int) -> tuple[float, float]:
    """(RSS MiB, CPU seconds) of a process, from /proc."""
    with open(f"/proc/{pid}/status") as status:
        rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return rss, (int(fields[11]) + int(fields[12])) / ticks


async def wait_ready(http: aiohttp.ClientSession, base: str) -> None:
    while True:
        try:
            async with http.get(base + "/readyz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)


Publish = Callable[[bytes], Awaitable[None]]


async def publisher(
    args: argparse.Namespace, http: aiohttp.ClientSession, base: str, env: dict[str, str]
) -> tuple[Publish, aio_pika.abc.AbstractConnection | None]:
    """Publish over REST (embedded) or straight to the RabbitMQ exchange."""
    if args.embedded:

        async def post(body: bytes) -> None:
            headers = {"Content-Type": "application/json"}
            async with http.post(base + "/v1/events", data=body, headers=headers) as r:
                assert r.status == 202, await r.text()

        return post, None
    connection = await aio_pika.connect(AMQP_URL)
    channel = await connection.channel(publisher_confirms=True)
    exchange = await channel.get_exchange(env["RECSRV_BROKER__EXCHANGE"])

    async def send(body: bytes) -> None:
        await exchange.publish(aio_pika.Message(body), "view")

    return send, connection


async def measure(
    args: argparse.Namespace, subscribers: list[Subscriber], publish: Publish
) -> tuple[list[float], int, int]:
    """(latencies in seconds, events published, events with no new list in 2 s)."""
    rng = random.Random(9)
    latencies: list[float] = []
    missed = published = 0
    deadline = time.perf_counter() + args.seconds
    while time.perf_counter() < deadline:
        subscriber = rng.choice(subscribers)
        while not subscriber.arrivals.empty():
            subscriber.arrivals.get_nowait()
        event = {
            "type": "view",
            "session_id": subscriber.session,
            "item_id": f"i{rng.randrange(ITEMS)}",
            "ts": time.time(),
        }
        started = time.perf_counter()
        await publish(orjson.dumps(event))
        published += 1
        try:
            arrived = await asyncio.wait_for(subscriber.arrivals.get(), 2.0)
            latencies.append(arrived - started)
        except TimeoutError:
            missed += 1  # the list did not change (or arrived too late)
        await asyncio.sleep(max(0.0, 1 / args.rate - (time.perf_counter() - started)))
    return latencies, published, missed


def server_env(args: argparse.Namespace, port: int, state_dir: str) -> dict[str, str]:
    run_id = uuid.uuid4().hex[:8]
    env = {
        **os.environ,
        "RECSRV_SERVER__PORT": str(port),
        "RECSRV_LOG__LEVEL": "warning",
        "RECSRV_STORE__URL": f"file://{state_dir}",
        "RECSRV_STORE__CHECKPOINT_INTERVAL_S": "3600",
        # Every subscriber here comes from 127.0.0.1; in a shop each is a browser.
        "RECSRV_SERVER__SSE_MAX_PER_CLIENT": str(max(args.subscribers, 100)),
    }
    if not args.embedded:
        env.update(
            {
                "RECSRV_BROKER__URL": AMQP_URL,
                "RECSRV_BROKER__EXCHANGE": f"bsse.{run_id}",
                "RECSRV_BROKER__QUEUE": f"bsse.{run_id}.q",
                "RECSRV_BROKER__INVALID_EXCHANGE": f"bsse.{run_id}.inv",
                "RECSRV_BROKER__MAX_AGE": "1h",
            }
        )
    return env


async def wait_applied(http: aiohttp.ClientSession, base: str, events: int) -> None:
    """Until the server reports `events` applied (model.events), for at most 120 s."""
    deadline = time.perf_counter() + 120
    while time.perf_counter() < deadline:
        async with http.get(f"{base}/v1/popular", params={"k": "1"}) as response:
            if response.status == 200 and (await response.json())["model"]["events"] >= events:
                return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"the server did not apply the {events:,} history events in 120 s")


async def drive(
    args: argparse.Namespace, base: str, env: dict[str, str], pid: int
) -> tuple[list[float], int, int, tuple[tuple[float, float], tuple[float, float]]]:
    """Connect the subscribers, publish, measure: (latencies, events published, events
    without a new list, (RSS, CPU) of the server before and after)."""
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout()) as http:
        await wait_ready(http, base)
        publish, connection = await publisher(args, http, base, env)
        try:
            bodies = history()
            for body in bodies:
                await publish(body)
            # Measure against a server that has learnt the history, not one still
            # reading it: the first events of a shop are slower (its blend measures
            # each of them while it warms up).
            await wait_applied(http, base, sum(len(orjson.loads(body)) for body in bodies))
            subscribers = [Subscriber(f"live{n}") for n in range(args.subscribers)]
            opened = [asyncio.Event() for _ in subscribers]
            readers = [
                asyncio.create_task(s.run(http, base, o))
                for s, o in zip(subscribers, opened, strict=True)
            ]
            try:
                await asyncio.wait_for(asyncio.gather(*(o.wait() for o in opened)), 60)
                print(f"{args.subscribers} subscribers connected")
                before = process_stats(pid)
                latencies, published, missed = await measure(args, subscribers, publish)
                after = process_stats(pid)
            finally:
                for reader in readers:
                    reader.cancel()
                await asyncio.gather(*readers, return_exceptions=True)
        finally:
            if connection is not None:
                await connection.close()
    return latencies, published, missed, (before, after)


async def run(args: argparse.Namespace) -> dict[str, object]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    state_dir = tempfile.mkdtemp(prefix="recsrv-bench-sse-")
    env = server_env(args, port, state_dir)
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "recsrv",
        "run",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        latencies, published, missed, stats = await drive(args, base, env, server.pid)
    finally:
        # Also when the run failed: no server, stream or directory is left behind.
        server.send_signal(signal.SIGTERM)
        await server.wait()
        if not args.embedded:
            await delete_broker_objects(env)
        shutil.rmtree(state_dir, ignore_errors=True)
    (rss_before, cpu_before), (rss_after, cpu_after) = stats
    latencies.sort()
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[int(0.99 * (len(latencies) - 1))] * 1000
    path = "REST, embedded log" if args.embedded else "RabbitMQ"
    print(
        f"P4 {args.subscribers} subscribers, {published} events via {path}: published → "
        f"list received p50 {p50:.1f} ms, p99 {p99:.1f} ms (target p99 <= 100 ms; includes "
        f"the 25 ms coalescing window); {missed} without a new list within 2 s"
    )
    print(
        f"server RSS {rss_after:,.0f} MiB (before the events {rss_before:,.0f} MiB), "
        f"CPU {cpu_after - cpu_before:.1f} s over {args.seconds:.0f} s"
    )
    return {
        "subscribers": args.subscribers,
        "events": published,
        "path": path,
        "p50_ms": p50,
        "p99_ms": p99,
        "missed": missed,
        "server_rss_mib": rss_after,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--embedded", action="store_true")
    run_benchmark(parser, run)


if __name__ == "__main__":
    main()
