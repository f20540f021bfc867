"""Soak: ingest, REST and SSE together for a while; errors, latencies and RSS over time.

Starts `recsrv run` on RabbitMQ (names of its own, checkpoint files in a temporary
directory), seeds a catalog, then for --duration seconds at once:

- publishes events over AMQP at --rate events/s with publisher confirms, each with a
  unique event_id, over bounded pools of sessions, users and items;
- runs --rest-concurrency REST clients (--rest-rate requests/s in all): personalised
  lists for recently active sessions, popular, similar, bought-together, item info;
- runs --sse-clients SSE clients, each holding a live session's stream for 5-20 s and
  then reconnecting (half the time with Last-Event-ID), counting lists pushed;
- samples the server's RSS (VmRSS in /proc) every --sample-every seconds.

Then it waits for the server to catch up and checks exactly-once: the model's event
count, the messages consumed and every item's per-type counters must equal what the
broker confirmed, with no duplicates and no invalid events. It reads the server's log
for errors, stops the server (SIGTERM, expecting exit code 0) and deletes its
RabbitMQ objects, also when something failed.

RSS must level off. Sessions, users and items come from bounded pools, so once every
pool member has been seen the state stops growing: the session table, user profiles,
item arrays and neighbour rows (at most `model.neighbors` per item) are all bounded.
The one structure that still fills during a long run is the de-duplication window of
recent event_ids (`model.dedup_window`: 100,000 ids, about 11 MiB when full, reached
after 500 s at 200 events/s). The verdict compares the median RSS at the start of the
second half of the run with the median at its end: growth must stay within
max(10 % of the half-way RSS, 24 MiB). That covers the rest of the de-duplication
window filling up, checkpoint buffers and allocator noise; a leak of 200 bytes per
event or per request (the usual kind: a list never trimmed, a task or a connection
never released) adds over 25 MiB in the second half of the 15-minute run at the
default load (about 300 events and requests a second).

Exit status 1 when anything failed: an error of any kind, an event lost or applied
twice, or the RSS bound broken.

    python bench/soak.py --duration 900                   # the documented run
    python bench/soak.py --duration 60 --json             # what CI runs
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import os
import random
import signal
import statistics
import sys
import tempfile
import time
import traceback
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import aio_pika
import aiohttp
import aiormq
import orjson
from services import free_port

COUNTED = ("view", "click", "add_to_cart", "remove_from_cart", "purchase")
# Interaction mix of the published events (weights).
EVENT_MIX = {
    "view": 60,
    "click": 15,
    "add_to_cart": 10,
    "remove_from_cart": 3,
    "purchase": 5,
    "search": 5,
    "catalog.upsert": 2,
}
SEED_BATCH = 500
CATEGORIES = ("shoes", "shirts", "hats", "bags", "socks")
# REST endpoints and their share of requests.
REST_MIX = {"recommendations": 50, "popular": 15, "similar": 20, "bought_together": 5, "item": 10}
REPORTED_ARGS = (
    "duration",
    "rate",
    "batch",
    "sessions",
    "items",
    "sse_clients",
    "rest_concurrency",
    "rest_rate",
    "checkpoint_interval",
    "tolerate_broker_restarts",
)
RSS_BOUND_FRACTION = 0.10
RSS_BOUND_MIB = 24.0
PR_SET_PDEATHSIG = 1  # prctl(2)
RETRY_DELAY_S = 0.5
RETRY_FOR_S = 120.0
# Server log errors that a broker restart causes (aio-pika/aiormq losing the connection).
BROKER_OUTAGE_MARKERS = ("aiormq.", "AMQPConnectionError", "CONNECTION_FORCED")
# What a failed publish raises: broker errors, a dead channel, the network, no answer.
PUBLISH_ERRORS = (
    aiormq.exceptions.AMQPError,
    aiormq.exceptions.ChannelInvalidStateError,
    ConnectionError,
    TimeoutError,
)


# ---------------------------------------------------------------- measurements


@dataclass
class Tally:
    """Everything the soak counts while it runs."""

    errors: Counter[str] = field(default_factory=Counter)
    events_confirmed: int = 0
    messages_confirmed: int = 0
    events_uncertain: int = 0  # published, but the broker's answer never came
    events_seeded: int = 0  # the catalog published before the load
    # With --tolerate-broker-restarts: reconnections, and publishes tried again.
    broker_restarts: int = 0
    retried_messages: int = 0
    retried_events: int = 0
    item_counters: dict[str, Counter[str]] = field(default_factory=dict)
    recent_sessions: deque[str] = field(default_factory=lambda: deque(maxlen=500))
    rest_latency_s: dict[str, list[float]] = field(default_factory=dict)
    sse_connections: int = 0
    sse_initial: int = 0
    sse_pushes: int = 0
    sse_latency_s: list[float] = field(default_factory=list)
    # When the newest event of each live session was published (for push latency).
    live_published_at: dict[str, float] = field(default_factory=dict)
    rss: list[tuple[float, float]] = field(default_factory=list)

    def error(self, kind: str) -> None:
        self.errors[kind] += 1

    def confirmed(self, events: list[dict[str, Any]]) -> None:
        self.messages_confirmed += 1
        self.events_confirmed += len(events)
        for event in events:
            item = event.get("item_id")
            if item is not None:
                self.item_counters.setdefault(item, Counter())[event["type"]] += 1
            if "session_id" in event:
                self.recent_sessions.append(event["session_id"])


def percentiles(samples: Iterable[float]) -> dict[str, float]:
    """p50/p95/p99/max in milliseconds (empty if there are no samples)."""
    ordered = sorted(samples)
    if not ordered:
        return {}

    def at(q: float) -> float:
        return round(ordered[min(int(q * len(ordered)), len(ordered) - 1)] * 1000, 2)

    return {"p50_ms": at(0.50), "p95_ms": at(0.95), "p99_ms": at(0.99), "max_ms": at(1.0)}


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def rss_verdict(samples: list[tuple[float, float]], duration: float) -> dict[str, Any]:
    """Growth of RSS over the second half of the run, against the stated bound."""
    second_half = [mib for t, mib in samples if t >= duration / 2]
    if len(second_half) < 2:
        return {"ok": False, "reason": "too few RSS samples in the second half"}
    edge = max(1, min(3, len(second_half) // 3))
    halfway = statistics.median(second_half[:edge])
    end = statistics.median(second_half[-edge:])
    bound = max(RSS_BOUND_FRACTION * halfway, RSS_BOUND_MIB)
    growth = end - halfway
    points = [(t, mib) for t, mib in samples if t >= duration / 2]
    return {
        "ok": growth <= bound,
        "halfway_mib": round(halfway, 1),
        "end_mib": round(end, 1),
        "growth_mib": round(growth, 1),
        "bound_mib": round(bound, 1),
        "max_mib": round(max(mib for _, mib in samples), 1),
        "second_half_slope_mib_per_h": round(_slope(points) * 3600, 1),
    }


def _slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (t, y) points, per second."""
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    if spread == 0:
        return 0.0
    return sum((t - mean_t) * (y - mean_y) for t, y in points) / spread


