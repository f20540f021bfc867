"""Restart to ready after `kill -9`: restore the checkpoint, replay the rest (design P7).

Runs real `recsrv run` processes against RabbitMQ and a MongoDB-wire server:
publishes --before events, waits for a checkpoint, kills the process with SIGKILL,
publishes --replay more events (100 per message), starts a new process and times
until /readyz answers 200 and until every event is applied. Medians of --repeat.

    python bench/restart.py [--before 100000] [--replay 100000] [--repeat 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aio_pika
import aiohttp
import orjson
from services import AMQP_URL, NxServer, delete_broker_objects, free_port, run_benchmark

PER_MESSAGE = 100


def events(start: int, count: int) -> list[bytes]:
    batches = []
    for first in range(start, start + count, PER_MESSAGE):
        batches.append(
            orjson.dumps(
                [
                    {
                        "type": "view" if n % 5 else "add_to_cart",
                        "session_id": f"s{n // 12}",
                        "item_id": f"i{(n * 7919) % 20_000}",
                        "ts": 1_700_000_000 + n * 0.1,
                    }
                    for n in range(first, min(first + PER_MESSAGE, start + count))
                ]
            )
        )
    return batches


async def publish(exchange_name: str, bodies: list[bytes]) -> None:
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(exchange_name)
        for start in range(0, len(bodies), 200):
            await asyncio.gather(
                *(
                    exchange.publish(aio_pika.Message(b), "bench")
                    for b in bodies[start : start + 200]
                )
            )


async def poll(http: aiohttp.ClientSession, url: str, ok: object) -> None:
    while True:
        try:
            async with http.get(url) as response:
                if response.status == 200 and ok(await response.json()):  # type: ignore[operator]
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.02)


async def one_run(args: argparse.Namespace, workdir: Path, mongodb_url: str) -> tuple[float, float]:
    run = uuid.uuid4().hex[:8]
    port = free_port()
    env = {
        **os.environ,
        "RECSRV_BROKER__URL": AMQP_URL,
        "RECSRV_BROKER__EXCHANGE": f"bench.{run}",
        "RECSRV_BROKER__QUEUE": f"bench.{run}.q",
        "RECSRV_BROKER__INVALID_EXCHANGE": f"bench.{run}.inv",
        "RECSRV_BROKER__MAX_AGE": "1h",
        "RECSRV_STORE__URL": f"{mongodb_url}/bench_{run}",
        "RECSRV_SERVER__PORT": str(port),
        "RECSRV_LOG__FORMAT": "json",
        "RECSRV_STORE__CHECKPOINT_INTERVAL_S": "3600",
    }
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "recsrv", "run"]
    out = (workdir / f"{run}.log").open("wb")
    process = await asyncio.create_subprocess_exec(*command, env=env, stdout=out, stderr=out)
    try:
        async with aiohttp.ClientSession() as http:
            await poll(http, base + "/readyz", lambda body: True)
            await publish(env["RECSRV_BROKER__EXCHANGE"], events(0, args.before))
            await poll(
                http, base + "/v1/popular?k=1", lambda body: body["model"]["events"] >= args.before
            )
            async with http.post(base + "/v1/admin/checkpoint") as response:
                assert response.status == 200, await response.text()
            process.send_signal(signal.SIGKILL)
            await process.wait()
            await publish(env["RECSRV_BROKER__EXCHANGE"], events(args.before, args.replay))
            started = time.perf_counter()
            process = await asyncio.create_subprocess_exec(
                *command, env=env, stdout=out, stderr=out
            )
            await poll(http, base + "/readyz", lambda body: True)
            ready = time.perf_counter() - started
            total = args.before + args.replay
            await poll(
                http, base + "/v1/popular?k=1", lambda body: body["model"]["events"] >= total
            )
            applied = time.perf_counter() - started
    finally:
        # Also when the run failed: no server or stream is left behind.
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            await process.wait()
        out.close()
        await delete_broker_objects(env)
    return ready, applied


async def run(args: argparse.Namespace) -> dict[str, object]:
    workdir = Path(tempfile.mkdtemp(prefix="recsrv-restart-"))
    try:
        with NxServer(workdir) as mongodb:
            results = [await one_run(args, workdir, mongodb.url) for _ in range(args.repeat)]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    ready = statistics.median(r[0] for r in results)
    applied = statistics.median(r[1] for r in results)
    print(
        f"P7 kill -9, {args.before:,} events in the checkpoint, {args.replay:,} to replay: "
        f"start to /readyz 200 {ready:.2f} s, to all events applied {applied:.2f} s "
        f"(target <= 15 s), median of {args.repeat}"
    )
    return {
        "before": args.before,
        "replay": args.replay,
        "runs": args.repeat,
        "ready_s": ready,
        "applied_s": applied,
        "ready_runs_s": [r[0] for r in results],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=int, default=100_000)
    parser.add_argument("--replay", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    run_benchmark(parser, run)


if __name__ == "__main__":
    main()
