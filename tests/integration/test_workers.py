"""`recsrv run --workers 2`: real processes on the real RabbitMQ, one port for both.

Which worker answers is the kernel's choice (SO_REUSEPORT), made per connection: a
test reaches "some worker" with a new connection, and "this worker again" by keeping
its connection (a session with a single pooled connection). Without
`server.instance`, a worker's instance name is its host and its pid, which lets a test
find and kill it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from recsrv import workers
from recsrv.config import BrokerConfig
from tests.conftest import JSON, broker_env, end_process, free_port, spawn_recsrv, wait_until
from tests.integration.test_replicas import history

QUERIES = [
    ("/v1/recommendations", {"session_id": "s29", "k": "8"}),
    ("/v1/recommendations", {"session_id": "s4", "user_id": "u3", "k": "8"}),
    ("/v1/recommendations", {"user_id": "u5", "k": "8"}),
    ("/v1/items/stove/similar", {"k": "5"}),
    ("/v1/items/pan/bought-together", {"k": "5"}),
    ("/v1/popular", {"k": "10"}),
]


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    base: str
    log: Path

    def log_lines(self) -> list[dict[str, Any]]:
        lines = self.log.read_bytes().splitlines()
        return [orjson.loads(line) for line in lines if line.startswith(b"{")]


@pytest.fixture
def two_workers(tmp_path: Path, amqp_config: BrokerConfig) -> Iterator[Served]:
    """`recsrv run --workers 2` on the stream of amqp_config, one store for both."""
    port = free_port()
    process, log = spawn_recsrv(tmp_path, port, broker_env(amqp_config), args=["--workers", "2"])
    try:
        yield Served(process, f"http://127.0.0.1:{port}", log)
    finally:
        end_process(process, within_s=30)


def new_connection() -> aiohttp.ClientSession:
    """A session whose every request opens a connection of its own."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))


def one_connection() -> aiohttp.ClientSession:
    """A session that keeps one connection, hence one worker, for all its requests."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1))


async def get(http: aiohttp.ClientSession, url: str, **params: str) -> Any:
    async with http.get(url, params=params) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def ready_instances(served: Served, count: int = 2, within_s: float = 40) -> set[str]:
    """The instance names of `count` workers that answer /readyz with 200."""
    seen: set[str] = set()

    async def all_ready() -> bool:
        assert served.process.poll() is None, served.log.read_text()
        try:
            async with new_connection() as http, http.get(served.base + "/readyz") as response:
                if response.status == 200:
                    seen.add((await response.json())["instance"])
        except aiohttp.ClientConnectionError:
            pass
        return len(seen) >= count

    await wait_until(all_ready, within_s, f"{count} workers ready")
    return seen


def pid_of(instance: str) -> int:
    return int(instance.rsplit("-", 1)[1])


async def scrape(base: str) -> dict[str, Any]:
    """/metrics over a new connection, by family name."""
    async with new_connection() as http, http.get(base + "/metrics") as response:
        assert response.status == 200
        text = await response.text()
    return {family.name: family for family in text_string_to_metric_families(text)}


def by_worker(family: Any, **labels: str) -> dict[str, float]:
    """The values of the samples of `family` that have `labels`, by worker label."""
    return {
        sample.labels["worker"]: sample.value
        for sample in family.samples
        if all(sample.labels.get(k) == v for k, v in labels.items())
    }


async def test_two_workers_share_the_port_and_answer_alike(two_workers: Served) -> None:
    instances = await ready_instances(two_workers)
    base = two_workers.base
    last = {"type": "view", "session_id": "s29", "item_id": "lamp", "event_id": "last"}
    body = orjson.dumps([*history(), {**last, "ts": 1_700_010_000.0}])
    async with (
        new_connection() as http,
        http.post(base + "/v1/events", data=body, headers=JSON) as response,
    ):
        assert response.status == 202, await response.text()

    # Each worker answers the queries on a connection of its own, after the last event.
    answers: dict[str, list[Any]] = {}
    for _ in range(60):
        async with one_connection() as http:
            instance = (await get(http, base + "/readyz"))["instance"]
            listed = [await get(http, base + path, after="last", **q) for path, q in QUERIES]
            assert (await get(http, base + "/readyz"))["instance"] == instance
        answers.setdefault(instance, listed)
        if len(answers) == 2:
            break
    assert set(answers) == instances
    first, second = answers.values()
    for a, b in zip(first, second, strict=True):
        assert a["model"]["after"] is True and b["model"]["after"] is True
        assert a["model"] == b["model"]
        assert a["model"]["events"] == len(history()) + 1
        assert a["items"] == b["items"] and a["strategy"] == b["strategy"]
    assert any(len(answer["items"]) >= 5 for answer in first)

    # One scrape holds both workers' figures, each labelled with its worker.
    families = await scrape(base)
    info = by_worker(families["recsrv_instance_info"])
    assert set(info) == {"0", "1"}
    names = {s.labels["instance"] for s in families["recsrv_instance_info"].samples}
    assert names == instances
    assert set(by_worker(families["recsrv_model_events"]).values()) == {len(history()) + 1}
    assert families["recsrv_workers"].samples[0].value == 2
    assert families["recsrv_workers_scraped"].samples[0].value == 2
    # Requests spread over both workers add up to what was sent, whoever is scraped.
    route = {"route": "/v1/popular", "method": "GET", "status": "200"}
    before = sum(by_worker(families["recsrv_http_requests"], **route).values())
    async with new_connection() as http:
        for _ in range(40):
            await get(http, base + "/v1/popular", k="1")
    counts = by_worker((await scrape(base))["recsrv_http_requests"], **route)
    assert sum(counts.values()) == before + 40
    assert set(counts) == {"0", "1"}, counts


async def test_a_scrape_leaves_out_a_worker_that_does_not_answer(two_workers: Served) -> None:
    stopped, running = sorted(await ready_instances(two_workers))
    os.kill(pid_of(stopped), signal.SIGSTOP)
    try:
        # Connections the kernel gives the stopped worker wait; the running one answers
        # without waiting longer than the siblings' timeout.
        for _ in range(30):
            started = time.monotonic()
            try:
                async with asyncio.timeout(3):
                    families = await scrape(two_workers.base)
            except TimeoutError:
                continue
            assert time.monotonic() - started < workers_timeout() + 2
            break
        else:
            raise AssertionError("no scrape answered")
        names = {s.labels["instance"] for s in families["recsrv_instance_info"].samples}
        assert names == {running}
        assert families["recsrv_workers"].samples[0].value == 2
        assert families["recsrv_workers_scraped"].samples[0].value == 1
    finally:
        os.kill(pid_of(stopped), signal.SIGCONT)
    missing = [
        line for line in two_workers.log_lines() if line["event"] == "worker_metrics_missing"
    ]
    assert missing and missing[0]["instance"] == running


def workers_timeout() -> float:
    from recsrv.worker_metrics import SIBLING_TIMEOUT_S

    return SIBLING_TIMEOUT_S


def exited(pid: int) -> bool:
    """Whether `pid` is gone or a zombie (dead, not yet reaped by the supervisor)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


