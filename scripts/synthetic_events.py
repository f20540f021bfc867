#!/usr/bin/env python3
"""Synthetic event streams for `recsrv evaluate`, with a known kind of signal.

- `sequential`: a sparse Markov chain. Each item has SUCCESSORS items, drawn
  uniformly, that tend to follow it (the first most often); a session starts on an
  item drawn with a Zipf-like popularity skew and, step after step, goes to one of
  the current item's successors with probability FOLLOW_P, else to a popular item.
  Order carries the signal, so a method that learns "what comes after what" should
  beat popularity.
- `cooccurrence`: latent baskets. Items fall into topics; a session picks a topic
  (skewed) and draws distinct items of it (with a little noise from the whole
  catalogue), then the session's items are shuffled: which items go together carries
  the signal, their order none.

Every event is a `view` with a user id (a pool of about half as many users as
sessions, so users come back). Sessions start in a busy hour of each of DAYS days, so
several are open at once and their events interleave in time; events of a session are
20 to 120 s apart. Everything follows from `--seed`: the same arguments give the same
file, byte for byte. Event ids are `<kind>-<session>-<position>`.

Orders: `time` sorts every event by ts (ties by session, then position); `grouped`
writes each session's events together, sessions sorted by start.

    python scripts/synthetic_events.py --kind sequential --sessions 2000 --seed 1 -o seq.jsonl
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path
from typing import Any, TextIO

import orjson

BASE_TS = 1_767_225_600  # 2026-01-01T00:00:00Z
DAYS = 5
BUSY_HOUR_START_S = 18 * 3600
BUSY_WINDOW_S = 3600
STEP_S = (20, 120)
SUCCESSORS = 2
FOLLOW_P = 0.9
TOPIC_SIZE = 6
NOISE_P = 0.05
LENGTH = (3, 10)  # session length bounds, both kinds
KINDS = ("sequential", "cooccurrence")
ORDERS = ("time", "grouped")


def _popularity(rng: random.Random, n: int) -> list[float]:
    """Zipf-like weights (1/rank) over the items, in a shuffled rank order."""
    ranks = list(range(1, n + 1))
    rng.shuffle(ranks)
    return [1.0 / rank for rank in ranks]


def _length(rng: random.Random) -> int:
    low, high = LENGTH
    # Geometric-ish: short sessions are common, long ones rare.
    length = low
    while length < high and rng.random() < 0.75:
        length += 1
    return length


def sequential_sessions(rng: random.Random, sessions: int, items: int) -> list[list[int]]:
    weights = _popularity(rng, items)
    population = list(range(items))
    successors = []
    for item in population:
        # Uniform, so that chains reach into the long tail where popularity is blind.
        others = [other for other in population if other != item]
        successors.append(rng.sample(others, SUCCESSORS))
    follow_weights = [2.0**-rank for rank in range(SUCCESSORS)]
    out = []
    for _ in range(sessions):
        item = rng.choices(population, weights=weights)[0]
        session = [item]
        for _ in range(_length(rng) - 1):
            if rng.random() < FOLLOW_P:
                item = rng.choices(successors[item], weights=follow_weights)[0]
            else:
                item = rng.choices(population, weights=weights)[0]
            session.append(item)
        out.append(session)
    return out


def cooccurrence_sessions(rng: random.Random, sessions: int, items: int) -> list[list[int]]:
    population = list(range(items))
    shuffled = population[:]
    rng.shuffle(shuffled)
    topics = [shuffled[i : i + TOPIC_SIZE] for i in range(0, items, TOPIC_SIZE)]
    topic_weights = _popularity(rng, len(topics))
    out = []
    for _ in range(sessions):
        topic = rng.choices(topics, weights=topic_weights)[0]
        length = min(_length(rng), len(topic))
        session = rng.sample(topic, length)
        session = [rng.choice(population) if rng.random() < NOISE_P else i for i in session]
        rng.shuffle(session)
        out.append(session)
    return out


def generate(
    kind: str, sessions: int, seed: int, order: str = "time", items: int | None = None
) -> list[dict[str, Any]]:
    """The events of `sessions` synthetic sessions, deterministic for a seed."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, not {order!r}")
    if sessions < 1:
        raise ValueError("sessions must be at least 1")
    rng = random.Random(f"{kind}:{seed}")
    n_items = items if items is not None else max(20, sessions)
    build = sequential_sessions if kind == "sequential" else cooccurrence_sessions
    item_lists = build(rng, sessions, n_items)
    users = max(1, sessions // 2)
    starts = sorted(
        BASE_TS + rng.randrange(DAYS) * 86400 + BUSY_HOUR_START_S + rng.randrange(BUSY_WINDOW_S)
        for _ in range(sessions)
    )
    prefix = kind[:3]
    width = len(str(sessions))
    grouped: list[dict[str, Any]] = []
    for number, (start, session_items) in enumerate(zip(starts, item_lists, strict=True)):
        session_id = f"{prefix}-{number:0{width}d}"
        user_id = f"u{rng.randrange(users)}"
        ts = start
        for position, item in enumerate(session_items):
            if position:
                ts += rng.randint(*STEP_S)
            grouped.append(
                {
                    "type": "view",
                    "event_id": f"{session_id}-{position}",
                    "session_id": session_id,
                    "user_id": user_id,
                    "item_id": f"i{item}",
                    "ts": ts,
                }
            )
    if order == "grouped":
        return grouped  # sessions are numbered by start
    return sorted(grouped, key=lambda e: (e["ts"], e["session_id"], e["event_id"]))


def write_jsonl(events: list[dict[str, Any]], out: TextIO) -> None:
    for event in events:
        out.write(orjson.dumps(event).decode())
        out.write("\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--kind", choices=KINDS, required=True)
    parser.add_argument("--sessions", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--items", type=int, help="catalogue size (default: as many as sessions, ≥ 20)"
    )
    parser.add_argument("--order", choices=ORDERS, default="time", help="default: time")
    parser.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
    args = parser.parse_args(argv)
    events = generate(args.kind, args.sessions, args.seed, args.order, args.items)
    if args.output is None:
        write_jsonl(events, sys.stdout)
    else:
        with args.output.open("w") as out:
            write_jsonl(events, out)
    print(f"{len(events)} events, {args.sessions} sessions", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
