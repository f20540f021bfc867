"""`recsrv replay FILE` as a user runs it: a real process publishing to the real RabbitMQ.

What the stream holds afterwards is read back over AMQP, and a real recsrv server
consuming the same stream shows that every valid line is applied exactly once.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import orjson
import pytest
from aio_pika.abc import AbstractIncomingMessage
from aiohttp.test_utils import TestClient

from recsrv.config import BrokerConfig
from tests.conftest import AMQP_URL, ServerFactory, broker_env

TS = 1_700_000_000
QUIET_S = 0.7
"""How long the stream must stay silent, once the expected events are read, to be done."""
PROGRESS = re.compile(
    r"^replay: +\d+% \d+/\d+ \[[\d:]+<[\d:?]+, +[\d.?]+ lines/s, published=(\d+), invalid=\d+\]$",
    re.MULTILINE,
)


@dataclass
class Run:
    returncode: int
    stderr: str

    def published(self) -> int:
        found = re.findall(r"published (\d+) events", self.stderr)
        assert len(found) == 1, self.stderr
        return int(found[0])

    def invalid_lines(self) -> list[int]:
        return [int(n) for n in re.findall(r"^line (\d+): ", self.stderr, re.MULTILINE)]


def env_for(config: BrokerConfig) -> dict[str, str]:
    return {**os.environ, **broker_env(config)}


def command(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "recsrv", "replay", *map(str, args)]


async def start_replay(
    tmp_path: Path, config: BrokerConfig, *args: str | Path, **env: str
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *command(*args),
        cwd=tmp_path,
        env={**env_for(config), **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def replay(tmp_path: Path, config: BrokerConfig, *args: str | Path, **env: str) -> Run:
    process = await start_replay(tmp_path, config, *args, **env)
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return Run(process.returncode, stderr.decode())


async def interrupt_after(process: asyncio.subprocess.Process, published: int, signum: int) -> Run:
    """Send `signum` once a progress line shows `published` events; the whole run."""
    assert process.stderr is not None
    seen = b""
    while True:
        line = await asyncio.wait_for(process.stderr.readline(), 30)
        assert line, f"replay ended before it was interrupted: {seen.decode()}"
        seen += line
        match = PROGRESS.match(line.decode().rstrip("\n"))
        if match and int(match.group(1)) >= published:
            break
    process.send_signal(signum)
    rest = await asyncio.wait_for(process.stderr.read(), 30)
    returncode = await asyncio.wait_for(process.wait(), 30)
    return Run(returncode, (seen + rest).decode())


async def read_stream(config: BrokerConfig, events: int) -> list[list[dict[str, Any]]]:
    """Every message of the stream from its start, once at least `events` events came
    and the stream stayed quiet for QUIET_S."""
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=500)
        queue = await channel.get_queue(config.queue, ensure=False)
        inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        await queue.consume(inbox.put, arguments={"x-stream-offset": "first"})
        messages: list[list[dict[str, Any]]] = []
        count, deadline = 0, time.monotonic() + 20
        while True:
            wait = QUIET_S if count >= events else deadline - time.monotonic()
            try:
                message = await asyncio.wait_for(inbox.get(), max(wait, 0.01))
            except TimeoutError:
                if count >= events:
                    return messages
                problem = f"the stream holds {count} events, {events} expected"
                raise AssertionError(problem) from None
            await message.ack()
            body = orjson.loads(message.body)
            messages.append(body)
            count += len(body)


def flat(messages: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [event for message in messages for event in message]


async def model(client: TestClient[Any, Any]) -> dict[str, Any]:
    response = await client.get("/v1/popular", params={"k": "1"})
    info: dict[str, Any] = (await response.json())["model"]
    return info


async def applied_once(
    make_server: ServerFactory, config: BrokerConfig, valid: int
) -> tuple[int, int]:
    """Start a recsrv server on the stream; once it has consumed all of it, its count of
    applied events and of duplicates ignored."""
    messages = await read_stream(config, valid)
    client = await make_server(broker=config)
    deadline = time.monotonic() + 20
    while (info := await model(client))["offset"] is None or info["offset"] < len(messages) - 1:
        assert time.monotonic() < deadline, f"server stuck at {info}, {len(messages)} messages"
        await asyncio.sleep(0.05)
    metrics = await (await client.get("/metrics")).text()
    duplicates = re.search(r"^recsrv_events_duplicate_total (\S+)$", metrics, re.MULTILINE)
    assert duplicates is not None
    assert len(flat(messages)) - valid == float(duplicates.group(1))
    return info["events"], int(float(duplicates.group(1)))


def view(n: int) -> dict[str, Any]:
    return {"type": "view", "session_id": f"s{n % 37}", "item_id": f"i{n % 101}", "ts": TS + n}


def write_jsonl(path: Path, lines: int, invalid: dict[int, bytes]) -> list[dict[str, Any]]:
    """A file of `lines` lines, views except the given ones; the valid sources in order."""
    valid = []
    with path.open("wb") as f:
        for n in range(1, lines + 1):
            if n in invalid:
                f.write(invalid[n] + b"\n")
            else:
                valid.append(view(n))
                f.write(orjson.dumps(view(n)) + b"\n")
    return valid


# ------------------------------------------------------------------------------ tests


async def test_publishes_valid_lines_in_order_and_reports_invalid_ones_by_line(
    tmp_path: Path, amqp_config: BrokerConfig
) -> None:
    invalid = {
        3: b'{"type": "view", "session_id": ',
        50: b'{"type": "view", "item_id": "i"}',
        120: b'{"type": "teleport", "session_id": "s"}',
        200: b'["not", "an", "object"]',
    }
    sources: list[tuple[int, dict[str, Any]]] = []
    with (tmp_path / "events.jsonl").open("wb") as f:
        for n in range(1, 251):
            event = view(n)
            if n == 7:
                event["event_id"] = "shop-7"
            if n == 8:
                del event["ts"]
            if n in invalid:
                f.write(invalid[n] + b"\n")
            elif n in (10, 11):
                f.write(b"\n")  # blank lines are skipped
            else:
                sources.append((n, event))
                f.write(orjson.dumps(event) + b"\n")

    run = await replay(
        tmp_path, amqp_config, "events.jsonl", "--batch", "40", "--progress-interval", "0.001"
    )

    assert run.returncode == 0, run.stderr
    assert run.invalid_lines() == [3, 50, 120, 200]
    assert "line 50: session_id: missing" in run.stderr
    assert "line 120: type: unknown event type 'teleport'" in run.stderr
    assert "line 3: not valid JSON" in run.stderr
    assert PROGRESS.search(run.stderr), run.stderr
    assert "out of ts order" not in run.stderr  # in order, and line 8 has no ts
    assert (
        run.stderr.rstrip()
        .splitlines()[-1]
        .startswith(
            f"replay: done: published {len(sources)} events, 4 invalid lines, up to line 250 of "
        )
    )
    messages = await read_stream(amqp_config, len(sources))
    assert all(1 <= len(message) <= 40 for message in messages)
    events = flat(messages)
    assert len(events) == len(sources)
    for (n, source), event in zip(sources, events, strict=True):
        kept = {key: event[key] for key in source if key != "event_id"}
        assert kept == {key: value for key, value in source.items() if key != "event_id"}, n
    ids = [event["event_id"] for event in events]
    assert len(set(ids)) == len(ids)
    index = {n: i for i, (n, _) in enumerate(sources)}
    assert ids[index[7]] == "shop-7"
    assert [i for i in ids if not i.startswith("replay-")] == ["shop-7"]
    assert "ts" not in events[index[8]]  # the server stamps it


async def test_a_file_out_of_ts_order_is_published_as_it_is_with_a_warning(
    tmp_path: Path, amqp_config: BrokerConfig
) -> None:
    # Exported by session: s0's five views, then s1's, … while their times interleave
    # (s<n> at TS + n, + 1000, + 2000, …). s1 to s3 each bring three events below the
    # newest (s0's TS + 4000 and so on), two of them more than 1,500 s below it.
    sources = [
        {"type": "view", "session_id": f"s{n}", "item_id": f"i{step}", "ts": TS + n + 1000 * step}
        for n in range(4)
        for step in range(5)
    ]
    sources.append({"type": "view", "session_id": "s9", "item_id": "i0"})  # stamped on arrival
    lines = [orjson.dumps(source) for source in sources]
    lines.insert(7, b'{"type": "view", "ts": 1}')  # invalid: never counted
    (tmp_path / "events.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    bound = {"RECSRV_SESSIONS__TTL_S": "1000", "RECSRV_SESSIONS__ALLOWED_LATENESS_S": "500"}

    run = await replay(tmp_path, amqp_config, "events.jsonl", **bound)

    assert run.returncode == 0, run.stderr
    warnings = [line for line in run.stderr.splitlines() if "warning" in line]
    assert warnings == [
        "replay: warning: 12 of 21 events are out of ts order (9 later than sessions.ttl_s + "
        "sessions.allowed_lateness_s behind the newest); the server learns them, see README "
        '"Late and out-of-order events"'
    ]
    before = run.stderr.index("replay: warning:")
    assert before < run.stderr.index("replay: publishing 22 lines")
    assert run.published() == 21
    events = flat(await read_stream(amqp_config, 21))
    assert [event.get("ts") for event in events] == [source.get("ts") for source in sources]

    # CSV rows are counted through the column mapping (ts as ISO 8601 here).
    (tmp_path / "orders.csv").write_text(
        "order,sku,when\n"
        "o1,p1,2024-05-01T10:00:00Z\n"
        "o2,p2,2024-05-01T09:59:00Z\n"
        "o2,p3,2024-05-01T09:00:00Z\n"
        "o3,p4,2024-05-01T11:00:00Z\n"
    )
    mapping = ("--column", "session_id=order", "--column", "item_id=sku", "--column", "ts=when")
    csv = await replay(
        tmp_path, amqp_config, "orders.csv", *mapping, "--default", "type=view", **bound
    )
    assert csv.returncode == 0, csv.stderr
    assert "replay: warning: 2 of 4 events are out of ts order (1 later than" in csv.stderr


@pytest.mark.timeout(120)
async def test_interrupted_replay_resumes_after_the_saved_line_and_applies_each_event_once(
    tmp_path: Path, amqp_config: BrokerConfig, make_server: ServerFactory
) -> None:
    invalid = {5: b"not json", 300: b'{"type": "view"}', 590: b"{}"}
    valid = write_jsonl(tmp_path / "events.jsonl", 600, invalid)
    slow = ("--rate", "400", "--progress-interval", "0.05")

    process = await start_replay(tmp_path, amqp_config, "events.jsonl", *slow)
    first = await interrupt_after(process, 80, signal.SIGINT)

    assert first.returncode == 130, first.stderr
    assert "replay: interrupted: published" in first.stderr
    saved = re.search(r"resume after line (\d+) ", first.stderr)
    assert saved is not None, first.stderr
    line = int(saved.group(1))
    assert 80 <= line < 600
    state = orjson.loads((tmp_path / "events.jsonl.replay-state").read_bytes())
    assert state["line"] == line

    second = await replay(tmp_path, amqp_config, "events.jsonl")

    assert second.returncode == 0, second.stderr
    assert f"resuming events.jsonl after line {line} " in second.stderr
    assert f"publishing {600 - line} lines of events.jsonl" in second.stderr
    assert first.published() + second.published() == len(valid)
    assert sorted(first.invalid_lines() + second.invalid_lines()) == sorted(invalid)
    assert second.invalid_lines() == [n for n in sorted(invalid) if n > line]

    events, duplicates = await applied_once(make_server, amqp_config, len(valid))
    assert (events, duplicates) == (len(valid), 0)

    # The file is done: running the command again publishes nothing.
    third = await replay(tmp_path, amqp_config, "events.jsonl")
    assert third.returncode == 0, third.stderr
    assert "nothing new to publish: published 0 events" in third.stderr
    assert len(flat(await read_stream(amqp_config, len(valid)))) == len(valid)


@pytest.mark.timeout(120)
async def test_a_killed_replay_resumed_and_restarted_applies_each_event_once(
    tmp_path: Path, amqp_config: BrokerConfig, make_server: ServerFactory
) -> None:
    valid = write_jsonl(tmp_path / "events.jsonl", 3000, {})
    process = await start_replay(
        tmp_path, amqp_config, "events.jsonl", "--rate", "3000", "--progress-interval", "0.01"
    )
    killed = await interrupt_after(process, 500, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL

    resumed = await replay(tmp_path, amqp_config, "events.jsonl")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming events.jsonl after line " in resumed.stderr
    assert 0 < resumed.published() < len(valid)
    # Starting over publishes every event again; the server ignores all the copies.
    again = await replay(tmp_path, amqp_config, "events.jsonl", "--restart")
    assert again.returncode == 0, again.stderr
    assert again.published() == len(valid)

    events, duplicates = await applied_once(make_server, amqp_config, len(valid))
    assert events == len(valid)
    assert duplicates >= len(valid)


async def test_csv_columns_are_mapped_and_bad_rows_reported(
    tmp_path: Path, amqp_config: BrokerConfig
) -> None:
    (tmp_path / "orders.csv").write_text(
        "order_id,product_id,when,customer,qty\n"
        "o1,p1,2024-05-01T10:00:00Z,u1,2\n"
        "o1,p2,1714557660,u1,\n"
        "o2,p3,someday,u2,1\n"
        "o2,p4,2024-05-01 10:02:00,,1\n"
    )
    mapping = (
        "--column",
        "session_id=order_id",
        "--column",
        "item_id=product_id",
        "--column",
        "ts=when",
        "--column",
        "user_id=customer",
        "--column",
        "quantity=qty",
        "--default",
        "type=add_to_cart",
    )
    run = await replay(tmp_path, amqp_config, "orders.csv", *mapping)
    assert run.returncode == 0, run.stderr
    assert run.invalid_lines() == [4]
    assert "out of ts order" not in run.stderr
    assert "line 4: ts: must be epoch seconds or an ISO 8601 date-time" in run.stderr
    events = flat(await read_stream(amqp_config, 3))
    assert [{k: v for k, v in e.items() if k != "event_id"} for e in events] == [
        {
            "type": "add_to_cart",
            "session_id": "o1",
            "user_id": "u1",
            "item_id": "p1",
            "ts": 1714557600.0,
            "quantity": 2,
        },
        {
            "type": "add_to_cart",
            "session_id": "o1",
            "user_id": "u1",
            "item_id": "p2",
            "ts": 1714557660.0,
        },
        {"type": "add_to_cart", "session_id": "o2", "item_id": "p4", "ts": 1714557720.0},
    ]
    # A resume refuses other options, or a file that changed, rather than mix them up.
    other = await replay(
        tmp_path, amqp_config, "orders.csv", *mapping[:-2], "--default", "type=view"
    )
    assert other.returncode == 1
    assert "was saved with other format or column options" in other.stderr
    path = tmp_path / "orders.csv"
    path.write_text(path.read_text().replace("o1,p1", "o1,p9"))
    changed = await replay(tmp_path, amqp_config, "orders.csv", *mapping)
    assert changed.returncode == 1
    assert "the file changed; use --restart to publish the whole file again" in changed.stderr
    strict = await replay(tmp_path, amqp_config, "orders.csv", *mapping, "--restart", "--strict")
    assert strict.returncode == 3, strict.stderr
    assert strict.invalid_lines() == [4]


def run_blocking(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(*args),
        cwd=tmp_path,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_errors_are_one_clear_line_with_the_right_status(tmp_path: Path) -> None:
    (tmp_path / "events.jsonl").write_bytes(orjson.dumps(view(1)) + b"\n")
    (tmp_path / "orders.csv").write_text("sku,session_id\n")
    nowhere = {"RECSRV_BROKER__URL": "amqp://guest:guest@127.0.0.1:1/"}

    embedded = run_blocking(tmp_path, "events.jsonl", RECSRV_BROKER__URL="memory://")
    missing = run_blocking(tmp_path, "absent.jsonl", **nowhere)
    unreachable = run_blocking(tmp_path, "events.jsonl", **nowhere)
    unmapped = run_blocking(tmp_path, "orders.csv", "--column", "item_id=product", **nowhere)
    bad_batch = run_blocking(tmp_path, "events.jsonl", "--batch", "20000", **nowhere)
    in_doubt = run_blocking(tmp_path, "events.jsonl", "--window", "50", "--batch", "5000")

    assert embedded.returncode == 2
    assert "replay needs RabbitMQ" in embedded.stderr
    assert missing.returncode == 1
    assert missing.stderr == "recsrv: cannot read absent.jsonl: No such file or directory\n"
    assert unreachable.returncode == 1
    assert unreachable.stderr.splitlines()[-1].startswith(
        "recsrv: cannot set up RabbitMQ at amqp://***@127.0.0.1:1/"
    )
    assert unmapped.returncode == 2
    assert "no column 'product' in sku, session_id" in unmapped.stderr
    assert bad_batch.returncode == 2
    assert "--batch must be from 1 to 10000" in bad_batch.stderr
    assert in_doubt.returncode == 2
    assert "--window times --batch must stay within model.dedup_window" in in_doubt.stderr
    for result in (embedded, missing, unreachable, unmapped, bad_batch, in_doubt):
        assert "Traceback" not in result.stderr + result.stdout
        # Logs (the AMQP library's connection errors included) go to stderr, not stdout.
        assert result.stdout == ""
