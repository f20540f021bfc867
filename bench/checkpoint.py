"""Checkpoint of a large state: size, time, and the longest event-loop stall (P5, P6).

Builds a model of --items items and --sessions sessions of --per-session events
each, reports the process RSS (design P5), then takes checkpoints the way the
server does (recsrv.checkpointer.start_writing: the state's arrays copied in a worker
thread under the consumer lock, but for the sessions' ring buffers, then encoded in a
worker thread, the ring buffers read as they come, while the store writes the chunks
already made) to a file store and to a MongoDB-wire server, while a task
on the event loop measures how late its 1 ms ticks come (design P6: no stall > 50 ms),
and a garbage-collector callback times every collection meanwhile.
The MongoDB write is bounded by the server, so it is stated against plain PyMongo
inserts of the same bytes (one insert_one per chunk), measured in the same run,
alternating with the checkpoints: checkpoint time / inserts time <= 1.15.
Finally it times a restore.

    python bench/checkpoint.py [--items 100000] [--sessions 1000000] [--per-session 20]
        [--repeat 3] [--mongodb-url mongodb://127.0.0.1:27017/recsrv_bench]
        (default: starts nx-27017) [--json PATH]

The full size takes about 20 minutes here (11 of them building the state); a smaller
--sessions (200000) shows the same stalls in a few minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bson import Binary
from pymongo import AsyncMongoClient
from services import NxServer, run_benchmark

from recsrv.checkpointer import start_writing
from recsrv.config import ModelConfig, SessionsConfig
from recsrv.events import Interaction
from recsrv.model import Model
from recsrv.state.snapshot import dump_state, load_state
from recsrv.store import CheckpointStore
from recsrv.store.codec import decode, encode
from recsrv.store.files import FileStore
from recsrv.store.mongo import MongoStore

KINDS = ["view"] * 7 + ["click"] * 2 + ["add_to_cart"]
# The same probe in a process of its own, which does nothing else: the machine's own share
# of a stall (other processes, the hypervisor), measured over the same windows.
PROBE = """
import time
settled = time.perf_counter() + 0.2
worst = 0.0
while True:
    before = time.perf_counter()
    time.sleep(0.001)
    lag = time.perf_counter() - before - 0.001
    if before > settled and lag > worst:
        worst = lag
        print(worst, flush=True)
"""


def build(items: int, sessions: int, per_session: int) -> Model:
    """Applied 1,000 events at a time, as the consumer applies a message: the same
    state as one event at a time, faster.

    The empty model is made first and frozen out of the garbage collector's sight, as
    the server freezes what start-up made (recsrv.app): the state's containers (the
    sessions' ids, carts, profiles) are made at start and only grow, and the entries
    they gain are strings, or dicts of numbers, which the collector does not track. A
    model built before the freeze would have its containers walked by every full
    collection (68.5 ms at a million sessions), which the server's never are."""
    config = SessionsConfig(max_sessions=sessions, ttl_s=10**8)
    model = Model(ModelConfig(), config)
    gc.freeze()
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


def full_collection_ms() -> float:
    """What a full collection holds the loop for: the state's containers walked."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        gc.collect()
        best = min(best, time.perf_counter() - started)
    return best * 1000


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


def thread_faults() -> int:
    """Minor page faults of the calling thread so far."""
    return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt


class LoopLag:
    """Measures how late 1 ms sleeps wake up: the event loop's longest stall, overall and
    in each phase the caller names by setting `phase`."""

    def __init__(self) -> None:
        self.phase = ""
        self.by_phase: dict[str, float] = {}
        self.faults_at_worst = 0
        # The longest garbage collection meanwhile (seconds, generation), in any thread:
        # whichever thread collects holds the GIL, so the loop waits for it too.
        self.longest_collection = (0.0, -1)
        self._collection_started = 0.0
        self._task: asyncio.Task[None] | None = None

    def _on_collection(self, phase: str, info: dict[str, int]) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._collection_started = now
        elif now - self._collection_started > self.longest_collection[0]:
            self.longest_collection = (now - self._collection_started, info["generation"])

    @property
    def worst(self) -> float:
        return max(self.by_phase.values(), default=0.0)

    async def _tick(self) -> None:
        while True:
            before = time.perf_counter()
            faults = thread_faults()
            phase = self.phase
            await asyncio.sleep(0.001)
            lag = time.perf_counter() - before - 0.001
            if lag > self.worst:
                # Page faults taken by the loop's own thread during its longest stall: a
                # stall spent touching fresh memory shows here, a wait for the GIL not.
                self.faults_at_worst = thread_faults() - faults
            self.by_phase[phase] = max(self.by_phase.get(phase, 0.0), lag)

    def __enter__(self) -> LoopLag:
        self._task = asyncio.get_running_loop().create_task(self._tick())
        gc.callbacks.append(self._on_collection)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        gc.callbacks.remove(self._on_collection)


class MachineLag:
    """PROBE in a child process, from entry to exit (entering blocks for 0.25 s)."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._child: subprocess.Popen[str] | None = None

    def __enter__(self) -> MachineLag:
        self._child = subprocess.Popen(
            [sys.executable, "-c", PROBE], stdout=subprocess.PIPE, text=True
        )
        time.sleep(0.25)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._child is not None
        self._child.terminate()
        lines = self._child.communicate()[0].split()
        self.worst = float(lines[-1]) if lines else 0.0