async def test_a_killed_worker_is_restarted_and_the_port_keeps_answering(
    two_workers: Served,
) -> None:
    doomed, survivor = sorted(await ready_instances(two_workers))
    os.kill(pid_of(doomed), signal.SIGKILL)
    await wait_until(lambda: exited(pid_of(doomed)), 10, "the killed worker gone")
    # Every new connection now reaches the survivor (or the worker started anew).
    async with new_connection() as http:
        for _ in range(30):
            assert (await get(http, two_workers.base + "/healthz"))["status"] == "ok"
    instances = await ready_instances(two_workers)
    assert survivor in instances and doomed not in instances
    assert two_workers.process.poll() is None
    died = [line for line in two_workers.log_lines() if line["event"] == "worker_died"]
    assert len(died) == 1 and died[0]["exit"] == "signal SIGKILL", died
    assert died[0]["pid"] == pid_of(doomed) and died[0]["listened"] is True


@pytest.mark.parametrize("to", ["supervisor", "every process"])
async def test_sigterm_stops_every_worker_cleanly(two_workers: Served, to: str) -> None:
    """SIGTERM to the supervisor, or to every process at once, as a service manager
    stopping a control group or a terminal's Ctrl-C does: each worker then sees the
    signal twice (directly and forwarded) and still shuts down in order."""
    pids = {pid_of(instance) for instance in await ready_instances(two_workers)}
    # The workers share one store: one of them holds the checkpoint lease.
    writing: dict[str, bool] = {}

    async def one_writer() -> bool:
        async with new_connection() as http:
            answer = await get(http, two_workers.base + "/readyz")
        writing[answer["instance"]] = answer["checkpoint_writer"]
        return len(writing) == 2 and sum(writing.values()) == 1

    await wait_until(one_writer, 20, f"one checkpoint writer of two workers: {writing}")
    two_workers.process.send_signal(signal.SIGTERM)
    if to == "every process":
        for pid in pids:
            os.kill(pid, signal.SIGTERM)
    assert two_workers.process.wait(timeout=40) == 0, two_workers.log.read_text()
    assert all(exited(pid) for pid in pids)
    lines = two_workers.log_lines()
    stopped = {line["pid"]: line["status"] for line in lines if line["event"] == "worker_stopped"}
    assert stopped == dict.fromkeys(pids, 0)
    # Each worker went through its own orderly shutdown, the second signal ignored.
    assert {pid_of(line["instance"]) for line in lines if line["event"] == "stopped"} >= pids
    assert not [line for line in lines if line["event"] == "exiting_at_once"]
    # The lease holder wrote the final checkpoint, and no write failed: two writers at
    # once would delete each other's checkpoints in the making. (The other worker may
    # take the lease once the holder released it and write after it: one at a time.)
    writers = {line["instance"] for line in lines if line["event"] == "checkpoint_written"}
    assert {name for name, held in writing.items() if held} <= writers
    assert not [line for line in lines if "checkpoint_failed" in line["event"]]