# ---------------------------------------------------------------- the server


@dataclass
class Server:
    """A `recsrv run` subprocess on RabbitMQ names of its own."""

    amqp_url: str
    workdir: Path
    checkpoint_interval_s: float
    port: int = field(default_factory=free_port)
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    process: asyncio.subprocess.Process | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "server.log"

    @property
    def names(self) -> dict[str, str]:
        prefix = f"recsrv.soak.{self.run_id}"
        return {
            "exchange": f"{prefix}.events",
            "queue": f"{prefix}.events.stream",
            "invalid_exchange": f"{prefix}.events.invalid",
        }

    def env(self) -> dict[str, str]:
        names = self.names
        return {
            **os.environ,
            "RECSRV_SERVER__HOST": "127.0.0.1",
            "RECSRV_SERVER__PORT": str(self.port),
            "RECSRV_BROKER__URL": self.amqp_url,
            "RECSRV_BROKER__EXCHANGE": names["exchange"],
            "RECSRV_BROKER__QUEUE": names["queue"],
            "RECSRV_BROKER__INVALID_EXCHANGE": names["invalid_exchange"],
            "RECSRV_BROKER__MAX_AGE": "1D",
            "RECSRV_STORE__URL": f"file://{self.workdir / 'checkpoints'}",
            "RECSRV_STORE__CHECKPOINT_INTERVAL_S": str(self.checkpoint_interval_s),
            "RECSRV_LOG__LEVEL": "info",
            "RECSRV_LOG__FORMAT": "json",
        }

    async def start(self) -> None:
        with self.open_log() as log:
            # Its own directory: no ./config.toml of the caller's is read.
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "recsrv",
                "run",
                env=self.env(),
                cwd=self.workdir,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )

    def log_tail(self, lines: int) -> list[str]:
        if not self.log_path.exists():
            return []
        text = self.log_path.read_bytes().decode(errors="replace")
        return [line[:500] for line in text.splitlines()[-lines:]]

    def open_log(self) -> BinaryIO:
        return open(self.log_path, "wb")  # a new, local file: no wait worth a thread

    async def wait_ready(self, http: aiohttp.ClientSession, within_s: float = 60) -> None:
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            if self.process is None or self.process.returncode is not None:
                raise RuntimeError(f"recsrv exited at start; see {self.log_path}")
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(self.base + "/readyz") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.2)
        raise RuntimeError(f"recsrv not ready within {within_s:.0f} s; see {self.log_path}")

    async def stop(self, within_s: float = 30) -> int | None:
        """SIGTERM, then SIGKILL if it is still there; the exit code of the first."""
        process = self.process
        if process is None or process.returncode is not None:
            return None if process is None else process.returncode
        process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(process.wait(), within_s)
        except TimeoutError:
            process.kill()
            await process.wait()
            return None

    async def delete_broker_objects(self) -> None:
        names = self.names
        connection = await aio_pika.connect(self.amqp_url)
        async with connection:
            channel = await connection.channel()
            for queue in (names["queue"], names["invalid_exchange"]):
                await channel.queue_delete(queue)
            for exchange in (names["exchange"], names["invalid_exchange"]):
                await channel.exchange_delete(exchange)

    def log_findings(self) -> dict[str, Any]:
        """Error lines of the server's log, and its warnings counted by event name.

        structlog writes JSON lines; libraries log through the standard logging
        module as plain "LEVEL:logger:message" lines; a traceback is an error, told
        by its last line (the exception).
        """
        errors: list[str] = []
        warnings: Counter[str] = Counter()
        traceback_open = False
        for raw in self.log_path.read_bytes().splitlines():
            line = raw.decode(errors="replace")
            if traceback_open:
                if not line.startswith(" "):
                    errors[-1] += " ... " + line[:300]
                    traceback_open = False
                continue
            level, name = _log_level(line)
            if line.startswith("Traceback"):
                errors.append(line)
                traceback_open = True
            elif level in ("error", "critical", "exception"):
                errors.append(line[:4000])  # a structlog exception carries its frames
            elif level == "warning":
                warnings[name] += 1
        return {"errors": errors, "warnings": dict(warnings)}


