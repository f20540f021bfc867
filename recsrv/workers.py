"""`recsrv run --workers N`: N full replicas on one host, sharing one port.

The supervisor (the process the user started) starts N workers and does nothing
else: it serves no request and holds no state. Each worker is a whole `recsrv run`
with hidden arguments that give its place (`--worker-index`, `--worker-dir`): it
reads the whole stream with its own consumer, holds the whole state, and binds the
port with SO_REUSEPORT, so that the kernel spreads new connections over the workers.
A worker's instance name is `server.instance` + `-w<index>`, or its own host and pid
when `server.instance` is empty. The workers share the configured store as any
replicas do: the holder of the checkpoint lease (recsrv.lease) writes, all restore.

Workers are subprocesses of the same command rather than `multiprocessing` children:
a worker is then exactly the process `recsrv run` is (its own interpreter, imports,
signal handling and logging, on the same stdout), nothing has to be pickled across,
and the supervisor stays a small asyncio loop that imports neither numpy nor the
server.

The supervisor
- refuses a port something already listens on (with SO_REUSEPORT, a second
  `recsrv run --workers N` on the same port would otherwise share it silently);
- makes a private directory (mode 0700) where each worker listens on a unix socket
  for its siblings' /metrics scrapes (recsrv.worker_metrics);
- forwards SIGTERM and SIGINT to every worker once and waits for their clean
  shutdown; a second signal is forwarded too, which makes the workers exit at once.
  A worker ignores a repeat of the signal within SIGNAL_ECHO_S of the first, because
  a terminal's Ctrl-C and a service manager's stop reach the workers directly as well
  as through the supervisor;
- restarts a worker that exits while it is not stopping, after a back-off
  (RESTART_DELAYS_S, growing while the worker keeps dying, afresh once it ran for
  STABLE_S), and logs it. A worker that exits before it listened (its socket in the
  directory is the mark) failed to start; after MAX_START_FAILURES such failures in a
  row the supervisor stops the others and exits with status 1.
A worker whose supervisor is gone (killed with SIGKILL) notices within a second and
shuts down as on SIGTERM, so no orphan keeps the port.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from recsrv.config import Config

logger = structlog.get_logger("recsrv.workers")

RESTART_DELAYS_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
STABLE_S = 60.0
MAX_START_FAILURES = 5
SIGNAL_ECHO_S = 1.0
SUPERVISOR_CHECK_S = 1.0


@dataclass(frozen=True)
class WorkerPlace:
    """What a worker knows of its place among the others."""

    index: int
    count: int
    directory: Path

    def socket(self, index: int) -> Path:
        """Where worker `index` serves its own metrics to its siblings."""
        return self.directory / f"worker-{index}.sock"

    def siblings(self) -> dict[str, Path]:
        """The other workers' sockets, by worker label."""
        return {str(i): self.socket(i) for i in range(self.count) if i != self.index}

    def configure(self, config: Config) -> Config:
        """The worker's configuration: the supervisor's, with a name of its own."""
        if not config.server.instance:
            return config  # host and pid: this process's own
        server = dataclasses.replace(
            config.server, instance=f"{config.server.instance}-w{self.index}"
        )
        return dataclasses.replace(config, server=server)


def refusal(count: int, config: Config) -> str | None:
    """Why `--workers count` cannot run with `config` (a usage error), or None."""
    if count < 1:
        return f"--workers must be at least 1, got {count}"
    if count == 1:
        return None
    if config.broker.url == "memory://":
        return (
            f"--workers {count} needs an event log the workers can share, and broker.url is "
            "memory://, which lives inside one process: set broker.url to amqp://… "
            "(RECSRV_BROKER__URL) or run one worker"
        )
    if config.server.port == 0:
        return (
            f"--workers {count} needs a fixed server.port: with 0 each worker would pick "
            "a port of its own"
        )
    return None


def port_taken(host: str, port: int) -> str | None:
    """Why nothing new can listen on host:port (it is in use, say), or None.

    Binds without SO_REUSEPORT and never listens: a socket that listens there, with
    SO_REUSEPORT or not, makes the bind fail; TIME_WAIT connections do not (the
    probe sets SO_REUSEADDR, as aiohttp does)."""
    try:
        addresses = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        return f"cannot resolve server.host {host!r}: {exc}"
    for family, kind, protocol, _, address in addresses:
        with socket.socket(family, kind, protocol) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                return f"cannot listen on {address[0]} port {port}: {exc.strerror}"
    return None


def describe(status: int) -> str:
    """A worker's exit status in words: `status 3`, `signal SIGKILL`."""
    if status < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-status).name}"
    return f"status {status}"