@dataclass
class Checkpoint:
    lock_s: float  # the copy, under the lock
    total_s: float  # from taking the lock to the checkpoint complete in the store
    stalls: dict[str, float]  # the longest loop stall in each phase
    stall_faults: int  # page faults on the loop's thread during the longest stall
    collection: tuple[float, int]  # the longest garbage collection (seconds, generation)
    size: int
    machine_s: float  # the longest stall of the probe in a process of its own meanwhile
    # What the lock was held for before the copy (the whole state encoded in a worker
    # thread), measured after the checkpoint: the lock time before and after, same run.
    encode_s: float

    @property
    def stall_s(self) -> float:
        return max(self.stalls.values())

    @property
    def write_s(self) -> float:
        """What the write took once the lock was let go."""
        return self.total_s - self.lock_s


async def raw_insert(url: str, chunks: list[bytes]) -> tuple[float, float, float]:
    """The limit: the same bytes inserted with plain PyMongo, one document per chunk.
    (seconds, longest loop stall meanwhile, the same in a process of its own)."""
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(url)
    collection = client.get_default_database()["raw_bench"]
    with MachineLag() as machine, LoopLag() as lag:
        started = time.perf_counter()
        for seq, chunk in enumerate(chunks):
            await collection.insert_one({"_id": str(seq), "data": Binary(chunk)})
        elapsed = time.perf_counter() - started
    await collection.drop()
    await client.close()
    return elapsed, lag.worst, machine.worst


async def checkpoint(model: Model, store: CheckpointStore) -> Checkpoint:
    """One checkpoint as recsrv.checkpointer takes it, then removed again."""
    await store.open()
    lock = asyncio.Lock()
    with MachineLag() as machine, LoopLag() as lag:
        lag.phase = "before"
        await asyncio.sleep(0.05)
        lag.phase = "lock"
        started = time.perf_counter()
        async with lock:
            writing = await start_writing(model, store)
        lock_s = time.perf_counter() - started
        lag.phase = "write"
        info = await writing
        total_s = time.perf_counter() - started
        lag.phase = "after"
        await asyncio.sleep(0.05)
    await store.delete([info.id])
    await store.close()
    started = time.perf_counter()
    await asyncio.to_thread(lambda: encode(dump_state(model)))
    encode_s = time.perf_counter() - started
    return Checkpoint(
        lock_s,
        total_s,
        lag.by_phase,
        lag.faults_at_worst,
        lag.longest_collection,
        info.size,
        machine.worst,
        encode_s,
    )


def summary(runs: list[Checkpoint]) -> dict[str, Any]:
    """Medians of the times; the stall is the longest of all runs."""
    return {
        "size_mib": runs[0].size / 2**20,
        "lock_s": statistics.median(r.lock_s for r in runs),
        "lock_runs_s": [r.lock_s for r in runs],
        "encode_s": statistics.median(r.encode_s for r in runs),
        "encode_runs_s": [r.encode_s for r in runs],
        "write_s": statistics.median(r.write_s for r in runs),
        "total_s": statistics.median(r.total_s for r in runs),
        "stall_ms": max(r.stall_s for r in runs) * 1000,
        "stalls_ms": [r.stall_s * 1000 for r in runs],
        "worst_run_ms": {
            phase: lag * 1000 for phase, lag in max(runs, key=lambda r: r.stall_s).stalls.items()
        },
        "machine_stalls_ms": [r.machine_s * 1000 for r in runs],
        "stall_faults": [r.stall_faults for r in runs],
        "collections_ms": [r.collection[0] * 1000 for r in runs],
        "collection_generations": [r.collection[1] for r in runs],
    }


