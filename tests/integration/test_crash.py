"""Crash equivalence: `kill -9` at random points, restart, same answers as no crash.

Real processes (`python -m recsrv run`), the real RabbitMQ stream and the real
MongoDB-wire server. A recorded stream of 50,000 events is published while recsrv
runs; it is killed with SIGKILL several times (once right as a checkpoint starts)
and restarted each time. After the last restart has caught up, its answers to a
fixed set of queries must equal those of a process that consumed the same stream
without ever crashing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import orjson
import pytest

from recsrv.config import BrokerConfig, StoreConfig
from tests.conftest import broker_env, free_port, marker
from tests.integration.test_checkpoints import QUERIES

EVENTS = 50_000
PER_MESSAGE = 50


def recorded_stream() -> list[bytes]:
    rng = random.Random(20261126)
    kinds = ["view"] * 6 + ["click"] * 2 + ["add_to_cart", "purchase", "remove_from_cart"]
    messages, batch = [], []
    for n in range(EVENTS):
        session = n // 15
        event: dict[str, Any] = {
            "type": rng.choice(kinds),
            "session_id": f"s{session}",
            "item_id": f"i{int(rng.paretovariate(1.2) * 7) % 500}",
            "ts": 1_700_000_000 + n * 3,
        }
        if session % 4 == 0:
            event["user_id"] = f"u{session % 97}"
        if n % 5 == 0:
            event["event_id"] = f"e{n}"
        batch.append(event)
        if len(batch) == PER_MESSAGE:
            messages.append(orjson.dumps(batch))
            batch = []
    return messages


class Recsrv:
    """One `recsrv run` process, its log lines watched for checkpoint starts."""

    def __init__(self, env: dict[str, str]) -> None:
        self.port = free_port()
        self.env = {
            **os.environ,
            **env,
            "RECSRV_SERVER__PORT": str(self.port),
            "RECSRV_LOG__FORMAT": "json",
            "RECSRV_LOG__LEVEL": "debug",
        }
        self.base = f"http://127.0.0.1:{self.port}"
        self.process: asyncio.subprocess.Process | None = None
        self.checkpoint_started = asyncio.Event()
        self.checkpoint_written = asyncio.Event()
        self.restores = 0
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.checkpoint_started.clear()
        self.checkpoint_written.clear()
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "recsrv",
            "run",
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        self._reader = asyncio.create_task(self._read(self.process))

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        async for line in process.stdout:
            if b'"checkpoint_started"' in line:
                self.checkpoint_started.set()
            elif b'"checkpoint_written"' in line:
                self.checkpoint_written.set()
            elif b'"event":"restored"' in line:
                self.restores += 1

    async def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()
        if self._reader is not None:
            await self._reader

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(self.process.wait(), STOP_WITHIN_S)
        if self._reader is not None:
            await self._reader

    async def end(self) -> None:
        """Kill the process if it still runs: whatever failed, nothing is left behind."""
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        if self._reader is not None:
            await self._reader

    async def model(self, session: aiohttp.ClientSession) -> dict[str, Any] | None:
        try:
            async with session.get(self.base + "/v1/popular?k=1") as response:
                body: dict[str, Any] = await response.json()
                return body["model"]  # type: ignore[no-any-return]
        except aiohttp.ClientError:
            return None

    async def wait_for_events(
        self, session: aiohttp.ClientSession, events: int, within_s: float
    ) -> None:
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            model = await self.model(session)
            if model is not None and model["events"] >= events:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"{self.base} did not reach {events} events in {within_s} s")

    async def wait_for_item(
        self, session: aiohttp.ClientSession, item: str, within_s: float
    ) -> None:
        """Until `item` is known: a marker published last has been applied."""
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{self.base}/v1/items/{item}") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.1)
        raise AssertionError(f"{self.base} did not apply {item!r} in {within_s} s")

    async def answers(self, session: aiohttp.ClientSession) -> list[Any]:
        result = []
        for query in QUERIES:
            async with session.get(self.base + "/v1/recommendations", params=query) as r:
                result.append(await r.json())
        for item in ("i0", "i7", "i14"):
            async with session.get(self.base + f"/v1/items/{item}/similar") as r:
                result.append(await r.json())
        return result


def env_for(broker: BrokerConfig, store: StoreConfig) -> dict[str, str]:
    return {
        **broker_env(broker),
        "RECSRV_STORE__URL": store.url,
        "RECSRV_STORE__CHECKPOINT_INTERVAL_S": "1",
    }


@pytest.fixture
async def recsrv() -> AsyncIterator[Callable[[dict[str, str]], Recsrv]]:
    """Makes Recsrv processes and ends every one still running after the test."""
    made: list[Recsrv] = []

    def make(env: dict[str, str]) -> Recsrv:
        made.append(Recsrv(env))
        return made[-1]

    yield make
    for server in made:
        await server.end()


# Each wait has its own deadline, and their sum (UP + 3 x CHECKPOINT + 2 x CATCH_UP +
# 2 x STOP = 240 s) stays under the test's timeout, so that a slow run fails naming
# the wait that ran out. The test takes about 40 s here.
UP_WITHIN_S = 30
CHECKPOINT_WITHIN_S = 20
CATCH_UP_WITHIN_S = 60
STOP_WITHIN_S = 15


@pytest.mark.timeout(300)
async def test_kill_9_at_random_points_gives_the_same_answers_as_no_crash(
    amqp_config: BrokerConfig,
    amqp_publish: Any,
    mongo_store: StoreConfig,
    tmp_path: Any,
    recsrv: Callable[[dict[str, str]], Recsrv],
) -> None:
    messages = recorded_stream()
    rng = random.Random(7)
    crashing = recsrv(env_for(amqp_config, mongo_store))
    await crashing.start()
    async with aiohttp.ClientSession() as http:
        # Up: it has declared the stream.
        await crashing.wait_for_events(http, 0, within_s=UP_WITHIN_S)
        kill_after = sorted(rng.sample(range(50, len(messages) - 50), 3))
        published = 0
        kills = 0
        for planned in [*kill_after, len(messages)]:
            # Some stream after each restart, so the next checkpoint has news to write
            # (an unchanged state is not checkpointed again).
            point = max(planned, min(published + 5, len(messages)))
            while published < point:
                await amqp_publish(messages[published])
                published += 1
                if published % 20 == 0:
                    await asyncio.sleep(0.01)  # a live stream, not one burst
            if published == len(messages):
                break
            if kills == 1:
                # Once: wait for a checkpoint to begin and kill it in the middle.
                crashing.checkpoint_started.clear()
                await asyncio.wait_for(crashing.checkpoint_started.wait(), CHECKPOINT_WITHIN_S)
            else:
                # Otherwise after a checkpoint, with a random stretch of stream on top
                # that the restart must replay.
                await asyncio.wait_for(crashing.checkpoint_written.wait(), CHECKPOINT_WITHIN_S)
                for _ in range(rng.randint(1, 40)):
                    await amqp_publish(messages[published])
                    published += 1
            await crashing.kill()
            kills += 1
            await crashing.start()
        assert kills == 3
        # Two restarts found a checkpoint (the one killed mid-checkpoint may not).
        assert crashing.restores >= 2
        # Published last: once it is applied, so is the whole stream, and an event
        # applied twice would already show in the counts.
        await amqp_publish(marker("marker"))
        await crashing.wait_for_item(http, "marker", within_s=CATCH_UP_WITHIN_S)

        reference = recsrv(env_for(amqp_config, StoreConfig(url=f"file://{tmp_path}/ref")))
        await reference.start()
        await reference.wait_for_item(http, "marker", within_s=CATCH_UP_WITHIN_S)
        crashed_answers = await crashing.answers(http)
        reference_answers = await reference.answers(http)
        await reference.stop()
        await crashing.stop()
    assert crashed_answers[0]["model"]["events"] == EVENTS + 1
    assert crashed_answers == reference_answers