class Supervisor:
    """Keeps `count` workers running until stopped; `command(index)` starts worker
    `index`, which must create `place_socket(index)` once it listens."""

    def __init__(
        self,
        count: int,
        command: Callable[[int], Sequence[str]],
        place_socket: Callable[[int], Path],
    ) -> None:
        self.count = count
        self.command = command
        self.place_socket = place_socket
        self.processes: dict[int, asyncio.subprocess.Process] = {}
        # Exit statuses of the workers that were running when the stop came.
        self.statuses: dict[int, int] = {}
        self.stopping = asyncio.Event()
        # Why the supervisor gave up (workers kept failing to start), if it did.
        self.failure: str | None = None

    def on_signal(self, sig: signal.Signals) -> None:
        """SIGTERM or SIGINT: stop; the workers get the signal (again, if repeated)."""
        if not self.stopping.is_set():
            logger.info("stopping_workers", signal=sig.name)
        self.stopping.set()
        self._forward(sig)

    def _forward(self, sig: signal.Signals) -> None:
        for process in self.processes.values():
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(sig)

    def _give_up(self, why: str) -> None:
        self.failure = why
        logger.error("workers_failing", reason=why)
        self.stopping.set()
        self._forward(signal.SIGTERM)

    async def run(self) -> int:
        """Until every worker has exited after a stop: 0 when all exited cleanly."""
        logger.info("workers_starting", workers=self.count)
        async with asyncio.TaskGroup() as tasks:
            for index in range(self.count):
                tasks.create_task(self._keep(index), name=f"recsrv-worker-{index}")
        if self.failure is not None:
            return 1
        clean = all(status == 0 for status in self.statuses.values())
        logger.info(
            "workers_stopped", exits={str(i): describe(s) for i, s in self.statuses.items()}
        )
        return 0 if clean else 1

    async def _keep(self, index: int) -> None:
        """Run worker `index`, again and again after a back-off, until stopping."""
        deaths = start_failures = 0
        while not self.stopping.is_set():
            ended = await self._run_once(index)
            if ended is None:
                return  # stopped
            start_failures = 0 if ended.listened else start_failures + 1
            deaths = 1 if ended.ran_s >= STABLE_S else deaths + 1
            if start_failures >= MAX_START_FAILURES:
                self._give_up(
                    f"worker {index} failed to start {start_failures} times in a row "
                    f"(last: {ended.exit}); its log lines say why"
                )
                return
            delay = RESTART_DELAYS_S[min(deaths, len(RESTART_DELAYS_S)) - 1]
            logger.error(
                "worker_died",
                worker=index,
                pid=ended.pid,
                exit=ended.exit,
                listened=ended.listened,
                ran_s=round(ended.ran_s, 1),
                restart_in_s=delay,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), delay)

    async def _run_once(self, index: int) -> _Ended | None:
        """Start worker `index` and wait for its end: how it ended, or None when it was
        stopped (then its exit status is kept in `statuses`)."""
        marker = self.place_socket(index)
        marker.unlink(missing_ok=True)
        started = time.monotonic()
        try:
            process = await asyncio.create_subprocess_exec(*self.command(index))
        except OSError as exc:  # out of processes or memory, say: a failed start
            return _Ended(None, f"not started: {exc}", listened=False, ran_s=0.0)
        self.processes[index] = process
        if self.stopping.is_set():  # the signal came while it was being started
            self._forward(signal.SIGTERM)
        logger.info("worker_started", worker=index, pid=process.pid)
        status = await process.wait()
        if self.stopping.is_set():
            # Only a stop's statuses count: one that died before is not running.
            self.statuses[index] = status
            logger.info("worker_stopped", worker=index, pid=process.pid, status=status)
            return None
        return _Ended(process.pid, describe(status), marker.exists(), time.monotonic() - started)


@dataclass(frozen=True)
class _Ended:
    """How a worker ended when it was not being stopped."""

    pid: int | None
    exit: str
    # Whether it had listened (made its socket): if not, it failed to start.
    listened: bool
    ran_s: float


def worker_command(count: int, index: int, directory: Path, config: str | None) -> list[str]:
    """The command line of worker `index`: this `recsrv run`, with its place."""
    command = [sys.executable, "-m", "recsrv", "run", "--workers", str(count)]
    command += ["--worker-index", str(index), "--worker-dir", str(directory)]
    return command + (["--config", config] if config is not None else [])


def supervise(config: Config, count: int, config_path: str | None) -> int:
    """Start `count` workers and keep them running until SIGTERM or SIGINT."""
    taken = port_taken(config.server.host, config.server.port)
    if taken is not None:
        print(f"recsrv: {taken}", file=sys.stderr)
        return 1
    cores = os.cpu_count() or 1
    if count > cores:
        logger.warning("more_workers_than_cores", workers=count, cores=cores)
    directory = Path(tempfile.mkdtemp(prefix="recsrv-workers-"))
    place = WorkerPlace(0, count, directory)
    supervisor = Supervisor(
        count, lambda index: worker_command(count, index, directory, config_path), place.socket
    )

    async def main() -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, supervisor.on_signal, sig)
        return await supervisor.run()

    try:
        status = asyncio.run(main())
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    if supervisor.failure is not None:
        print(f"recsrv: {supervisor.failure}", file=sys.stderr)
    return status


async def watch_supervisor(
    stop: asyncio.Event, directory: Path, every_s: float = SUPERVISOR_CHECK_S
) -> None:
    """In a worker: set `stop` once the supervisor is gone (this process re-parented),
    and remove the supervisor's directory, which it can no longer remove itself."""
    supervisor = os.getppid()
    while True:
        await asyncio.sleep(every_s)
        if os.getppid() != supervisor:
            break
    logger.error("supervisor_gone", supervisor_pid=supervisor)
    # Before the stop, which ends this task.
    await asyncio.to_thread(shutil.rmtree, directory, ignore_errors=True)
    stop.set()