def describe(name: str, figures: dict[str, Any], repeat: int, time_target: str) -> str:
    def listed(values: list[float], digits: int = 0) -> str:
        return ", ".join(f"{value:.{digits}f}" for value in values)

    phases = ", ".join(f"{k} {v:.0f}" for k, v in figures["worst_run_ms"].items())
    collections = ", ".join(
        f"{ms:.1f} ms (generation {generation})" if generation >= 0 else "none"
        for ms, generation in zip(
            figures["collections_ms"], figures["collection_generations"], strict=True
        )
    )
    return (
        f"P6 {name:8s} size {figures['size_mib']:,.0f} MiB, copy under the lock "
        f"{figures['lock_s']:.2f} s + the write "
        f"{figures['write_s']:.2f} s = {figures['total_s']:.2f} s ({time_target}), median of "
        f"{repeat}\n"
        f"   consumer lock held {figures['lock_s']:.2f} s (runs "
        f"{listed(figures['lock_runs_s'], 2)} s); the whole state encoded in a worker thread, "
        f"what the lock was held for before the copy: {figures['encode_s']:.2f} s (runs "
        f"{listed(figures['encode_runs_s'], 2)} s)\n"
        f"   longest loop stall {figures['stall_ms']:.0f} ms (target <= 50 ms; runs "
        f"{listed(figures['stalls_ms'])} ms; the worst run by phase: {phases}); the probe in a "
        f"process of its own, same windows: {listed(figures['machine_stalls_ms'])} ms; page "
        f"faults on the loop's thread during each run's longest stall: "
        f"{listed(figures['stall_faults'])}; the longest garbage collection in each run: "
        f"{collections}"
    )


async def p6_files(model: Model, workdir: Path, repeat: int) -> dict[str, Any]:
    runs = [await checkpoint(model, FileStore(str(workdir / "files"))) for _ in range(repeat)]
    figures = summary(runs)
    print(describe("files", figures, repeat, "target <= 10 s"))
    return figures


async def p6_mongodb(model: Model, url: str, repeat: int) -> dict[str, Any]:
    """Checkpoints and plain inserts of the same bytes, alternating, after one untimed
    pass of the inserts that grows the server's database file for both."""
    chunks = encode(dump_state(model)).chunks
    await raw_insert(url, chunks)
    runs: list[Checkpoint] = []
    plain: list[tuple[float, float, float]] = []
    for _ in range(repeat):
        runs.append(await checkpoint(model, MongoStore(url)))
        plain.append(await raw_insert(url, chunks))
    del chunks
    figures = summary(runs)
    ratios = [r.total_s / p[0] for r, p in zip(runs, plain, strict=True)]
    figures.update(
        plain_insert_s=statistics.median(p[0] for p in plain),
        plain_stall_ms=max(p[1] for p in plain) * 1000,
        plain_machine_stall_ms=max(p[2] for p in plain) * 1000,
        ratio=statistics.median(ratios),
        ratios=ratios,
    )
    print(describe("mongodb", figures, repeat, "target: <= 1.15 x plain inserts"))
    print(
        f"   plain PyMongo inserts of the same bytes, same run: {figures['plain_insert_s']:.2f} s "
        f"(longest loop stall meanwhile {figures['plain_stall_ms']:.0f} ms, in a process of its "
        f"own {figures['plain_machine_stall_ms']:.0f} ms); checkpoint / "
        f"inserts = {figures['ratio']:.2f} (target <= 1.15; runs "
        f"{', '.join(f'{x:.2f}' for x in ratios)})"
    )
    return figures


async def run(args: argparse.Namespace) -> dict[str, object]:
    print(f"building {args.items:,} items x {args.sessions:,} sessions x {args.per_session}")
    baseline = rss_mib()
    started = time.perf_counter()
    model = build(args.items, args.sessions, args.per_session)
    events = args.sessions * args.per_session
    print(f"built {model.stats()} from {events:,} events in {time.perf_counter() - started:.0f} s")
    print(f"a full garbage collection of this state: {full_collection_ms():.1f} ms (best of 3)")
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
    with contextlib.ExitStack() as stack:
        result["p6_files"] = await p6_files(model, workdir, args.repeat)
        url = args.mongodb_url
        if url is None:
            url = stack.enter_context(NxServer(workdir)).url + "/recsrv_bench"
        mongodb = await p6_mongodb(model, url, args.repeat)
        result["p6_mongodb"] = mongodb
        result["p6_mongodb_limit_s"] = mongodb["plain_insert_s"]
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