def worker_dir(pid: int) -> Path:
    """The supervisor's directory, from worker `pid`'s command line."""
    arguments = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    return Path(arguments[arguments.index("--worker-dir") + 1])


def kill_if_worker(pid: int) -> None:
    """SIGKILL `pid` if it is still a worker (not a pid used again since)."""
    with contextlib.suppress(OSError):
        if b"--worker-index" in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.kill(pid, signal.SIGKILL)


async def test_workers_stop_when_their_supervisor_is_killed(two_workers: Served) -> None:
    pids = {pid_of(instance) for instance in await ready_instances(two_workers)}
    directory = worker_dir(min(pids))
    assert directory.is_dir()
    two_workers.process.kill()
    two_workers.process.wait()
    try:
        # Orphans now: each notices within a second and shuts down in order.
        await wait_until(lambda: all(exited(pid) for pid in pids), 20, "the workers gone")
    finally:
        for pid in pids:  # the fixture ends the supervisor only
            kill_if_worker(pid)
    lines = two_workers.log_lines()
    assert {
        pid_of(line["instance"]) for line in lines if line["event"] == "supervisor_gone"
    } == pids
    assert {pid_of(line["instance"]) for line in lines if line["event"] == "stopped"} == pids
    assert not directory.exists()  # the supervisor's, removed by its orphans


async def test_one_worker_is_the_plain_server_in_this_process(tmp_path: Path) -> None:
    """`--workers 1`, even with the in-process log: no supervisor, no worker metrics."""
    port = free_port()
    process, log = spawn_recsrv(tmp_path, port, {}, args=["--workers", "1"])
    served = Served(process, f"http://127.0.0.1:{port}", log)
    try:
        (instance,) = await ready_instances(served, count=1)
        assert pid_of(instance) == process.pid
        families = await scrape(served.base)
        assert "recsrv_workers" not in families
        assert "worker" not in families["recsrv_instance_info"].samples[0].labels
    finally:
        end_process(process)
    assert process.returncode == 0


def run_cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "recsrv", "run", *args],
        env={**os.environ, "RECSRV_LOG__FORMAT": "json", **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_workers_need_a_shared_event_log_and_at_least_one(tmp_path: Path) -> None:
    env = {"RECSRV_BROKER__URL": "memory://", "RECSRV_SERVER__PORT": str(free_port())}
    refused = run_cli(["--workers", "2"], env, tmp_path)
    assert refused.returncode == 2
    assert "--workers 2" in refused.stderr and "memory://" in refused.stderr
    assert "amqp://" in refused.stderr
    for count in ("0", "-1"):
        refused = run_cli(["--workers", count], env, tmp_path)
        assert refused.returncode == 2
        assert f"--workers must be at least 1, got {count}" in refused.stderr


def test_a_port_in_use_is_refused_before_any_worker_starts(
    tmp_path: Path, amqp_config: BrokerConfig
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**broker_env(amqp_config), "RECSRV_SERVER__PORT": str(port)}
        refused = run_cli(["--workers", "2"], env, tmp_path)
    assert refused.returncode == 1
    assert f"cannot listen on 127.0.0.1 port {port}" in refused.stderr
    assert "worker_started" not in refused.stdout


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("command", "last"),
    [
        ([sys.executable, "-c", "raise SystemExit(3)"], "status 3"),
        (["/nonexistent"], "not started"),
    ],
)
async def test_the_supervisor_gives_up_on_workers_that_keep_failing_to_start(
    tmp_path: Path, command: list[str], last: str
) -> None:
    place = workers.WorkerPlace(0, 2, tmp_path)
    supervisor = workers.Supervisor(2, lambda index: command, place.socket)
    assert await supervisor.run() == 1
    assert supervisor.failure is not None
    assert f"failed to start {workers.MAX_START_FAILURES} times in a row" in supervisor.failure
    assert f"(last: {last}" in supervisor.failure


async def test_the_supervisor_restarts_a_worker_that_had_started(tmp_path: Path) -> None:
    """A worker that listened (made its socket) and then exited is restarted without
    end; SIGTERM stops the supervisor and its workers, and their statuses make its own."""
    place = workers.WorkerPlace(0, 1, tmp_path)
    marker = place.socket(0)
    script = (
        f"import pathlib, time, sys; p = pathlib.Path({str(marker)!r}); p.touch(); "
        "n = len(list(p.parent.glob('run-*'))); (p.parent / f'run-{n}').touch(); "
        "sys.exit(0) if n < 3 else time.sleep(60)"
    )
    supervisor = workers.Supervisor(1, lambda index: [sys.executable, "-c", script], place.socket)
    running = asyncio.create_task(supervisor.run())
    try:
        await wait_until(lambda: len(list(tmp_path.glob("run-*"))) == 4, 20, "four starts")
        assert supervisor.failure is None and not running.done()
    finally:
        supervisor.on_signal(signal.SIGTERM)
        status = await asyncio.wait_for(running, 20)
    assert status == 1  # the last worker died of the forwarded SIGTERM (no handler)
    assert supervisor.statuses == {0: -signal.SIGTERM}
