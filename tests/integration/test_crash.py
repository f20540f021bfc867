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
import os
import random
import signal
import sys
import time
from typing import Any

import aiohttp
import orjson

from recsrv.config import BrokerConfig, StoreConfig
from tests.conftest import free_port
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
            await asyncio.wait_for(self.process.wait(), 30)
        if self._reader is not None:
            await self._reader

    async def model(self, session: aiohttp.ClientSession) -> dict[str, Any] | None:
        try:
            async with session.get(self.base + "/v1/popular?k=1") as response:
                body: dict[str, Any] = await response.json()
                return body["model"]  # type: ignore[no-any-return]
        except aiohttp.ClientError:
            return None

    async def wait_for_events(self, session: aiohttp.ClientSession, events: int) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            model = await self.model(session)
            if model is not None and model["events"] >= events:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"{self.base} did not reach {events} events")

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
        "RECSRV_BROKER__URL": broker.url,
        "RECSRV_BROKER__EXCHANGE": broker.exchange,
        "RECSRV_BROKER__QUEUE": broker.queue,
        "RECSRV_BROKER__INVALID_EXCHANGE": broker.invalid_exchange,
        "RECSRV_BROKER__MAX_AGE": broker.max_age,
        "RECSRV_STORE__URL": store.url,
        "RECSRV_STORE__CHECKPOINT_INTERVAL_S": "1",
    }


async def test_kill_9_at_random_points_gives_the_same_answers_as_no_crash(
    amqp_config: BrokerConfig, amqp_publish: Any, mongo_store: StoreConfig, tmp_path: Any
) -> None:
    messages = recorded_stream()
    rng = random.Random(7)
    crashing = Recsrv(env_for(amqp_config, mongo_store))
    await crashing.start()
    async with aiohttp.ClientSession() as http:
        await crashing.wait_for_events(http, 0)  # up: it has declared the stream
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
                await asyncio.wait_for(crashing.checkpoint_started.wait(), 30)
            else:
                # Otherwise after a checkpoint, with a random stretch of stream on top
                # that the restart must replay.
                await asyncio.wait_for(crashing.checkpoint_written.wait(), 30)
                for _ in range(rng.randint(1, 40)):
                    await amqp_publish(messages[published])
                    published += 1
            await crashing.kill()
            kills += 1
            await crashing.start()
        assert kills == 3
        # Two restarts found a checkpoint (the one killed mid-checkpoint may not).
        assert crashing.restores >= 2
        await crashing.wait_for_events(http, EVENTS)

        reference = Recsrv(env_for(amqp_config, StoreConfig(url=f"file://{tmp_path}/ref")))
        await reference.start()
        try:
            await reference.wait_for_events(http, EVENTS)
            await asyncio.sleep(0.5)
            crashed_answers = await crashing.answers(http)
            reference_answers = await reference.answers(http)
        finally:
            await reference.stop()
            await crashing.stop()
    assert crashed_answers[0]["model"]["events"] == EVENTS
    assert crashed_answers == reference_answers