def _die_with_parent() -> None:
    """In the server's process: get SIGTERM when the soak dies, even by SIGKILL (Linux),
    so a soak killed by a timeout leaves no server behind."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _log_level(line: str) -> tuple[str | None, str]:
    """(level, event or logger name) of a structlog JSON line or a logging module line."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        record = None
    if isinstance(record, dict):
        return record.get("level"), str(record.get("event"))
    level, _, rest = line.partition(":")
    return level.lower(), rest.partition(":")[0]


# ---------------------------------------------------------------- load


@dataclass
class Pools:
    """Bounded pools, so the state reaches a steady size (see the module docstring)."""

    sessions: int
    items: int
    live: int
    rng: random.Random = field(default_factory=lambda: random.Random(11))

    def session(self) -> str:
        return f"s{self.rng.randrange(self.sessions)}"

    def live_session(self) -> str:
        return f"s{self.rng.randrange(self.live)}"

    def item(self) -> str:
        return f"i{self.rng.randrange(self.items)}"

    def catalog_item(self, item_id: str) -> dict[str, Any]:
        return {
            "item_id": item_id,
            "title": f"Item {item_id}",
            "category": CATEGORIES[int(item_id[1:]) % len(CATEGORIES)],
            "price": round(self.rng.uniform(1, 200), 2),
        }


