"""recsrv evaluate: metric arithmetic, splits, baselines and the replay protocol."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from recsrv.config import ModelConfig, SessionsConfig
from recsrv.evaluation.baselines import ItemKnn, Pop, SequentialRules, SessionKnn, Step
from recsrv.evaluation.dataset import SplitError, parse_lines, select_test_sessions
from recsrv.evaluation.metrics import Tally, popularity_ranks
from recsrv.evaluation.runner import evaluate

T0 = 1_700_000_000.0


def line(**event: Any) -> bytes:
    return orjson.dumps(event)


def view(session: str, item: str, t: float, user: str | None = None) -> bytes:
    return line(type="view", session_id=session, item_id=item, ts=T0 + t, user_id=user)


# -- metrics -------------------------------------------------------------------------


def test_hit_rate_and_mrr_by_hand() -> None:
    tally = Tally(k=3)
    ranks = {"a": 1, "b": 2, "c": 3, "d": 4}
    tally.record("a", ["a", "b", "c"], 0.001, ranks)  # rank 1
    tally.record("c", ["a", "b", "c"], 0.001, ranks)  # rank 3
    tally.record("z", ["a", "b", "c"], 0.001, ranks)  # missed
    tally.record("b", ["d", "b"], 0.001, ranks)  # rank 2, short list
    assert tally.ranks == [1, 3, 0, 2]
    assert tally.hit_rate() == pytest.approx(3 / 4)
    assert tally.mrr() == pytest.approx((1 + 1 / 3 + 0 + 1 / 2) / 4)
    assert tally.hit_rate(1) == pytest.approx(1 / 4)
    assert tally.mrr(2) == pytest.approx((1 + 1 / 2) / 4)
    assert tally.coverage(catalog_size=8) == pytest.approx(4 / 8)
    # Listed: a b c, a b c, a b c, d b → ranks 1+2+3 three times, then 4+2.
    assert tally.mean_popularity_rank() == pytest.approx((6 * 3 + 6) / 11)
    assert tally.ms_per_list() == pytest.approx(1.0)


def test_only_the_top_k_count() -> None:
    tally = Tally(k=2)
    tally.record("c", ["a", "b", "c"], 0.0, {})
    assert tally.ranks == [0]
    assert tally.recommended == {"a", "b"}
    assert tally.mean_popularity_rank() == 1.0  # unranked items rank after all (0 + 1)


def test_popularity_ranks_most_frequent_first() -> None:
    assert popularity_ranks({"x": 2, "y": 5, "a": 2}) == {"y": 1, "a": 2, "x": 3}


# -- reading and splitting -------------------------------------------------------------


def test_invalid_lines_are_reported_with_their_numbers() -> None:
    data = parse_lines(
        [view("s", "a", 0), b"", b"{not json", line(type="view", session_id="s"), view("s", "b", 1)]
    )
    assert len(data.events) == 2
    assert [number for number, _ in data.invalid] == [3, 4]
    assert "item_id" in data.invalid[1][1]


def test_last_session_per_user_split() -> None:
    data = parse_lines(
        [
            view("u1-a", "x", 0, "u1"),
            view("u2-a", "x", 5, "u2"),
            view("u1-b", "y", 10, "u1"),
            view("anon", "y", 20),
            view("u1-a", "z", 30, "u1"),  # a late event does not move u1-a's start
        ]
    )
    assert select_test_sessions(data, "last-session-per-user") == {"u1-b", "u2-a"}


def test_time_split_takes_sessions_starting_after_the_quantile() -> None:
    data = parse_lines([view(f"s{n}", "x", 10 * n) for n in range(10)])
    # Starts 0, 10, …, 90: the 0.8 quantile is 72, so s8 and s9 start after it.
    assert select_test_sessions(data, "time:0.8") == {"s8", "s9"}


@pytest.mark.parametrize("split", ["time:1.5", "time:x", "time:0", "random"])
def test_bad_splits_are_refused(split: str) -> None:
    data = parse_lines([view("s", "x", 0)])
    with pytest.raises(SplitError):
        select_test_sessions(data, split)


def test_last_session_split_needs_user_ids() -> None:
    with pytest.raises(SplitError, match=r"time:0\.8"):
        select_test_sessions(parse_lines([view("s", "x", 0)]), "last-session-per-user")


# -- baselines -------------------------------------------------------------------------


def feed(baseline: Any, sessions: dict[str, str]) -> None:
    t = 0.0
    for session, items in sessions.items():
        for item in items:
            t += 1.0
            baseline.observe(Step(session, None, item, "view", t))


def test_pop_ranks_by_count_and_excludes() -> None:
    pop = Pop()
    feed(pop, {"s1": "abb", "s2": "bccc", "s3": "c"})
    assert pop.recommend("new", None, 3, set(), 0.0) == ["c", "b", "a"]
    assert pop.recommend("new", None, 3, {"c"}, 0.0) == ["b", "a"]
    assert pop.fill(["a"], 3, set()) == ["a", "c", "b"]


def test_item_knn_uses_cosine_of_the_last_item() -> None:
    knn = ItemKnn(Pop())
    # a is in 2 sessions, b in 2 (both with a), c in 4 (one with a).
    feed(knn, {"s1": "ab", "s2": "abc", "s3": "c", "s4": "c", "now": "xa"})
    # a's sessions: s1, s2, now → 3. cos(a,b) = 2/sqrt(3*2); cos(a,c) = 1/sqrt(3*3).
    assert knn.recommend("now", None, 2, {"x", "a"}, 0.0) == ["b", "c"]


def test_sequential_rules_weigh_by_distance() -> None:
    sr = SequentialRules(Pop(), steps=2)
    feed(sr, {"s1": "abc", "s2": "ac", "s3": "ab", "now": "a"})
    # a→b: 1 (s1) + 1 (s3) = 2; a→c: 1/2 (s1) + 1 (s2) = 1.5; the third is POP's.
    assert sr.rules["a"] == {"b": 2.0, "c": 1.5}
    assert sr.recommend("now", None, 2, {"a"}, 0.0) == ["b", "c"]


def test_session_knn_scores_items_of_similar_sessions() -> None:
    sknn = SessionKnn(Pop(), neighbors=2)
    feed(sknn, {"s1": "abz", "s2": "aby", "s3": "cw", "now": "ab"})
    # s1 and s2 share {a, b} with now; s3 shares nothing. z and y tie, by id.
    assert sknn.recommend("now", None, 2, {"a", "b"}, 0.0) == ["y", "z"]


# -- the replay ------------------------------------------------------------------------


def shop_lines() -> list[bytes]:
    """Sessions that all go a → b → c; the test session t repeats a after b."""
    lines = []
    for n in range(20):
        for step, item in enumerate("abc"):
            lines.append(view(f"train{n}", item, 100 * n + step, f"u{n}"))
    lines += [view("t", "a", 5000, "u0"), view("t", "b", 5001), view("t", "a", 5002)]
    lines += [view("t", "c", 5003)]
    return lines


def test_evaluate_predicts_each_next_item_and_skips_repeats() -> None:
    data = parse_lines(shop_lines())
    outcome = evaluate(data, {"t"}, 2, ModelConfig(), SessionsConfig())
    # Predictions: after [a] → b, after [a, b] → a is a repeat (skipped), then → c.
    assert outcome.n == 2
    assert outcome.skipped == 1
    assert set(outcome.results) == {"recsrv", "pop", "itemknn", "sr", "sknn"}
    # Every line learnt a → b → c from the 20 training sessions.
    for name in ("recsrv", "sr", "sknn"):
        assert outcome.results[name]["hr"] == 1.0, name
    assert outcome.tallies["recsrv"].ranks == [1, 1]


def test_the_command_prints_json_and_draws_the_plot(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join([*shop_lines(), b"{broken"]) + b"\n")
    plot = tmp_path / "plot.png"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "recsrv", "evaluate", str(events), "--split", "time:0.9"),
            *("--json", "--plot", str(plot), "-k", "5"),
        ],
        capture_output=True,
        check=False,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr.decode()
    report = orjson.loads(done.stdout)
    assert report["k"] == 5
    # Starts 0, 100, …, 1900 and 5000: the 0.9 quantile is 1800, so train19 and t are
    # tested, two predictions each.
    assert report["n"] == 4
    assert set(report["results"]) == {"recsrv", "pop", "itemknn", "sr", "sknn"}
    for result in report["results"].values():
        assert {"hr", "mrr", "coverage"} <= set(result)
    assert b"line 65: not JSON" in done.stderr
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_command_explains_a_missing_file(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "recsrv", "evaluate", str(tmp_path / "nope.jsonl")],
        capture_output=True,
        check=False,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 1
    assert b"cannot read" in done.stderr
    assert b"Traceback" not in done.stderr
