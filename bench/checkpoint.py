"""Checkpoint of a large state: size, time, and the longest event-loop stall (P5, P6).

Builds a model of --items items and --sessions sessions of --per-session events
each, reports the process RSS (design P5), then takes checkpoints the way the
server does (snapshot in a worker thread under the consumer lock, then the write)
to a file store and to a MongoDB-wire server, while a task on the event loop
measures how late its 1 ms ticks come (design P6: no stall > 50 ms, done <= 10 s).
Finally it times a restore.

    python bench/checkpoint.py [--items 100000] [--sessions 1000000] [--per-session 20]
        [--mongodb-url mongodb://127.0.0.1:27017/recsrv_bench]   (default: starts nx-27017)
        [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bson import Binary
from pymongo import AsyncMongoClient
from services import NxServer, run_benchmark

from recsrv.config import ModelConfig, SessionsConfig
from recsrv.events import Interaction
from recsrv.model import Model
from recsrv.state.snapshot import STATE_FORMAT, dump_state, load_state
from recsrv.store import CheckpointInfo, CheckpointStore
from recsrv.store.codec import decode, encode
from recsrv.store.files import FileStore
from recsrv.store.mongo import MongoStore

KINDS = ["view"] * 7 + ["click"] * 2 + ["add_to_cart"]


def build(items: int, sessions: int, per_session: int) -> Model:
    """Applied 1,000 events at a time, as the consumer applies a message: the same
    state as one event at a time, faster."""
    config = SessionsConfig(max_sessions=sessions, ttl_s=10**8)
    model = Model(ModelConfig(), config)
    rng = random.Random(1)
    ts = 1_700_000_000.0
    started = time.perf_counter()
    batch: list[Interaction] = []
    for s in range(sessions):
        session_id = f"session-{s:08d}"
        base = rng.randrange(items)
        for _ in range(per_session):
            item = (base + int(rng.expovariate(0.05))) % items
            batch.append(Interaction(rng.choice(KINDS), session_id, ts, item_id=f"item-{item}"))
            ts += 0.01
        if len(batch) >= 1000 or s == sessions - 1:
            model.apply_events(batch)
            batch = []
        if s and s % 100_000 == 0:
            rate = s * per_session / (time.perf_counter() - started)
            print(f"  built {s:,} sessions ({rate:,.0f} events/s)", flush=True)
    return model


def array_bytes(model: Model) -> tuple[int, int]:
    """Bytes of the per-item and of the per-session numpy arrays (allocated rows)."""
    per_item = [
        *(getattr(model.catalog, name) for name in model.catalog.ARRAYS),
        model.popularity.scores,
        *(
            getattr(table, name)
            for table in (model.similar, model.bought_together)
            for name in ("ids", "weights", "sizes")
        ),
    ]
    per_session = [getattr(model.sessions, name) for name in model.sessions.ARRAYS]
    return sum(a.nbytes for a in per_item), sum(a.nbytes for a in per_session)


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class LoopLag:
    """Measures how late 1 ms sleeps wake up: the event loop's longest stall."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.001)
            self.worst = max(self.worst, time.perf_counter() - before - 0.001)

    def __enter__(self) -> LoopLag:
        self._task = asyncio.get_running_loop().create_task(self._tick())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def raw_insert(url: str, chunks: list[bytes]) -> float:
    """The limit: the same bytes inserted with plain PyMongo, one document per chunk."""
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(url)
    collection = client.get_default_database()["raw_bench"]
    started = time.perf_counter()
    for seq, chunk in enumerate(chunks):
        await collection.insert_one({"_id": str(seq), "data": Binary(chunk)})
    elapsed = time.perf_counter() - started
    await collection.drop()
    await client.close()
    return elapsed


async def checkpoint(model: Model, store: CheckpointStore) -> tuple[float, float, float, int]:
    """(snapshot seconds, write seconds, worst loop stall seconds, bytes)."""
    await store.open()
    lock = asyncio.Lock()
    with LoopLag() as lag:
        await asyncio.sleep(0.05)
        started = time.perf_counter()
        async with lock:
            encoded = await asyncio.to_thread(lambda: encode(dump_state(model)))
        snapshot_s = time.perf_counter() - started
        info = CheckpointInfo(
            id=f"bench-{time.time_ns()}",
            created_at=time.time(),
            offset=model.offset,
            events=model.events,
            format=STATE_FORMAT,
            chunks=len(encoded.chunks),
            size=encoded.size,
            sha256=encoded.sha256,
        )
        started = time.perf_counter()
        await store.write(info, encoded.chunks)
        write_s = time.perf_counter() - started
    await store.delete([info.id])
    await store.close()
    return snapshot_s, write_s, lag.worst, encoded.size