class Publisher:
    """Events over AMQP at a steady rate, many publishes in flight, each confirmed."""

    def __init__(self, args: argparse.Namespace, exchange: Any, pools: Pools, tally: Tally):
        self.args = args
        self.exchange = exchange
        self.pools = pools
        self.tally = tally
        self.run_id = uuid.uuid4().hex[:8]
        self.sequence = 0
        self.window = asyncio.Semaphore(args.window)
        self.in_flight: set[asyncio.Task[None]] = set()
        self.live_share = args.live_share if args.sse_clients else 0.0

    def event(self) -> dict[str, Any]:
        pools, self.sequence = self.pools, self.sequence + 1
        kind = pools.rng.choices(list(EVENT_MIX), weights=list(EVENT_MIX.values()))[0]
        base: dict[str, Any] = {"ts": time.time(), "event_id": f"{self.run_id}-{self.sequence}"}
        if kind == "catalog.upsert":
            return {"type": kind, "item": pools.catalog_item(pools.item()), **base}
        live = pools.rng.random() < self.live_share
        session = pools.live_session() if live else pools.session()
        event = {"type": kind, "session_id": session, **base}
        if pools.rng.random() < 0.3:
            event["user_id"] = f"u{int(session[1:]) % max(pools.sessions // 3, 1)}"
        if kind == "search":
            event["query"] = pools.rng.choice(CATEGORIES)
        else:
            event["item_id"] = pools.item()
        return event

    async def seed_catalog(self) -> None:
        items = [f"i{n}" for n in range(self.pools.items)]
        for start in range(0, len(items), SEED_BATCH):
            events = [
                {
                    "type": "catalog.upsert",
                    "item": self.pools.catalog_item(item),
                    "ts": time.time(),
                    "event_id": f"{self.run_id}-seed-{item}",  # a retried seed is a duplicate
                }
                for item in items[start : start + SEED_BATCH]
            ]
            await self.publish(events)

    async def run(self, stop: asyncio.Event) -> None:
        """Publish --rate events/s (in messages of --batch) until `stop` is set."""
        loop = asyncio.get_running_loop()
        started, sent = loop.time(), 0
        message_rate = self.args.rate / self.args.batch
        while not stop.is_set():
            due = int((loop.time() - started) * message_rate) - sent
            for _ in range(due):
                await self.window.acquire()
                events = [self.event() for _ in range(self.args.batch)]
                task = asyncio.create_task(self._publish_released(events))
                self.in_flight.add(task)
                task.add_done_callback(self.in_flight.discard)
                sent += 1
            await asyncio.sleep(0.01)
        await asyncio.gather(*self.in_flight)

    async def _publish_released(self, events: list[dict[str, Any]]) -> None:
        try:
            await self.publish(events)
        finally:
            self.window.release()

    async def publish(self, events: list[dict[str, Any]]) -> None:
        """Publish one message; with --tolerate-broker-restarts, try again until confirmed.

        A message tried again may reach the stream twice; its events keep their ids,
        so the server must count the second copy as duplicates, never apply it.
        """
        body = orjson.dumps(events if len(events) > 1 else events[0])
        started = time.perf_counter()
        for event in events:
            if "session_id" in event:
                self.tally.live_published_at[event["session_id"]] = started
        give_up_at = time.monotonic() + RETRY_FOR_S
        while (failure := await self._publish_once(body)) is not None:
            if not self.args.tolerate_broker_restarts or time.monotonic() > give_up_at:
                self.tally.error(failure)
                self.tally.events_uncertain += len(events)
                return
            self.tally.retried_messages += 1
            self.tally.retried_events += len(events)
            await asyncio.sleep(RETRY_DELAY_S)
        self.tally.confirmed(events)

    async def _publish_once(self, body: bytes) -> str | None:
        """None once the broker confirmed the message, else what went wrong."""
        message = aio_pika.Message(
            body, content_type="application/json", delivery_mode=aio_pika.DeliveryMode.PERSISTENT
        )
        try:
            confirmation = await self.exchange.publish(message, routing_key="soak", timeout=30)
        except PUBLISH_ERRORS as exc:
            return f"publish:{type(exc).__name__}"
        if not isinstance(confirmation, aiormq.spec.Basic.Ack):
            return "publish:not_acked"
        return None


