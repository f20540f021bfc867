"""`recsrv run` as a user starts it: a real process, real signals, real HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest

from recsrv import demo
from recsrv.config import BrokerConfig
from tests.conftest import free_port, marker, spawn_recsrv


def start(tmp_path: Path, *args: str, **env: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "recsrv", "run", *args],
        cwd=tmp_path,
        env={**os.environ, "RECSRV_LOG__FORMAT": "json", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def http(method: str, url: str, body: bytes | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def wait_healthy(base: str, process: subprocess.Popen[bytes]) -> None:
    for _ in range(200):
        assert process.poll() is None, process.stderr.read() if process.stderr else b""
        try:
            if http("GET", base + "/healthz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError("recsrv did not become healthy")


def test_server_instance_names_the_replica_in_logs_readyz_and_metrics(tmp_path: Path) -> None:
    port = free_port()
    process = start(tmp_path, RECSRV_SERVER__PORT=str(port), RECSRV_SERVER__INSTANCE="replica-a")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, process)
        for _ in range(200):
            status, body = http("GET", base + "/readyz")
            if status == 200:
                break
            time.sleep(0.05)
        assert status == 200 and orjson.loads(body)["instance"] == "replica-a"
        status, body = http("GET", base + "/metrics")
        assert 'recsrv_instance_info{instance="replica-a"} 1.0' in body.decode()
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, _ = process.communicate(timeout=15)
    assert process.returncode == 0
    lines = [orjson.loads(line) for line in stdout.splitlines()]
    assert len(lines) >= 3 and all(line["instance"] == "replica-a" for line in lines)


def test_run_starts_embedded_serves_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    process = start(tmp_path, RECSRV_SERVER__PORT=str(port))
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, process)
        event = {"type": "view", "session_id": "s", "item_id": "a"}
        status, body = http("POST", base + "/v1/events", orjson.dumps(event))
        assert (status, orjson.loads(body)) == (202, {"accepted": 1})
        for _ in range(100):
            status, body = http("GET", base + "/v1/items/a")
            if status == 200:
                break
            time.sleep(0.02)
        assert orjson.loads(body)["counters"]["view"] == 1
        assert http("GET", base + "/readyz")[0] == 200
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, _ = process.communicate(timeout=15)
    assert process.returncode == 0
    lines = [orjson.loads(line) for line in stdout.splitlines()]
    # No server.instance set: the host and the pid name this replica in every line.
    assert {line.get("instance") for line in lines} == {f"{socket.gethostname()}-{process.pid}"}
    assert lines[0]["event"] == "starting"
    assert (lines[0]["broker_kind"], lines[0]["store_kind"]) == ("memory", "files")
    assert "memory://" in lines[0]["broker"]
    assert "mode" not in lines[0]
    assert lines[-1]["event"] == "stopped"


def test_the_start_line_names_rabbitmq_and_the_file_store(
    tmp_path: Path, amqp_config: BrokerConfig
) -> None:
    port = free_port()
    process = start(
        tmp_path,
        RECSRV_SERVER__PORT=str(port),
        RECSRV_BROKER__URL=amqp_config.url,
        RECSRV_BROKER__EXCHANGE=amqp_config.exchange,
        RECSRV_BROKER__QUEUE=amqp_config.queue,
        RECSRV_BROKER__INVALID_EXCHANGE=amqp_config.invalid_exchange,
        RECSRV_BROKER__MAX_AGE=amqp_config.max_age,
        RECSRV_STORE__URL=f"file://{tmp_path / 'store'}",
    )
    try:
        wait_healthy(f"http://127.0.0.1:{port}", process)
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, _ = process.communicate(timeout=15)
    assert process.returncode == 0
    first = orjson.loads(stdout.splitlines()[0])
    assert first["event"] == "starting"
    assert (first["broker_kind"], first["store_kind"]) == ("rabbitmq", "files")
    assert amqp_config.queue in first["broker"]
    assert str(tmp_path / "store") in first["store"]
    assert "mode" not in first


def test_invalid_configuration_stops_start_up_naming_the_key(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("[server]\nport = 99999\n")
    process = start(tmp_path)
    _, stderr = process.communicate(timeout=15)
    assert process.returncode == 2
    assert b"server.port" in stderr
    process = start(tmp_path, "--config", str(tmp_path / "none.toml"))
    _, stderr = process.communicate(timeout=15)
    assert process.returncode == 2
    assert b"cannot read" in stderr


def test_unreachable_broker_stops_start_up_with_a_clear_message(tmp_path: Path) -> None:
    process = start(
        tmp_path,
        RECSRV_BROKER__URL=f"amqp://guest:secret@127.0.0.1:{free_port()}/",
        RECSRV_BROKER__CONNECT_TIMEOUT_S="2",
        RECSRV_SERVER__PORT=str(free_port()),
    )
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 1
    assert b"cannot set up RabbitMQ" in stderr
    assert b"secret" not in stderr


def log_entries(log: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in log.read_bytes().splitlines() if line.startswith(b"{")]


def wait_for_log(
    log: Path, event: str, process: subprocess.Popen[bytes], within_s: float
) -> dict[str, Any]:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        found = [entry for entry in log_entries(log) if entry.get("event") == event]
        if found:
            return found[0]
        time.sleep(0.1)
    raise AssertionError(f"no {event!r} log line within {within_s} s:\n{log.read_text()}")


def model_events(base: str) -> int:
    events: int = orjson.loads(http("GET", base + "/v1/popular?k=1")[1])["model"]["events"]
    return events


# Above the sum of the test's own deadlines (60 + 30 + 60 + 10 s).
@pytest.mark.timeout(200)
def test_restarting_the_demo_does_not_apply_its_history_twice(tmp_path: Path) -> None:
    expected = len(demo.catalog()) + len(demo.history(0.0))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server, log = spawn_recsrv(tmp_path, port, {}, command="demo")
    try:
        wait_for_log(log, "demo_loaded", server, within_s=60)
        deadline = time.monotonic() + 30
        while model_events(base) < expected:
            assert time.monotonic() < deadline, "the first run never applied the demo"
            time.sleep(0.1)
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0, log.read_text()

        # The second run restores the first one's state, then publishes the same
        # catalog and history again: their event ids must keep them out.
        server, log = spawn_recsrv(tmp_path, port, {}, command="demo")
        assert wait_for_log(log, "restored", server, within_s=60)["events"] == expected
        wait_for_log(log, "demo_loaded", server, within_s=60)
        status, _ = http("POST", base + "/v1/events", orjson.dumps(marker("after-demo")))
        assert status == 202
        deadline = time.monotonic() + 10
        while http("GET", base + "/v1/items/after-demo")[0] != 200:
            assert time.monotonic() < deadline, "the marker after the demo was never applied"
            time.sleep(0.1)
        assert model_events(base) == expected + 1
    finally:
        server.kill()
        server.wait()
