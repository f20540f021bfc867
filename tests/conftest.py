"""Shared fixtures: real RabbitMQ names per test, and a real HTTP server per test.

Integration tests talk to the RabbitMQ at RECSRV_TEST_AMQP_URL (default: the local
one, guest/guest). Each test gets its own exchange and queue names, deleted
afterwards, so runs never see each other's events.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from pymongo import AsyncMongoClient

from recsrv.app import build_app
from recsrv.broker.memory import MemoryEventLog
from recsrv.config import BrokerConfig, Config, StoreConfig

AMQP_URL = os.environ.get("RECSRV_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")

# Folders whose tests need a service: RabbitMQ, the MongoDB-wire server, a browser, a
# real `recsrv run` process, or at least the whole server on a port. Every test in
# them is marked `integration`, so `pytest -m "not integration"` runs the rest with
# no service at all.
SERVICE_FOLDERS = frozenset({"integration", "browser"})
TESTS = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        folder = item.path.resolve().relative_to(TESTS).parts[0]
        if folder in SERVICE_FOLDERS:
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def broker_names() -> dict[str, str]:
    return new_broker_names()


def new_broker_names() -> dict[str, str]:
    """Exchange and queue names of a test's own."""
    run = uuid.uuid4().hex[:10]
    return {
        "exchange": f"recsrv.test.{run}.events",
        "queue": f"recsrv.test.{run}.events.stream",
        "invalid_exchange": f"recsrv.test.{run}.events.invalid",
    }


@pytest.fixture
async def amqp_config(broker_names: dict[str, str]) -> AsyncIterator[BrokerConfig]:
    """A BrokerConfig for the real RabbitMQ with unique names; deletes them afterwards."""
    yield BrokerConfig(url=AMQP_URL, max_age="1h", **broker_names)
    await delete_broker_names(broker_names)


async def delete_broker_names(broker_names: dict[str, str]) -> None:
    """Delete the queues and exchanges recsrv declared for `broker_names`."""
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        for queue in (broker_names["queue"], broker_names["invalid_exchange"]):
            await channel.queue_delete(queue)
        for exchange in (broker_names["exchange"], broker_names["invalid_exchange"]):
            await channel.exchange_delete(exchange)


@pytest.fixture
async def amqp_publish(
    amqp_config: BrokerConfig,
) -> AsyncIterator[Callable[[Any], Awaitable[None]]]:
    """Publish a JSON value (or raw bytes) to the test exchange, with confirms."""
    connection = await aio_pika.connect(AMQP_URL)
    channel = await connection.channel(publisher_confirms=True)

    async def publish(body: Any, routing_key: str = "test") -> None:
        exchange = await channel.get_exchange(amqp_config.exchange)
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        await exchange.publish(aio_pika.Message(data), routing_key=routing_key)

    yield publish
    await connection.close()


