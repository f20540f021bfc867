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
- `clickstream`: calibrated to a real anonymous e-commerce clickstream, Diginetica
  (CIKM Cup 2016, `train-item-views.csv`), after the filtering that session-based
  recommendation papers apply (drop sessions of one click, items seen fewer than 5
  times). The figures calibrated to, as commonly reported for that filtered set:
  about 993k clicks in 204k sessions over 43k items (the freerec library's
  chronological Diginetica: 989,204 clicks, 204,061 sessions, 42,171 items, mean 4.85;
  SR-GNN, Wu et al., AAAI 2019, Table 1: 982,961 clicks, 43,097 items):
  * session length: at least 2 (the filter), mean CLICK_MEAN_LENGTH = 4.85 clicks,
    a geometric long tail (a session goes on with probability 2.85 / 3.85 per click);
  * catalogue: items = sessions / 5 (204k sessions / 43k items ≈ 4.7);
  * item popularity: Zipf-like, weight 1/rank;
  * signal: items fall into topics of CLICK_TOPIC_SIZE (a product category); each item
    has CLICK_SUCCESSORS related items in its topic. After a click the next one is a
    related item of the last (CLICK_FOLLOW_P), a popular item of the same topic
    (CLICK_TOPIC_P), a repeat of an item already clicked in the session
    (CLICK_REPEAT_P), else a popular item anywhere (a topic switch).
  The topic size and the step probabilities are assumptions chosen to mix the two
  signals, not published figures. Events carry no `user_id` (Diginetica's are mostly
  anonymous), and sessions are the unit, as in the papers.

Every event is a `view`; sequential and co-occurrence ones carry a user id (a pool of
about half as many users as sessions, so users come back). Sessions start in a busy
hour of each of DAYS days, so several are open at once and their events interleave in
time; events of a session are 20 to 120 s apart. Everything follows from `--seed`: the
same arguments give the same file, byte for byte. Event ids are
`<kind>-<session>-<position>` (kind cut to 3 letters).

Orders: `time` sorts every event by ts (ties by session, then position); `grouped`
writes each session's events together, sessions sorted by start.

    python scripts/synthetic_events.py --kind sequential --sessions 2000 --seed 1 -o seq.jsonl
    python scripts/synthetic_events.py --kind clickstream --sessions 20000 --seed 1 \
        --order grouped -o clickstream.jsonl
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
LENGTH = (3, 10)  # session length bounds, sequential and cooccurrence
# clickstream (Diginetica-calibrated, see the docstring)
CLICK_MIN_LENGTH = 2
CLICK_MEAN_LENGTH = 4.85
CLICK_MAX_LENGTH = 200
CLICK_ITEMS_PER_SESSION = 0.2  # 43k items / 204k sessions
CLICK_TOPIC_SIZE = 40
CLICK_SUCCESSORS = 3
CLICK_FOLLOW_P = 0.45
CLICK_TOPIC_P = 0.32
CLICK_REPEAT_P = 0.08
KINDS = ("sequential", "cooccurrence", "clickstream")
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


def _click_length(rng: random.Random) -> int:
    """At least CLICK_MIN_LENGTH, geometric tail with mean CLICK_MEAN_LENGTH."""
    extra = CLICK_MEAN_LENGTH - CLICK_MIN_LENGTH
    go_on = extra / (extra + 1)
    length = CLICK_MIN_LENGTH
    while length < CLICK_MAX_LENGTH and rng.random() < go_on:
        length += 1
    return length


def _cumulative(weights: list[float]) -> list[float]:
    out, total = [], 0.0
    for weight in weights:
        total += weight
        out.append(total)
    return out


def clickstream_sessions(rng: random.Random, sessions: int, items: int) -> list[list[int]]:
    weights = _popularity(rng, items)
    population = list(range(items))
    every = _cumulative(weights)
    shuffled = population[:]
    rng.shuffle(shuffled)
    topics = [shuffled[i : i + CLICK_TOPIC_SIZE] for i in range(0, items, CLICK_TOPIC_SIZE)]
    topic_of = [0] * items
    for number, topic in enumerate(topics):
        for item in topic:
            topic_of[item] = number
    in_topic = [_cumulative([weights[item] for item in topic]) for topic in topics]
    successors = []
    for item in population:
        topic = topics[topic_of[item]]
        others = [other for other in topic if other != item] or [item]
        # Uniform within the topic, so that chains reach the topic's long tail.
        successors.append(rng.sample(others, min(CLICK_SUCCESSORS, len(others))))
    follow_weights = [2.0**-rank for rank in range(CLICK_SUCCESSORS)]
    out = []
    for _ in range(sessions):
        item = rng.choices(population, cum_weights=every)[0]
        session = [item]
        for _ in range(_click_length(rng) - 1):
            draw = rng.random()
            if draw < CLICK_FOLLOW_P:
                related = successors[item]
                item = rng.choices(related, weights=follow_weights[: len(related)])[0]
            elif draw < CLICK_FOLLOW_P + CLICK_TOPIC_P:
                number = topic_of[item]
                item = rng.choices(topics[number], cum_weights=in_topic[number])[0]
            elif draw < CLICK_FOLLOW_P + CLICK_TOPIC_P + CLICK_REPEAT_P:
                item = rng.choice(session)
            else:
                item = rng.choices(population, cum_weights=every)[0]
            session.append(item)
        out.append(session)
    return out


BUILDERS = {
    "sequential": sequential_sessions,
    "cooccurrence": cooccurrence_sessions,
    "clickstream": clickstream_sessions,
}


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
    if items is not None:
        n_items = items
    elif kind == "clickstream":
        n_items = max(20, round(sessions * CLICK_ITEMS_PER_SESSION))
    else:
        n_items = max(20, sessions)
    item_lists = BUILDERS[kind](rng, sessions, n_items)
    anonymous = kind == "clickstream"
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
        user_id = None if anonymous else f"u{rng.randrange(users)}"
        ts = start
        for position, item in enumerate(session_items):
            if position:
                ts += rng.randint(*STEP_S)
            event: dict[str, Any] = {
                "type": "view",
                "event_id": f"{session_id}-{position}",
                "session_id": session_id,
                "user_id": user_id,
                "item_id": f"i{item}",
                "ts": ts,
            }
            if anonymous:
                del event["user_id"]
            grouped.append(event)
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
        "--items",
        type=int,
        help="catalogue size (default: as many as sessions, clickstream sessions / 5; ≥ 20)",
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
