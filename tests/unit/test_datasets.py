"""The evaluation data scripts: MovieLens and Instacart converters, synthetic generator.

Each converter runs on a tiny sample built here, never on the packages' data.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import itertools
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import pytest

from recsrv.evaluation.dataset import read_events, select_test_sessions

ROOT = Path(__file__).resolve().parents[2]
FIELDS = {"type", "event_id", "session_id", "user_id", "item_id", "ts"}


def script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def key(events: list[dict[str, Any]]) -> list[bytes]:
    return sorted(orjson.dumps(event, option=orjson.OPT_SORT_KEYS) for event in events)


# --- MovieLens ------------------------------------------------------------------------

# u.data layout, not sorted by time, as the real file is.
U_DATA = "\n".join(
    [
        "7\t50\t5\t1000",
        "3\t10\t2\t5000",
        "7\t60\t3\t1600",  # 600 s after user 7's first: same session
        "7\t70\t4\t4000",  # 2,400 s after the previous one: a new session
        "3\t20\t4\t5000",  # same second as user 3's first: file order breaks the tie
        "7\t80\t1\t500",  # user 7's earliest rating, 500 s before the first row
    ]
)


def movielens_sample() -> tuple[ModuleType, list[Any]]:
    module = script("movielens_events")
    return module, module.read_tsv(io.StringIO(U_DATA))


def test_movielens_original_keeps_the_file_order_and_maps_each_rating() -> None:
    module, ratings = movielens_sample()
    events = module.rating_events(ratings, "original")
    assert all(set(event) == FIELDS for event in events)
    assert [(e["user_id"], e["item_id"]) for e in events] == [
        ("7", "50"),
        ("3", "10"),
        ("7", "60"),
        ("7", "70"),
        ("3", "20"),
        ("7", "80"),
    ]
    by_item = {e["item_id"]: e for e in events}
    assert [by_item[i]["type"] for i in ("50", "10", "60", "70", "20", "80")] == [
        "click",  # 5
        "view",  # 2
        "view",  # 3
        "click",  # 4
        "click",  # 4
        "view",  # 1
    ]
    assert by_item["60"]["ts"] == 1600
    assert len({e["event_id"] for e in events}) == len(events)


def test_movielens_sessions_follow_the_thirty_minute_gap_rule() -> None:
    module, ratings = movielens_sample()
    sessions = {e["item_id"]: e["session_id"] for e in module.rating_events(ratings)}
    # User 7 in time order: 80 (500), 50 (1000), 60 (1600) | 70 (4000).
    assert sessions["80"] == sessions["50"] == sessions["60"] == "ml-7-1"
    assert sessions["70"] == "ml-7-2"
    assert sessions["10"] == sessions["20"] == "ml-3-1"


def test_movielens_sessions_can_be_cut_by_calendar_day_or_by_user() -> None:
    module, ratings = movielens_sample()
    by_day = {e["item_id"]: e["session_id"] for e in module.rating_events(ratings, sessions="day")}
    # Every rating of the sample falls on day 0 of the epoch: one session per user.
    assert by_day == {
        "50": "ml-7-d0",
        "60": "ml-7-d0",
        "70": "ml-7-d0",
        "80": "ml-7-d0",
        "10": "ml-3-d0",
        "20": "ml-3-d0",
    }
    late = [*ratings, module.Rating("7", "90", 5, 86400 + 10)]
    assert module.rating_events(late, sessions="day")[-1]["session_id"] == "ml-7-d1"
    by_user = module.rating_events(late, "grouped", sessions="user")
    assert {e["session_id"] for e in by_user} == {"ml-3", "ml-7"}
    # The cut changes the session ids only.
    gap = module.rating_events(late, "grouped")
    assert [{**e, "session_id": ""} for e in by_user] == [{**e, "session_id": ""} for e in gap]
    with pytest.raises(ValueError, match="sessions must be"):
        module.rating_events(ratings, sessions="week")


def test_movielens_grouped_writes_user_after_user_in_time_order() -> None:
    module, ratings = movielens_sample()
    grouped = module.rating_events(ratings, "grouped")
    assert [(e["user_id"], e["item_id"]) for e in grouped] == [
        ("3", "10"),
        ("3", "20"),
        ("7", "80"),
        ("7", "50"),
        ("7", "60"),
        ("7", "70"),
    ]
    assert key(grouped) == key(module.rating_events(ratings, "original"))
    assert grouped == module.rating_events(movielens_sample()[1], "grouped")


def test_movielens_command_reads_a_u_data_file(tmp_path: Path) -> None:
    source = tmp_path / "u.data"
    source.write_text(U_DATA + "\n")
    out = tmp_path / "events.jsonl"
    command = [sys.executable, str(ROOT / "scripts/movielens_events.py"), "--tsv", str(source)]
    subprocess.run([*command, "--order", "grouped", "-o", str(out)], check=True, timeout=60)
    lines = out.read_bytes().splitlines()
    assert [orjson.loads(line)["item_id"] for line in lines] == ["10", "20", "80", "50", "60", "70"]


# --- Instacart ------------------------------------------------------------------------

INSTACART = (
    ",order_id,user_id,order_number,order_dow,order_hour_of_day,"
    "days_since_prior_order,product_id,add_to_cart_order,reordered\n"
    + "\n".join(
        [
            "0,10,7,1,2,8,,100,1.0,0.0",  # user 7's first order, at 8:00 on day 0
            "1,11,7,2,4,9,3.0,200,1.0,1.0",  # three days later
            "2,20,5,1,1,6,,300,1.0,0.0",  # user 5's first order, at 6:00 on day 0
            "3,20,5,1,1,6,,400,2.0,0.0",
        ]
    )
)


def instacart(order: str = "time", anonymous: bool = False) -> list[dict[str, Any]]:
    module = script("instacart_events")
    orders = module.read_orders(csv.DictReader(io.StringIO(INSTACART)))
    events: list[dict[str, Any]] = module.order_events(orders, order, anonymous)
    return events


def test_instacart_grouped_keeps_users_together_and_time_sorts() -> None:
    timed = instacart("time")
    assert [e["session_id"] for e in timed] == ["order-20"] * 3 + ["order-10"] * 2 + [
        "order-11"
    ] * 2
    grouped = instacart("grouped")
    assert [e["session_id"] for e in grouped] == ["order-10"] * 2 + ["order-11"] * 2 + [
        "order-20"
    ] * 3
    assert key(grouped) == key(timed)


def test_instacart_anonymous_drops_every_user_id_and_nothing_else() -> None:
    anonymous = instacart(anonymous=True)
    named = instacart()
    assert all("user_id" not in event for event in anonymous)
    assert {e["user_id"] for e in named} == {"7", "5"}
    for event in named:
        del event["user_id"]
    assert anonymous == named


# --- Synthetic ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sequential", "cooccurrence"])
def test_generator_is_deterministic_and_both_orders_hold_the_same_events(kind: str) -> None:
    module = script("synthetic_events")
    timed = module.generate(kind, 40, seed=3, order="time")
    assert timed == module.generate(kind, 40, seed=3, order="time")
    assert timed != module.generate(kind, 40, seed=4, order="time")
    grouped = module.generate(kind, 40, seed=3, order="grouped")
    assert key(grouped) == key(timed)
    assert all(set(event) == FIELDS for event in timed)
    assert len({e["event_id"] for e in timed}) == len(timed)
    assert [e["ts"] for e in timed] == sorted(e["ts"] for e in timed)
    # Grouped: each session's events together, sessions by start, ts rising inside.
    runs = [session for session, _ in itertools.groupby(e["session_id"] for e in grouped)]
    assert len(runs) == len(set(runs)) == 40
    starts = {}
    for event in grouped:
        starts.setdefault(event["session_id"], event["ts"])
    assert list(starts.values()) == sorted(starts.values())
    # Sessions overlap in time, so the time order interleaves them.
    switches = sum(a["session_id"] != b["session_id"] for a, b in itertools.pairwise(timed))
    assert switches > len(runs)


def test_sequential_streams_follow_successors_and_cooccurrence_ones_do_not() -> None:
    module = script("synthetic_events")

    def asymmetry(events: list[dict[str, Any]]) -> float:
        """How much more often a→b is seen than b→a: 1 for a pure chain, ~0 unordered."""
        by_session: dict[str, list[str]] = {}
        for event in events:
            by_session.setdefault(event["session_id"], []).append(event["item_id"])
        pairs: Counter[tuple[str, str]] = Counter()
        for items in by_session.values():
            pairs.update(itertools.pairwise(items))
        unordered = {tuple(sorted(pair)) for pair in pairs}
        gap = sum(abs(pairs[a, b] - pairs[b, a]) for a, b in unordered)
        return gap / sum(pairs.values())

    sequential = module.generate("sequential", 400, seed=1, order="grouped", items=30)
    cooccurrence = module.generate("cooccurrence", 400, seed=1, order="grouped", items=30)
    assert asymmetry(sequential) > 0.6, asymmetry(sequential)
    assert asymmetry(cooccurrence) < 0.4, asymmetry(cooccurrence)


def test_clickstream_matches_the_diginetica_figures_it_is_calibrated_to() -> None:
    module = script("synthetic_events")
    timed = module.generate("clickstream", 2000, seed=1, order="time")
    assert timed == module.generate("clickstream", 2000, seed=1, order="time")
    assert timed != module.generate("clickstream", 2000, seed=2, order="time")
    grouped = module.generate("clickstream", 2000, seed=1, order="grouped")
    assert key(grouped) == key(timed)
    assert [e["ts"] for e in timed] == sorted(e["ts"] for e in timed)
    # Anonymous, as Diginetica's sessions.
    assert all(set(event) == FIELDS - {"user_id"} for event in timed)
    assert len({e["event_id"] for e in timed}) == len(timed)
    by_session: dict[str, list[str]] = {}
    for event in grouped:
        by_session.setdefault(event["session_id"], []).append(event["item_id"])
    lengths = [len(items) for items in by_session.values()]
    assert len(lengths) == 2000 and min(lengths) >= 2
    mean = sum(lengths) / len(lengths)
    assert abs(mean - 4.85) <= 0.15 * 4.85, mean
    assert max(lengths) >= 15  # a long tail
    # Heavy-tailed popularity: the top 1 % of the items seen take over 10 % of clicks.
    clicks = Counter(e["item_id"] for e in timed)
    assert len(clicks) <= 2000 // 5
    top = clicks.most_common(max(1, len(clicks) // 100))
    assert sum(count for _, count in top) > 0.10 * len(timed)
    # Some repeat clicks within a session.
    repeats = sum(len(items) - len(set(items)) for items in by_session.values())
    assert 0 < repeats < 0.5 * len(timed)


@pytest.mark.parametrize("kind", ["sequential", "cooccurrence"])
def test_committed_samples_are_what_the_generator_writes(kind: str) -> None:
    module = script("synthetic_events")
    events = module.generate(kind, 80, seed=1, order="grouped")
    committed = (ROOT / f"tests/data/{kind}_small.jsonl").read_bytes().splitlines()
    assert 300 <= len(committed) <= 600
    assert [orjson.loads(line) for line in committed] == events


# --- History first ----------------------------------------------------------------------


def test_history_first_moves_the_test_sessions_after_the_rest_keeping_each_order(
    tmp_path: Path,
) -> None:
    # Rows shuffled in time, as u.data's are: sessions a (t 100), b (t 200), c (t 900)
    # and d (t 950); time:0.5 tests the sessions that start after the median start.
    def line(session: str, item: str, ts: int) -> bytes:
        return (
            orjson.dumps({"type": "view", "session_id": session, "item_id": item, "ts": ts}) + b"\n"
        )

    rows = [
        line("c", "7", 905),
        line("a", "1", 100),
        line("d", "9", 950),
        orjson.dumps({"type": "catalog.upsert", "item": {"item_id": "1"}, "ts": 1}) + b"\n",
        line("c", "8", 900),
        line("b", "2", 200),
        line("a", "3", 130),
    ]
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_bytes(b"".join(rows) + b"\n")
    assert script("history_first").main([str(source), "--split", "time:0.5", "-o", str(out)]) == 0
    assert select_test_sessions(read_events(source), "time:0.5") == {"c", "d"}
    written = out.read_bytes().splitlines(keepends=True)
    # History (a, the catalog line, b and the blank line) in file order, then c and d.
    assert written == [rows[1], rows[3], rows[5], rows[6], b"\n", rows[0], rows[2], rows[4]]
    assert select_test_sessions(read_events(out), "time:0.5") == {"c", "d"}
