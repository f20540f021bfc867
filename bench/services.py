"""What the benchmarks share: their main(), the RabbitMQ they use and its clean-up, a free
port, and an nx-27017 MongoDB-wire server."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aio_pika
import orjson

from recsrv.config import Config

AMQP_URL = os.environ.get("RECSRV_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


def run_benchmark(
    parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], Awaitable[Any]]
) -> None:
    """Parse the arguments (plus --json), run the benchmark, and write its figures to
    the --json file when one is given (bench/run_all.py reads them from there)."""
    parser.add_argument("--json", help="also write the figures to this file, as JSON")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(result))


async def delete_broker_objects(env: dict[str, str]) -> None:
    """Delete the stream, the invalid-events queue and both exchanges that a server run
    with `env` (RECSRV_BROKER__* names of its own) declared."""
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        for queue in ("RECSRV_BROKER__QUEUE", "RECSRV_BROKER__INVALID_EXCHANGE"):
            await channel.queue_delete(env[queue])
        for exchange in ("RECSRV_BROKER__EXCHANGE", "RECSRV_BROKER__INVALID_EXCHANGE"):
            await channel.exchange_delete(env[exchange])


def embedded_config(workdir: Path, port: int) -> Config:
    """A server on `port` with the in-process log and a file store under `workdir`,
    that checkpoints only when asked and logs only warnings: for benchmarks that drive
    the app in process."""
    return Config.from_mapping(
        {},
        {
            "RECSRV_SERVER__PORT": str(port),
            "RECSRV_STORE__URL": f"file://{workdir / 'state'}",
            "RECSRV_STORE__CHECKPOINT_INTERVAL_S": "3600",
            "RECSRV_LOG__LEVEL": "warning",
        },
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class NxServer:
    """nx-27017 keeping its databases under `workdir`; stopped on exit."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir.resolve()
        self.port = free_port()
        self.url = f"mongodb://127.0.0.1:{self.port}"
        self.executable = shutil.which("nx-27017") or str(Path(sys.executable).parent / "nx-27017")

    def __enter__(self) -> NxServer:
        (self.workdir / "mongo").mkdir(parents=True, exist_ok=True)
        # Absolute paths and a pid file of its own: the daemon changes directory.
        subprocess.run(
            [
                self.executable,
                "-d",
                "--data-dir",
                str(self.workdir / "mongo"),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--pid-file",
                str(self.workdir / "nx.pid"),
                "--log-file",
                str(self.workdir / "nx.log"),
            ],
            check=True,
            capture_output=True,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        raise RuntimeError(f"nx-27017 did not start: {self.workdir / 'nx.log'}")

    def __exit__(self, *exc: object) -> None:
        subprocess.run(
            [self.executable, "--stop", "--pid-file", str(self.workdir / "nx.pid")],
            check=False,
            capture_output=True,
        )