class RabbitMQ:
    """Stops and starts the local RabbitMQ application (`rabbitmqctl stop_app`)."""

    # Each rabbitmqctl call and the wait for the broker to take connections again are
    # bounded, so that a broker that does not come back fails with its own message.
    COMMAND_TIMEOUT_S = 30.0
    CONNECT_WITHIN_S = 30.0

    def __init__(self) -> None:
        self.stopped = False

    async def stop(self) -> None:
        self.stopped = True  # before the call: a stop that fails half way is undone too
        await self._rabbitmqctl("stop_app")

    async def start(self) -> None:
        """Start the application and return once it accepts AMQP connections."""
        await self._rabbitmqctl("start_app")
        await self._rabbitmqctl("await_startup")
        deadline = time.monotonic() + self.CONNECT_WITHIN_S
        while True:
            try:
                connection = await aio_pika.connect(AMQP_URL, timeout=5)
            except (ConnectionError, OSError, aio_pika.exceptions.AMQPError) as exc:
                if time.monotonic() > deadline:
                    message = f"RabbitMQ took no connection after start: {exc!r}"
                    raise AssertionError(message) from exc
                await asyncio.sleep(0.2)
                continue
            await connection.close()
            self.stopped = False
            return

    async def _rabbitmqctl(self, command: str) -> None:
        process = await asyncio.create_subprocess_exec(
            "rabbitmqctl",
            "-q",
            command,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            _, stderr = await asyncio.wait_for(process.communicate(), self.COMMAND_TIMEOUT_S)
        except TimeoutError:
            process.kill()
            await process.wait()
            message = f"rabbitmqctl {command} took over {self.COMMAND_TIMEOUT_S} s"
            raise AssertionError(message) from None
        assert process.returncode == 0, f"rabbitmqctl {command}: {stderr.decode()}"


@pytest.fixture
async def rabbitmq(amqp_config: BrokerConfig) -> AsyncIterator[RabbitMQ]:
    """Control of the local RabbitMQ that always leaves it running and reachable.

    A test may stop the broker; whatever happens next (a failed assertion, the pytest
    timeout), it is started again here. The fixture depends on amqp_config so that
    the test's names are deleted after the broker is back, not while it is down.
    """
    broker = RabbitMQ()
    try:
        yield broker
    finally:
        if broker.stopped:
            try:
                await broker.start()
            except BaseException:
                # Last resort, if the start above was cancelled or failed: blocking is
                # fine here, the test is over, and the broker must not stay down.
                for command in ("start_app", "await_startup"):
                    subprocess.run(  # noqa: ASYNC221
                        ["rabbitmqctl", "-q", command], timeout=60, check=False
                    )
                raise


ServerFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
async def make_server(tmp_path: Path) -> AsyncIterator[ServerFactory]:
    """Start the whole app on a real loopback port; close every one made afterwards.

    Unless a store is given, checkpoints go to files under the test's tmp_path.
    """
    clients: list[TestClient[Any, Any]] = []

    async def make(config: Config | None = None, **sections: Any) -> TestClient[Any, Any]:
        sections.setdefault("store", StoreConfig(url=f"file://{tmp_path / 'checkpoints'}"))
        config = replace(config or Config(), **sections)
        log = MemoryEventLog() if config.broker.url == "memory://" else None
        client: TestClient[Any, Any] = TestClient(TestServer(build_app(config, log)))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in reversed(clients):
        await client.close()


@pytest.fixture(params=["memory", "amqp"])
async def client(
    request: pytest.FixtureRequest, make_server: ServerFactory, amqp_config: BrokerConfig
) -> TestClient[Any, Any]:
    """The server in embedded mode and against the real RabbitMQ: same behaviour."""
    if request.param == "memory":
        return await make_server()
    return await make_server(broker=amqp_config)


async def wait_for_events(
    client: TestClient[Any, Any],
    events: int,
    within_s: float = 10.0,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Poll until the model has applied at least `events` events; return its info."""
    deadline = time.monotonic() + within_s
    while True:
        response = await client.get("/v1/popular", params={"k": "1"}, headers=headers)
        model: dict[str, Any] = (await response.json())["model"]
        if model["events"] >= events:
            return model
        if time.monotonic() > deadline:
            raise AssertionError(f"model reached {model} but {events} events were expected")
        await asyncio.sleep(0.02)


async def wait_until(
    condition: Callable[[], bool | Awaitable[bool]], within_s: float, what: str
) -> None:
    """Poll `condition` (a function, plain or async) until it holds; fail naming `what`
    after `within_s` seconds."""
    deadline = time.monotonic() + within_s
    while True:
        holds = condition()
        if not isinstance(holds, bool):
            holds = await holds
        if holds:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within_s} s: {what}")
        await asyncio.sleep(0.05)


def marker(name: str, ts: float = 1_700_000_000) -> dict[str, Any]:
    """A view of an item of its own, to publish last. Once that item exists, everything
    published before it has been applied (the log is consumed in order), so an exact
    count read then would also see anything applied twice."""
    return {"type": "view", "session_id": name, "item_id": name, "ts": ts, "event_id": name}


async def item_seen(
    client: TestClient[Any, Any], item: str, headers: dict[str, str] | None = None
) -> bool:
    """Whether the model knows `item` (a marker has been applied)."""
    return (await client.get(f"/v1/items/{item}", headers=headers)).status == 200


async def post_events(
    client: TestClient[Any, Any], events: Any, headers: dict[str, str] | None = None
) -> Any:
    """POST /v1/events, asserting 202; `headers` add to the JSON content type (a key)."""
    response = await client.post(
        "/v1/events", data=orjson.dumps(events), headers={**JSON, **(headers or {})}
    )
    assert response.status == 202, await response.text()
    return await response.json()


JSON = {"Content-Type": "application/json"}


# ---- real `recsrv` processes ------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]


def broker_env(config: BrokerConfig) -> dict[str, str]:
    """The environment that points a `recsrv` process at the stream of `config`."""
    return {
        "RECSRV_BROKER__URL": config.url,
        "RECSRV_BROKER__EXCHANGE": config.exchange,
        "RECSRV_BROKER__QUEUE": config.queue,
        "RECSRV_BROKER__INVALID_EXCHANGE": config.invalid_exchange,
        "RECSRV_BROKER__MAX_AGE": config.max_age,
    }


def spawn_recsrv(
    tmp_path: Path,
    port: int,
    env: dict[str, str],
    command: str = "run",
    args: Sequence[str] = (),
) -> tuple[subprocess.Popen[bytes], Path]:
    """A real `python -m recsrv COMMAND ARGS` in `tmp_path` on `port`, checkpointing to
    tmp_path/store, with `env` over ours; its JSON log goes to tmp_path/server.log."""
    full_env = {
        **os.environ,
        "RECSRV_SERVER__PORT": str(port),
        "RECSRV_STORE__URL": f"file://{tmp_path / 'store'}",
        "RECSRV_LOG__FORMAT": "json",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        **env,
    }
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "recsrv", command, *args],
            cwd=tmp_path,
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return server, log


def end_process(process: subprocess.Popen[bytes], within_s: float = 15.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `within_s`; reaped either way."""
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=within_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# ---- MongoDB (the nx-27017 wire-protocol server, or RECSRV_TEST_MONGODB_URL) -------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class NxServer:
    """An nx-27017 daemon on a free port; `data_dir` "memory" keeps nothing on disk."""

    def __init__(self, workdir: Path, data_dir: str = "memory") -> None:
        self.port = free_port()
        self.data_dir = data_dir
        self.pid_file = (workdir / f"nx-{self.port}.pid").resolve()
        self.log_file = (workdir / f"nx-{self.port}.log").resolve()
        self.url = f"mongodb://127.0.0.1:{self.port}"

    def start(self) -> None:
        executable = shutil.which("nx-27017") or str(Path(sys.executable).parent / "nx-27017")
        # Absolute paths: the daemon changes directory.
        subprocess.run(
            [
                executable,
                "-d",
                "--data-dir",
                self.data_dir,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--pid-file",
                str(self.pid_file),
                "--log-file",
                str(self.log_file),
            ],
            check=True,
            capture_output=True,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"nx-27017 did not listen on {self.port}: {self.log_file}")

    def stop(self) -> None:
        executable = shutil.which("nx-27017") or str(Path(sys.executable).parent / "nx-27017")
        subprocess.run(
            [executable, "--stop", "--pid-file", str(self.pid_file)], capture_output=True
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) != 0:
                    return
            time.sleep(0.05)


@pytest.fixture(scope="session")
def mongodb_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of a MongoDB-wire server shared by the session (no database in it)."""
    given = os.environ.get("RECSRV_TEST_MONGODB_URL")
    if given:
        yield given.rstrip("/")
        return
    server = NxServer(tmp_path_factory.mktemp("mongodb"))
    server.start()
    yield server.url
    server.stop()


@pytest.fixture(params=["files", "mongodb"])
def store_config(request: pytest.FixtureRequest, tmp_path: Path) -> StoreConfig:
    """Each test once on a checkpoint directory and once on a MongoDB database."""
    if request.param == "files":
        return StoreConfig(url=f"file://{tmp_path / 'state'}")
    config: StoreConfig = request.getfixturevalue("mongo_store")
    return config


@pytest.fixture
async def mongo_store(mongodb_url: str) -> AsyncIterator[StoreConfig]:
    """A StoreConfig on a database of this test's own, dropped afterwards."""
    database = f"recsrv_test_{uuid.uuid4().hex[:10]}"
    yield StoreConfig(url=f"{mongodb_url}/{database}", checkpoint_interval_s=3600)
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_url)
    await client.drop_database(database)
    await client.close()


# ---- Server-Sent Events ------------------------------------------------------------


@dataclass
class Message:
    id: str | None
    event: str | None
    data: Any


async def next_message(response: aiohttp.ClientResponse, within_s: float = 5.0) -> Message:
    """Read one SSE message (comment lines, the heartbeats, are skipped)."""
    fields: dict[str, str] = {}
    async with asyncio.timeout(within_s):
        while True:
            raw = await response.content.readline()
            if not raw:
                raise EOFError("stream ended")
            line = raw.decode().rstrip("\r\n")
            if line == "":
                if "data" in fields:
                    return Message(
                        fields.get("id"), fields.get("event"), orjson.loads(fields["data"])
                    )
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