class RestClients:
    """--rest-concurrency workers sharing a budget of --rest-rate requests/s."""

    def __init__(self, args: argparse.Namespace, base: str, pools: Pools, tally: Tally) -> None:
        self.args = args
        self.base = base
        self.pools = pools
        self.tally = tally
        self.rng = random.Random(23)

    def request(self) -> tuple[str, str, dict[str, str]]:
        endpoint = self.rng.choices(list(REST_MIX), weights=list(REST_MIX.values()))[0]
        item = self.pools.item()
        if endpoint == "recommendations":
            recent = self.tally.recent_sessions
            session = recent[self.rng.randrange(len(recent))] if recent else self.pools.session()
            return endpoint, "/v1/recommendations", {"session_id": session, "k": "10"}
        if endpoint == "popular":
            return endpoint, "/v1/popular", {"k": "10"}
        if endpoint == "similar":
            return endpoint, f"/v1/items/{item}/similar", {"k": "10"}
        if endpoint == "bought_together":
            return endpoint, f"/v1/items/{item}/bought-together", {"k": "10"}
        return endpoint, f"/v1/items/{item}", {}

    async def run(self, http: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        workers = [self._worker(http, stop, n) for n in range(self.args.rest_concurrency)]
        await asyncio.gather(*workers)

    async def _worker(self, http: aiohttp.ClientSession, stop: asyncio.Event, n: int) -> None:
        # Each worker keeps its share of the rate (0: as fast as it can).
        interval = self.args.rest_concurrency / self.args.rest_rate if self.args.rest_rate else 0
        next_at = time.perf_counter() + interval * n / max(self.args.rest_concurrency, 1)
        while not stop.is_set():
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            next_at = max(next_at + interval, time.perf_counter() - 1.0)
            await self._one(http)

    async def _one(self, http: aiohttp.ClientSession) -> None:
        endpoint, path, params = self.request()
        started = time.perf_counter()
        try:
            async with http.get(self.base + path, params=params) as response:
                body = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.tally.error(f"rest:{type(exc).__name__}")
            return
        self.tally.rest_latency_s.setdefault(endpoint, []).append(time.perf_counter() - started)
        if status != 200:
            self.tally.error(f"rest:{endpoint}:{status}")
        elif not _well_formed(endpoint, body):
            self.tally.error(f"rest:{endpoint}:bad_body")


def _well_formed(endpoint: str, body: bytes) -> bool:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    if endpoint == "item":
        return isinstance(data, dict) and isinstance(data.get("counters"), dict)
    return isinstance(data, dict) and isinstance(data.get("items"), list) and "model" in data


class SseClients:
    """--sse-clients streams on live sessions, each reconnecting every 5-20 s."""

    def __init__(self, args: argparse.Namespace, base: str, pools: Pools, tally: Tally) -> None:
        self.args = args
        self.base = base
        self.pools = pools
        self.tally = tally
        self.rng = random.Random(31)

    async def run(self, http: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        await asyncio.gather(*(self._client(http, stop) for _ in range(self.args.sse_clients)))

    async def _client(self, http: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        stream = LiveStream(self.pools.live_session())
        stopping = asyncio.create_task(stop.wait())
        while not stop.is_set():
            reading = asyncio.create_task(self._read(http, stream))
            await asyncio.wait(
                {reading, stopping},
                timeout=self.rng.uniform(5, 20),
                return_when=asyncio.FIRST_COMPLETED,
            )
            if reading.done():
                self._ended(reading, stop)
                await asyncio.sleep(1)
            else:  # held long enough, or the soak is over: hang up
                reading.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reading
            if self.rng.random() < 0.5:  # else resume the same stream with Last-Event-ID
                stream = LiveStream(self.pools.live_session())

    def _ended(self, reading: asyncio.Task[None], stop: asyncio.Event) -> None:
        """A stream that ended before we hung up: always an error."""
        exc = reading.exception()
        if isinstance(exc, SseError):
            self.tally.error(f"sse:{exc}")
        elif isinstance(exc, aiohttp.ClientError | TimeoutError):
            self.tally.error(f"sse:{type(exc).__name__}")
        elif exc is not None:
            raise exc
        elif not stop.is_set():
            self.tally.error("sse:stream_ended_by_server")

    async def _read(self, http: aiohttp.ClientSession, stream: LiveStream) -> None:
        headers = {"Last-Event-ID": stream.last_id} if stream.last_id else {}
        url = f"{self.base}/v1/sessions/{stream.session}/stream"
        async with http.get(url, params={"k": "10"}, headers=headers) as response:
            if response.status != 200:
                raise SseError(f"status_{response.status}")
            self.tally.sse_connections += 1
            first = True
            async for message_id, data in sse_messages(response.content):
                self._received(stream.session, data, first)
                first = False
                stream.last_id = message_id or stream.last_id

    def _received(self, session: str, data: bytes, first: bool) -> None:
        arrived = time.perf_counter()
        try:
            body = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise SseError("bad_data") from None
        if not (isinstance(body, dict) and isinstance(body.get("items"), list)):
            raise SseError("bad_list")
        if first:
            self.tally.sse_initial += 1
            return
        self.tally.sse_pushes += 1
        published = self.tally.live_published_at.pop(session, None)
        if published is not None:
            self.tally.sse_latency_s.append(arrived - published)


class SseError(Exception):
    pass


@dataclass
class LiveStream:
    """The session a client follows, and the id of the last list it received."""

    session: str
    last_id: str | None = None


async def sse_messages(lines: aiohttp.StreamReader) -> AsyncIterator[tuple[str | None, bytes]]:
    """(id, data) of each server-sent event; comments (heartbeats) are skipped."""
    message_id: str | None = None
    data: list[bytes] = []
    async for raw in lines:
        line = raw.rstrip(b"\r\n")
        if not line:
            if data:
                yield message_id, b"\n".join(data)
            message_id, data = None, []
        elif line.startswith(b"data:"):
            data.append(line[5:].lstrip(b" "))
        elif line.startswith(b"id:"):
            message_id = line[3:].strip().decode()


# ---------------------------------------------------------------- the run


async def sample_rss(server: Server, tally: Tally, every_s: float, stop: asyncio.Event) -> None:
    started = time.monotonic()
    pid = server.process.pid if server.process else 0
    while True:
        tally.rss.append((round(time.monotonic() - started, 1), round(rss_mib(pid), 1)))
        _progress(tally)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)
        if stop.is_set():
            tally.rss.append((round(time.monotonic() - started, 1), round(rss_mib(pid), 1)))
            return


def _progress(tally: Tally) -> None:
    t, mib = tally.rss[-1]
    rest = sum(len(v) for v in tally.rest_latency_s.values())
    print(
        f"t={t:6.0f}s rss={mib:7.1f} MiB events={tally.events_confirmed} rest={rest} "
        f"sse_pushes={tally.sse_pushes} errors={sum(tally.errors.values())}",
        file=sys.stderr,
        flush=True,
    )


async def model_info(http: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    async with http.get(base + "/v1/popular", params={"k": "1"}) as response:
        info: dict[str, Any] = (await response.json())["model"]
        return info


async def catch_up(
    http: aiohttp.ClientSession, base: str, tally: Tally, within_s: float
) -> tuple[int, float]:
    """Wait until the model holds every confirmed event, or the consumer has read every
    message (then what is missing is lost, and waiting longer would not bring it).

    Returns (events held, seconds taken).
    """
    started = time.monotonic()
    # A message published again after a broker failure may be in the stream twice.
    messages = tally.messages_confirmed + tally.retried_messages
    while time.monotonic() - started < within_s:
        held = (await model_info(http, base))["events"]
        samples = await metric_samples(http, base)
        if held >= tally.events_confirmed:
            break
        if metric_sum(samples, "recsrv_messages_consumed_total") >= messages:
            break
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.0)  # anything applied twice would show by now
    held = (await model_info(http, base))["events"]
    return held, round(time.monotonic() - started, 1)


async def metric_samples(http: aiohttp.ClientSession, base: str) -> dict[str, float]:
    """Every sample of /metrics by its name and labels, e.g. 'x_total{code="a"}'."""
    async with http.get(base + "/metrics") as response:
        text = await response.text()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            samples[key] = float(value)
    return samples


def metric_sum(samples: dict[str, float], name: str) -> float:
    return sum(v for k, v in samples.items() if k == name or k.startswith(name + "{"))


async def counter_mismatches(
    http: aiohttp.ClientSession, base: str, expected: dict[str, Counter[str]]
) -> list[str]:
    """Items whose per-type counters differ from the events the broker confirmed."""
    mismatched: list[str] = []
    limit = asyncio.Semaphore(16)

    async def check(item: str, counts: Counter[str]) -> None:
        async with limit, http.get(f"{base}/v1/items/{item}") as response:
            info = await response.json()
        want = {kind: counts[kind] for kind in COUNTED}
        if response.status != 200 or info.get("counters") != want:
            mismatched.append(f"{item}: expected {want}, got {info.get('counters')}")

    await asyncio.gather(*(check(item, counts) for item, counts in expected.items()))
    return mismatched


async def verify(http: aiohttp.ClientSession, server: Server, tally: Tally) -> dict[str, Any]:
    """Exactly-once: the server's counts against what the broker confirmed."""
    applied, waited_s = await catch_up(http, server.base, tally, within_s=60)
    samples = await metric_samples(http, server.base)
    mismatches = await counter_mismatches(http, server.base, tally.item_counters)
    return {
        "published": tally.events_confirmed,
        "messages_published": tally.messages_confirmed,
        "uncertain": tally.events_uncertain,
        "broker_restarts": tally.broker_restarts,
        "retried_messages": tally.retried_messages,
        "retried_events": tally.retried_events,
        "applied": applied,
        "applied_metric": metric_sum(samples, "recsrv_events_applied_total"),
        "messages_consumed": metric_sum(samples, "recsrv_messages_consumed_total"),
        "duplicates": metric_sum(samples, "recsrv_events_duplicate_total"),
        "invalid": metric_sum(samples, "recsrv_events_invalid_total"),
        "items_checked": len(tally.item_counters),
        "item_counter_mismatches": len(mismatches),
        "mismatch_examples": mismatches[:5],
        "catch_up_s": waited_s,
    }


def failures_of(result: dict[str, Any]) -> list[str]:
    failures = [f"{count} errors of kind {kind}" for kind, count in result["errors"].items()]
    failures += event_failures(result["events"])
    if not result["rss"]["ok"]:
        failures.append(f"RSS did not level off: {result['rss']}")
    server = result["server"]
    if server["exit_code"] != 0:
        failures.append(f"server exit code {server['exit_code']} (SIGTERM should give 0)")
    log_errors = server["log_errors"]
    if result["events"]["broker_restarts"]:
        log_errors = [e for e in log_errors if not any(m in e for m in BROKER_OUTAGE_MARKERS)]
    if log_errors:
        failures.append(f"{len(log_errors)} error lines in the server log")
    if not result["rest"]["requests"]:
        failures.append("no REST request was made")
    if result["sse"]["clients"] and not result["sse"]["pushes"]:
        failures.append("no SSE list was pushed")
    return failures


def event_failures(events: dict[str, Any]) -> list[str]:
    """Exactly-once. A message published again after a broker failure may be in the
    stream twice: then it may be consumed twice, its events counted as duplicates."""
    failures = []
    published, retried = events["published"], events["retried_events"]
    if events["applied"] != published:
        failures.append(f"applied {events['applied']} events of {published} published")
    if events["applied_metric"] != published:
        failures.append(f"recsrv_events_applied_total is {events['applied_metric']:.0f}")
    messages, consumed = events["messages_published"], events["messages_consumed"]
    if not messages <= consumed <= messages + events["retried_messages"]:
        failures.append(f"consumed {consumed:.0f} messages of {messages} published")
    if events["duplicates"] > retried:
        failures.append(f"{events['duplicates']:.0f} duplicates ({retried} events retried)")
    for key in ("invalid", "item_counter_mismatches"):
        if events[key]:
            failures.append(f"{key}: {events[key]}")
    return failures


async def load(
    args: argparse.Namespace, server: Server, http: aiohttp.ClientSession, tally: Tally
) -> float:
    """Seed, then run all the load for --duration; the seconds it really ran."""
    pools = Pools(args.sessions, args.items, live=max(1, min(args.sessions, 2 * args.sse_clients)))
    lost = asyncio.Event()
    connection: aio_pika.abc.AbstractConnection
    if args.tolerate_broker_restarts:
        robust = await aio_pika.connect_robust(args.amqp_url)
        robust.reconnect_callbacks.add(lambda *_: _restarted(tally))
        connection = robust
    else:
        connection = await aio_pika.connect(args.amqp_url)
        # A soak with the broker gone is over: stop at once rather than count failures.
        connection.close_callbacks.add(lambda *_: lost.set())
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(server.names["exchange"])
        publisher = Publisher(args, exchange, pools, tally)
        await publisher.seed_catalog()
        tally.events_seeded = tally.events_confirmed
        await catch_up(http, server.base, tally, within_s=60)
        stop = asyncio.Event()
        rest = RestClients(args, server.base, pools, tally)
        sse = SseClients(args, server.base, pools, tally)
        started = time.monotonic()
        tasks = [
            asyncio.create_task(publisher.run(stop)),
            asyncio.create_task(rest.run(http, stop)),
            asyncio.create_task(sse.run(http, stop)),
            asyncio.create_task(sample_rss(server, tally, args.sample_every, stop)),
        ]
        broker_lost = asyncio.create_task(lost.wait())
        try:
            # Each task runs until `stop`: one that ends sooner failed.
            await asyncio.wait(
                [*tasks, broker_lost], timeout=args.duration, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            stop.set()
            broker_lost.cancel()
            await asyncio.gather(*tasks)
        if lost.is_set():
            tally.error("amqp:publisher_connection_lost")
        return time.monotonic() - started


def _restarted(tally: Tally) -> None:
    tally.broker_restarts += 1


def summary(
    args: argparse.Namespace, tally: Tally, events: dict[str, Any], ran_s: float
) -> dict[str, Any]:
    rest_all = [s for samples in tally.rest_latency_s.values() for s in samples]
    return {
        "config": {key: getattr(args, key) for key in REPORTED_ARGS},
        "ran_s": round(ran_s, 1),
        "errors": dict(tally.errors),
        "error_total": sum(tally.errors.values()),
        "events": {
            **events,
            "seeded": tally.events_seeded,
            "rate_per_s": round((events["published"] - tally.events_seeded) / ran_s, 1),
        },
        "rest": {
            "requests": len(rest_all),
            "rate_per_s": round(len(rest_all) / ran_s, 1),
            **percentiles(rest_all),
            "by_endpoint": {
                name: {"requests": len(samples), **percentiles(samples)}
                for name, samples in sorted(tally.rest_latency_s.items())
            },
        },
        "sse": {
            "clients": args.sse_clients,
            "connections": tally.sse_connections,
            "initial_lists": tally.sse_initial,
            "pushes": tally.sse_pushes,
            "push_latency": {
                "samples": len(tally.sse_latency_s),
                **percentiles(tally.sse_latency_s),
            },
        },
        "rss": {**rss_verdict(tally.rss, ran_s), "samples": tally.rss},
    }


async def run_and_verify(args: argparse.Namespace, server: Server, tally: Tally) -> dict[str, Any]:
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_read=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        await server.start()
        await server.wait_ready(http)
        ran_s = await load(args, server, http, tally)
        events = await verify(http, server, tally)
    exit_code = await server.stop()
    result = summary(args, tally, events, ran_s)
    findings = server.log_findings()
    result["server"] = {
        "exit_code": exit_code,
        "log_errors": findings["errors"][:20],
        "log_warnings": findings["warnings"],
    }
    return result


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    """Run, verify, and clean up whatever happened; a failure of any kind is reported."""
    tally = Tally()
    main_task = asyncio.current_task()
    assert main_task is not None
    loop = asyncio.get_running_loop()
    # Ctrl-C or a kill ends the run early but still cleans up (SIGINT is installed
    # explicitly: a shell's background job starts with it ignored).
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, main_task.cancel)
    with tempfile.TemporaryDirectory(prefix="recsrv-soak-") as workdir:
        server = Server(args.amqp_url, Path(workdir), args.checkpoint_interval)
        try:
            result = await run_and_verify(args, server, tally)
            result["failures"] = failures_of(result)
        except (Exception, asyncio.CancelledError) as exc:
            # The server died, RabbitMQ went away, a signal, or a bug here: a failed
            # result all the same, with the server's last words, not a bare traceback.
            main_task.uncancel()
            result = aborted(exc, tally)
        finally:
            exit_code = await server.stop()
        if "aborted" in result:
            result["server_exit_code"] = exit_code
        try:
            await server.delete_broker_objects()
        except (*PUBLISH_ERRORS, OSError) as exc:
            names = ", ".join(server.names.values())
            result["failures"].append(f"could not delete {names}: {exc!r}")
        if result["failures"]:
            result["server_log_tail"] = server.log_tail(30)
    result["ok"] = not result["failures"]
    return result


def aborted(exc: BaseException, tally: Tally) -> dict[str, Any]:
    what = "interrupted" if isinstance(exc, asyncio.CancelledError) else f"{exc!r}"
    return {
        "aborted": what,
        "traceback": traceback.format_exc().splitlines()[-12:],
        "errors": dict(tally.errors),
        "events_published": tally.events_confirmed,
        "rss": {"samples": tally.rss},
        "failures": [f"soak aborted: {what}"],
    }


def report(result: dict[str, Any]) -> str:
    if "aborted" in result:
        tail = "\n".join(result.get("server_log_tail", []))
        return (
            f"FAILED: {'; '.join(result['failures'])} (server exit code "
            f"{result['server_exit_code']}, errors {result['errors']})\n"
            f"server log tail:\n{tail}"
        )
    events, rest, sse, rss = result["events"], result["rest"], result["sse"], result["rss"]
    latency = sse["push_latency"]
    lines = [
        f"soak {result['ran_s']:.0f} s: {events['published']} events published "
        f"({events['seeded']} catalog items first, then {events['rate_per_s']}/s; "
        f"{events['messages_published']} messages), "
        f"{events['applied']} applied, {events['duplicates']:.0f} duplicates, "
        f"{events['item_counter_mismatches']} items with wrong counters "
        f"(caught up {events['catch_up_s']} s after the load)",
        f"errors: {result['error_total']} {result['errors'] or ''}; broker restarts "
        f"{events['broker_restarts']} ({events['retried_messages']} publish attempts repeated)",
        f"REST: {rest['requests']} requests ({rest['rate_per_s']}/s), "
        f"p50 {rest.get('p50_ms')} ms, p95 {rest.get('p95_ms')} ms, p99 {rest.get('p99_ms')} ms",
        f"SSE: {sse['connections']} connections, {sse['pushes']} lists pushed; "
        f"published → pushed p50 {latency.get('p50_ms')} ms, p99 {latency.get('p99_ms')} ms "
        f"({latency['samples']} samples)",
        f"RSS MiB over time: {' '.join(f'{t:.0f}s:{mib:.0f}' for t, mib in rss['samples'])}",
        f"RSS second half: {rss.get('halfway_mib')} → {rss.get('end_mib')} MiB, growth "
        f"{rss.get('growth_mib')} MiB (bound {rss.get('bound_mib')} MiB), slope "
        f"{rss.get('second_half_slope_mib_per_h')} MiB/h: {'ok' if rss['ok'] else 'BROKEN'}",
        f"server: exit code {result['server']['exit_code']}, "
        f"warnings {result['server']['log_warnings']}",
        "OK" if result["ok"] else "FAILED: " + "; ".join(result["failures"]),
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=900, help="seconds of load")
    parser.add_argument("--rate", type=float, default=200, help="events/s published")
    parser.add_argument("--batch", type=int, default=1, help="events per AMQP message")
    parser.add_argument("--window", type=int, default=256, help="publishes in flight at most")
    parser.add_argument("--sessions", type=int, default=2000, help="session id pool")
    parser.add_argument("--items", type=int, default=2000, help="item id pool")
    parser.add_argument("--sse-clients", type=int, default=10)
    parser.add_argument(
        "--live-share", type=float, default=0.2, help="share of events for SSE sessions"
    )
    parser.add_argument("--rest-concurrency", type=int, default=4)
    parser.add_argument("--rest-rate", type=float, default=100, help="requests/s; 0: no limit")
    parser.add_argument("--sample-every", type=float, default=5, help="seconds between RSS reads")
    parser.add_argument("--checkpoint-interval", type=float, default=30, help="seconds")
    parser.add_argument(
        "--amqp-url",
        default=os.environ.get("RECSRV_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"),
    )
    parser.add_argument(
        "--tolerate-broker-restarts",
        action="store_true",
        help="reconnect and publish again when RabbitMQ restarts (else the run fails at once)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON result on stdout")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.batch < 1 or args.duration <= 0:
        parser.error("--rate and --duration must be > 0 and --batch >= 1")
    return args


def main() -> int:
    args = parse_args()
    result = asyncio.run(soak(args))
    print(orjson.dumps(result).decode() if args.json else report(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
