"""What one session's list costs, part by part, in process (the profile behind P3).

Builds the P3 shop's state as `bench/rest.py` does (its `Shop` and `history`, then
--views more views on the live sessions, as the benchmark's ingest adds them), then
times `recommend` and each scoring component on --lists live sessions: process time,
the minimum of --passes passes, in µs per list. Process time, not wall time, so that
another process on the machine takes less from the figures; still compare two versions
back to back.

    python bench/list_cost.py [--lists 2000] [--passes 5] [--save-state FILE]
    python bench/list_cost.py --load-state FILE [--lists 200] [--passes 1] [--parts none]

For instruction counts, which no other load changes: save the state once, then run
`valgrind --tool=callgrind python bench/list_cost.py --load-state FILE --lists N
--passes 1 --parts none` with N = 0 and N = 200; the difference of the two totals over
200 is the instructions per list.
"""

from __future__ import annotations

import argparse
import functools
import random
import time
from collections.abc import Callable
from pathlib import Path

import orjson
from rest import Shop, history

from recsrv.config import ModelConfig, SessionsConfig
from recsrv.events import parse_element
from recsrv.model import Model
from recsrv.recommend import recommend
from recsrv.scoring import Context, components
from recsrv.state.snapshot import dump_state, load_state
from recsrv.store.codec import decode, encode

EXTRA_VIEWS = 40_000


def build(items: int, sessions: int, views: int) -> tuple[Model, list[str]]:
    shop = Shop(items)
    catalog = list(shop.catalog())
    events, live = history(shop, sessions)
    now = time.time()
    rng = random.Random(3)
    extra = [
        {
            "type": "view",
            "session_id": rng.choice(live),
            "item_id": shop.item_in(shop.category()),
            "ts": now + n * 0.01,
        }
        for n in range(views)
    ]
    parsed = [parse_element(raw, default_ts=now) for raw in [*catalog, *events, *extra]]
    model = Model(ModelConfig(), SessionsConfig())
    for start in range(0, len(parsed), 1000):
        model.apply_events(parsed[start : start + 1000])
    return model, live


def save(model: Model, live: list[str], path: Path) -> None:
    encoded = encode(dump_state(model))
    path.write_bytes(
        orjson.dumps({"sha256": encoded.sha256, "live": live}) + b"\n" + b"".join(encoded.chunks)
    )


def load(path: Path) -> tuple[Model, list[str]]:
    header, _, data = path.read_bytes().partition(b"\n")
    meta = orjson.loads(header)
    model = load_state(decode([data], meta["sha256"]), ModelConfig(), SessionsConfig())
    return model, meta["live"]


def per_list(run: Callable[[str], object], sessions: list[str], passes: int) -> float:
    best = float("inf")
    for _ in range(passes):
        started = time.process_time()
        for session in sessions:
            run(session)
        best = min(best, (time.process_time() - started) / max(len(sessions), 1))
    return best * 1e6


def score_one(
    scorer: components.Scorer, model: Model, contexts: dict[str, Context], session: str
) -> object:
    return scorer(model, contexts[session])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--sessions", type=int, default=40_000)
    parser.add_argument("--views", type=int, default=EXTRA_VIEWS)
    parser.add_argument("--lists", type=int, default=2000)
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--parts", choices=("all", "none"), default="all")
    parser.add_argument("--save-state", type=Path)
    parser.add_argument("--load-state", type=Path)
    args = parser.parse_args()
    if args.load_state:
        model, live = load(args.load_state)
    else:
        started = time.perf_counter()
        model, live = build(args.items, args.sessions, args.views)
        print(f"state built from {model.events:,} events in {time.perf_counter() - started:.1f} s")
    if args.save_state:
        save(model, live, args.save_state)
    warm, sessions = live[:50], live[50 : 50 + args.lists]
    for session in warm:  # first calls pay for imports and caches
        recommend(model, session_id=session, k=10)
    whole = per_list(lambda s: recommend(model, session_id=s, k=10), sessions, args.passes)
    if args.parts == "none":
        return
    print(f"recommend: {whole:,.0f} µs per list ({len(sessions):,} live sessions)")
    contexts: dict[str, Context] = {}
    for session in sessions:
        slot = model.sessions.lookup(session, model.clock)
        if slot is not None and model.sessions.has_events(slot):
            contexts[session] = components.context(model, slot, model.sessions.user_of(slot))
    named = list(contexts)
    for name, scorer in components.COMPONENTS.items():
        cost = per_list(functools.partial(score_one, scorer, model, contexts), named, args.passes)
        print(f"  {name:<13} {cost:7,.0f} µs")
    parts = {s: components.score_all(model, contexts[s]) for s in named}
    combine = per_list(lambda s: model.blend.combine(parts[s]), named, args.passes)
    print(f"  {'combine':<13} {combine:7,.0f} µs")


if __name__ == "__main__":
    main()
