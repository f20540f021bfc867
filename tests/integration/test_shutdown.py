"""SIGTERM as a container runtime sends it: a real `recsrv run`, real requests in flight.

The order under test (recsrv/app.py): stop consuming, end the live SSE streams, let
in-flight requests finish within server.shutdown_timeout_s, write the final
checkpoint, exit 0. A second signal exits at once with status 1.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from recsrv.app import STATE_TASK, build_app
from recsrv.broker.memory import MemoryEventLog
from recsrv.config import BrokerConfig, Config, StoreConfig
from tests.conftest import JSON, broker_env, free_port, wait_for_events


class Server:
    """One `python -m recsrv run` process and the JSON log lines it printed."""

    def __init__(self, tmp_path: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.checkpoints = tmp_path / "checkpoints"
        self.env = {
            **os.environ,
            "RECSRV_SERVER__PORT": str(self.port),
            "RECSRV_STORE__URL": f"file://{self.checkpoints}",
            # No periodic checkpoint: the only one written is the final one.
            "RECSRV_STORE__CHECKPOINT_INTERVAL_S": "3600",
            "RECSRV_LOG__FORMAT": "json",
            **env,
        }
        self.cwd = tmp_path
        self.process: asyncio.subprocess.Process | None = None
        self.lines: list[dict[str, Any]] = []
        self._seen: dict[str, asyncio.Event] = {}
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.lines.clear()
        self._seen.clear()
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "recsrv",
            "run",
            cwd=self.cwd,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        self._reader = asyncio.create_task(self._read(self.process))

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        async for raw in process.stdout:
            line = orjson.loads(raw)
            self.lines.append(line)
            self._event(line["event"]).set()

    def _event(self, name: str) -> asyncio.Event:
        return self._seen.setdefault(name, asyncio.Event())

    async def logged(self, name: str, within_s: float = 10.0) -> None:
        await asyncio.wait_for(self._event(name).wait(), within_s)

    def events_logged(self) -> list[str]:
        return [line["event"] for line in self.lines]

    def signal(self, sig: signal.Signals = signal.SIGTERM) -> float:
        assert self.process is not None
        self.process.send_signal(sig)
        return time.time()

    async def exit_code(self, within_s: float) -> int:
        assert self.process is not None
        code = await asyncio.wait_for(self.process.wait(), within_s)
        if self._reader is not None:
            await self._reader
        return code

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        if self._reader is not None:
            await self._reader

    async def model(self, http: aiohttp.ClientSession) -> dict[str, int]:
        async with http.get(self.base + "/v1/popular", params={"k": "1"}) as response:
            body: dict[str, Any] = await response.json()
            return body["model"]  # type: ignore[no-any-return]

    async def wait_ready(self, http: aiohttp.ClientSession) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process is not None and self.process.returncode is None
            try:
                async with http.get(self.base + "/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
        raise AssertionError(f"{self.base} did not become ready")

    async def wait_for_events(self, http: aiohttp.ClientSession, events: int) -> dict[str, int]:
        deadline = time.monotonic() + 30
        while True:
            model = await self.model(http)
            if model["events"] >= events:
                return model
            assert time.monotonic() < deadline, f"model {model}, expected {events} events"
            await asyncio.sleep(0.05)

    def checkpoint_files(self) -> list[dict[str, Any]]:
        if not self.checkpoints.is_dir():
            return []
        return [orjson.loads(path.read_bytes()) for path in self.checkpoints.glob("*.json")]


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[list[Server]]:
    """Servers a test starts; any still running at the end is killed."""
    made: list[Server] = []
    yield made
    for server in made:
        await server.kill()


class HeldDownload:
    """A request in flight for as long as the test wants: a client that reads nothing.

    Many GETs of a 45 KB document are pipelined on one connection with a small
    receive buffer; once the buffers on the way are full, the server's handler waits
    to write. `read_all` then reads until the server closes the connection.
    """

    PATH = "/demo/catalog.json"
    REQUESTS = 300  # 13 MB: more than every buffer between the handler and the test

    def __init__(self, server: Server) -> None:
        self.port = server.port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def begin(self) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", self.port))
        self.reader, self.writer = await asyncio.open_connection(sock=sock)
        request = f"GET {self.PATH} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n\r\n"
        self.writer.write(request.encode() * self.REQUESTS)
        await self.writer.drain()
        await asyncio.sleep(1.0)  # the server writes until its buffers are full

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    async def read_all(self) -> list[int]:
        """The statuses of the responses received whole; fails on a truncated one."""
        assert self.reader is not None and self.writer is not None
        data = await asyncio.wait_for(self.reader.read(), 20)
        self.writer.close()
        statuses = []
        while data:
            head, separator, data = data.partition(b"\r\n\r\n")
            assert separator, f"truncated head after {len(statuses)} responses"
            lines = head.split(b"\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in lines
                if line.lower().startswith(b"content-length:")
            )
            assert len(data) >= length, f"response {len(statuses) + 1} cut short"
            statuses.append(int(lines[0].split(b" ", 2)[1]))
            data = data[length:]
        return statuses


class HeldUpload:
    """A POST whose body is held back. aiohttp reads nothing more from a connection once
    shutdown has begun, so such a request can only be cut at the shutdown timeout.

    `Expect: 100-continue` makes the server answer "100 Continue" once the handler runs.
    """

    def __init__(self, server: Server) -> None:
        self.port = server.port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def begin(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        head = (
            "POST /v1/events HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{self.port}\r\n"
            "Content-Type: application/json\r\n"
            "Content-Length: 1000\r\n"
            "Expect: 100-continue\r\n\r\n"
        )
        self.writer.write(head.encode() + b'[{"type":')
        await self.writer.drain()
        interim = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 10)
        assert interim.startswith(b"HTTP/1.1 100"), interim

    async def closed_without_answer(self) -> bool:
        assert self.reader is not None and self.writer is not None
        rest = await asyncio.wait_for(self.reader.read(), 10)
        self.writer.close()
        return rest == b""


def views(session: str, count: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {"type": "view", "session_id": session, "item_id": f"i{n % 7}", "ts": 1_700_000_000 + n}
        for n in range(start, start + count)
    ]


async def open_stream(http: aiohttp.ClientSession, server: Server) -> aiohttp.ClientResponse:
    """A live SSE stream, once its first list has arrived."""
    response = await http.get(server.base + "/v1/sessions/s1/stream")
    assert response.status == 200
    first = await asyncio.wait_for(response.content.readuntil(b"\r\n\r\n"), 10)
    assert b"event: recommendations" in first
    return response


@pytest.mark.timeout(120)
async def test_sigterm_stops_consuming_ends_streams_finishes_requests_and_checkpoints(
    tmp_path: Path, servers: list[Server], amqp_config: BrokerConfig, amqp_publish: Any
) -> None:
    timeout_s = 8.0
    env = {**broker_env(amqp_config), "RECSRV_SERVER__SHUTDOWN_TIMEOUT_S": str(timeout_s)}
    server = Server(tmp_path, env)
    servers.append(server)
    await server.start()
    async with aiohttp.ClientSession() as http:
        await server.wait_ready(http)
        for n in range(5):
            await amqp_publish(views("s1", 4, start=4 * n))
        before = await server.wait_for_events(http, 20)
        assert before["events"] == 20
        stream = await open_stream(http, server)
        download = HeldDownload(server)
        await download.begin()

        signalled = server.signal()
        # The live stream ends at once, although a request still holds the shutdown.
        rest = await asyncio.wait_for(stream.content.read(), 5)
        assert b"event: recommendations" not in rest
        stream_ended_s = time.time() - signalled
        await server.logged("consuming_stopped")
        # Published after consuming stopped: kept by the stream, not applied here.
        for n in range(3):
            await amqp_publish(views("s-after", 2, start=200 + 2 * n))
        await asyncio.sleep(1.0)
        # Still waiting for the request in flight, which is then allowed to finish.
        assert server.process is not None and server.process.returncode is None
        statuses = await download.read_all()
        code = await server.exit_code(within_s=timeout_s + 10)
        exited_s = time.time() - signalled

    assert code == 0
    assert stream_ended_s < 3
    assert exited_s < timeout_s + 5
    # The one in flight finished whole; the pipelined ones behind it were not started.
    assert 1 <= len(statuses) < HeldDownload.REQUESTS
    assert set(statuses) == {200}
    logged = server.events_logged()
    order = ["stopping", "consuming_stopped", "checkpoint_written", "stopped"]
    assert [name for name in logged if name in order] == order
    stopped = next(line for line in server.lines if line["event"] == "consuming_stopped")
    assert (stopped["offset"], stopped["events"]) == (before["offset"], 20)
    # One checkpoint, the final one: taken after the signal, at the last applied message.
    [checkpoint] = server.checkpoint_files()
    assert checkpoint["created_at"] > signalled
    assert (checkpoint["offset"], checkpoint["events"]) == (before["offset"], 20)

    # Nothing was lost: a restart restores the checkpoint and replays the rest.
    again = Server(tmp_path, env)
    servers.append(again)
    await again.start()
    async with aiohttp.ClientSession() as http:
        await again.wait_ready(http)
        model = await again.wait_for_events(http, 20 + 6)
    assert model["events"] == 26
    restored = next(line for line in again.lines if line["event"] == "restored")
    assert (restored["offset"], restored["events"]) == (before["offset"], 20)
    again.signal()
    assert await again.exit_code(within_s=30) == 0


@pytest.mark.timeout(60)
async def test_a_request_that_never_finishes_is_cut_at_the_shutdown_timeout(
    tmp_path: Path, servers: list[Server]
) -> None:
    server = Server(tmp_path, {"RECSRV_SERVER__SHUTDOWN_TIMEOUT_S": "2"})
    servers.append(server)
    await server.start()
    async with aiohttp.ClientSession() as http:
        await server.wait_ready(http)
        upload = HeldUpload(server)
        await upload.begin()
        signalled = server.signal()
        code = await server.exit_code(within_s=20)
        exited_s = time.time() - signalled
        assert await upload.closed_without_answer()
    assert code == 0
    assert 1.9 <= exited_s < 2 + 6  # waited for the request, not past the timeout
    assert "checkpoint_written" in server.events_logged()


@pytest.mark.timeout(60)
async def test_a_second_sigterm_exits_at_once(tmp_path: Path, servers: list[Server]) -> None:
    server = Server(tmp_path, {"RECSRV_SERVER__SHUTDOWN_TIMEOUT_S": "60"})
    servers.append(server)
    await server.start()
    async with aiohttp.ClientSession() as http:
        await server.wait_ready(http)
        await http.post(server.base + "/v1/events", data=orjson.dumps(views("s1", 3)), headers=JSON)
        await server.wait_for_events(http, 3)
        download = HeldDownload(server)
        await download.begin()
        server.signal()
        await server.logged("consuming_stopped")
        await asyncio.sleep(1.0)
        # Held up by the request in flight, for up to a minute.
        assert server.process is not None and server.process.returncode is None
        second = server.signal()
        code = await server.exit_code(within_s=5)
        exited_s = time.time() - second
        download.close()
    assert code == 1
    assert exited_s < 3
    logged = server.events_logged()
    assert logged[-1] == "exiting_at_once"
    assert "checkpoint_written" not in logged
    assert server.checkpoint_files() == []


async def test_embedded_events_published_after_consuming_stopped_reach_the_final_checkpoint(
    tmp_path: Path,
) -> None:
    # memory:// ends with the process: what a request in flight at the signal published
    # after the consumer stopped must still be applied before the final checkpoint,
    # or its 202 would have been a lie. Driven in-process to hit that moment exactly.
    config = replace(Config(), store=StoreConfig(url=f"file://{tmp_path / 'checkpoints'}"))
    log = MemoryEventLog()
    app = build_app(config, log)
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    response = await client.post("/v1/events", data=orjson.dumps(views("s1", 4)), headers=JSON)
    assert response.status == 202
    await wait_for_events(client, 4)
    await app[STATE_TASK].stop()  # what the start of shutdown does
    await log.publish(orjson.dumps(views("s2", 3, start=50)), "view")  # a request in flight
    await client.close()  # the rest of the shutdown
    [checkpoint] = [
        orjson.loads(path.read_bytes()) for path in (tmp_path / "checkpoints").glob("*.json")
    ]
    assert (checkpoint["offset"], checkpoint["events"]) == (1, 7)

    restarted: TestClient[Any, Any] = TestClient(TestServer(build_app(config, MemoryEventLog())))
    await restarted.start_server()
    try:
        assert (await wait_for_events(restarted, 7))["events"] == 7
    finally:
        await restarted.close()