async def run(args: argparse.Namespace) -> dict[str, object]:
    print(f"building {args.items:,} items x {args.sessions:,} sessions x {args.per_session}")
    baseline = rss_mib()
    started = time.perf_counter()
    model = build(args.items, args.sessions, args.per_session)
    events = args.sessions * args.per_session
    print(f"built {model.stats()} from {events:,} events in {time.perf_counter() - started:.0f} s")
    rss = rss_mib()
    item_bytes, session_bytes = array_bytes(model)
    python_bytes = (rss - baseline) * 2**20 - item_bytes - session_bytes
    print(
        f"P5 RSS {rss:,.0f} MiB (interpreter and libraries before building: {baseline:,.0f} "
        f"MiB); target <= 2,048 MiB; {(rss - baseline) * 2**20 / args.sessions:,.0f} bytes "
        f"per session with its share of the items"
    )
    print(
        f"   numpy arrays: {item_bytes / args.items:,.0f} bytes per item (rows allocated: "
        f"{model.items.capacity:,}), {session_bytes / args.sessions:,.0f} bytes per session; "
        f"Python objects (ids, their dicts, carts): {python_bytes / 2**20:,.0f} MiB, "
        f"{python_bytes / (args.items + args.sessions):,.0f} bytes per item or session"
    )
    result: dict[str, object] = {
        "items": args.items,
        "sessions": args.sessions,
        "per_session": args.per_session,
        "build_s": time.perf_counter() - started,
        "rss_mib": rss,
        "baseline_mib": baseline,
        "bytes_per_session": (rss - baseline) * 2**20 / args.sessions,
        "array_bytes_per_item": item_bytes / args.items,
        "array_bytes_per_session": session_bytes / args.sessions,
        "python_objects_mib": python_bytes / 2**20,
    }

    workdir = Path(tempfile.mkdtemp(prefix="recsrv-bench-"))
    stores: list[tuple[str, CheckpointStore]] = [("files", FileStore(str(workdir / "files")))]
    with contextlib.ExitStack() as stack:
        url = args.mongodb_url
        if url is None:
            url = stack.enter_context(NxServer(workdir)).url + "/recsrv_bench"
        stores.append(("mongodb", MongoStore(url)))
        for name, store in stores:
            runs = [await checkpoint(model, store) for _ in range(args.repeat)]
            snapshot = statistics.median(r[0] for r in runs)
            write = statistics.median(r[1] for r in runs)
            worst = max(r[2] for r in runs)
            result[f"p6_{name}"] = {
                "size_mib": runs[0][3] / 2**20,
                "snapshot_s": snapshot,
                "write_s": write,
                "total_s": snapshot + write,
                "stall_ms": worst * 1000,
            }
            print(
                f"P6 {name:8s} size {runs[0][3] / 2**20:,.0f} MiB, snapshot {snapshot:.2f} s "
                f"+ write {write:.2f} s = {snapshot + write:.2f} s (target <= 10 s), longest "
                f"loop stall {worst * 1000:.0f} ms (target <= 50 ms), median of {args.repeat}"
            )
            if name == "mongodb":
                chunks = encode(dump_state(model)).chunks
                limit = statistics.median([await raw_insert(url, chunks) for _ in range(2)])
                result["p6_mongodb_limit_s"] = limit
                print(
                    f"   the server's own limit: plain PyMongo inserts of the same bytes take "
                    f"{limit:.2f} s; recsrv's write / limit = {write / limit:.2f}"
                )
    shutil.rmtree(workdir, ignore_errors=True)

    started = time.perf_counter()
    encoded = encode(dump_state(model))
    restored = load_state(decode(encoded.chunks), model.config, model.sessions_config)
    result["restore_s"] = time.perf_counter() - started
    print(f"restore (decode + rebuild) {result['restore_s']:.2f} s, {restored.stats()}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--sessions", type=int, default=1_000_000)
    parser.add_argument("--per-session", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--mongodb-url", default=None)
    run_benchmark(parser, run)


if __name__ == "__main__":
    main()
