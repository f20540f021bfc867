"""recsrv evaluate: metric arithmetic, splits, baselines and the replay protocol."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from recsrv.config import ModelConfig, SessionsConfig
from recsrv.errors import RecsrvError
from recsrv.evaluation import command
from recsrv.evaluation.baselines import (
    ItemKnn,
    Pop,
    SequentialRules,
    SessionKnn,
    Step,
    make_baselines,
)
from recsrv.evaluation.dataset import SplitError, parse_lines, select_test_sessions
from recsrv.evaluation.metrics import Disorder, Tally, popularity_ranks
from recsrv.evaluation.runner import (
    choose_baselines,
    evaluate,
    replay_order,
    sessions_in_ts_order,
)
from recsrv.events import Interaction
from recsrv.model import Model

T0 = 1_700_000_000.0
BASELINES = [baseline.name for baseline in make_baselines()]


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
    tally.learning_seconds = 0.5
    assert tally.summary(8)["seconds"] == pytest.approx(0.504)


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
    assert set(outcome.results) == {"recsrv", *BASELINES}
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
    assert (report["order"], report["out_of_order"], report["beyond_lateness"]) == ("file", 0, 0)
    assert {"weights", "hr", "mrr", "predictions"} <= set(report["blend"])
    assert set(report["results"]) == {"recsrv", *BASELINES}
    for result in report["results"].values():
        assert {"hr", "mrr", "coverage", "seconds"} <= set(result)
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


# -- replay order, lateness counts, blend report, chosen baselines ----------------------


def grouped_lines() -> list[bytes]:
    """A file exported by session: each session's lines together, while the sessions'
    times interleave (s<n> goes a, b, c, d at n, n + 20, n + 40, n + 60). The test
    session t (a, b, c, d at 30 … 33) is written out of its own order: c, a, b, d."""
    lines = []
    for n in range(12):
        lines += [view(f"s{n}", item, n + 20 * step, f"u{n}") for step, item in enumerate("abcd")]
        if n == 6:
            lines += [view("t", item, 30 + "abcd".index(item), "u99") for item in "cabd"]
    return lines


def test_the_file_order_is_kept_and_time_order_sorts_stably() -> None:
    data = parse_lines(grouped_lines())
    file_times = [event.ts - T0 for event in data.events]
    assert file_times[:8] == [0, 20, 40, 60, 1, 21, 41, 61]
    in_file = replay_order(data.events, "file", set())
    assert in_file == data.events
    in_time = replay_order(data.events, "time", set())
    assert [event.ts for event in in_time] == sorted(event.ts for event in data.events)
    # Equal times keep their file order.
    same = parse_lines([view("x", "a", 5), view("y", "b", 1), view("z", "c", 5)])
    assert [e.session_id for e in replay_order(same.events, "time", set()) if _is(e)] == [
        "y",
        "x",
        "z",
    ]
    with pytest.raises(RecsrvError, match="unknown order"):
        replay_order(data.events, "random", set())


def _is(event: object) -> bool:
    return type(event) is Interaction


def test_a_test_session_is_replayed_in_its_own_ts_order_in_the_same_positions() -> None:
    data = parse_lines(
        [
            view("t", "x", 3),
            view("o", "p", 9),
            view("t", "y", 1),
            view("t", "w", 1),  # the same time as y: stays after it
            view("o", "q", 0),  # not a test session: left where it is
            view("t", "z", 2),
        ]
    )
    replay = sessions_in_ts_order(data.events, {"t"})
    items = [(e.session_id, e.item_id) for e in replay if type(e) is Interaction]
    assert items == [("t", "y"), ("o", "p"), ("t", "w"), ("t", "z"), ("o", "q"), ("t", "x")]


def test_file_and_time_order_ask_the_same_predictions() -> None:
    data = parse_lines(grouped_lines())
    by_file = evaluate(data, {"t"}, 3, ModelConfig(), SessionsConfig())
    by_time = evaluate(data, {"t"}, 3, ModelConfig(), SessionsConfig(), order="time")
    # t in its own order, a → b → c → d, whatever the file says (c, a, b, d).
    expected = [("t", "b"), ("t", "c"), ("t", "d")]
    assert by_file.targets == by_time.targets == expected
    assert by_file.n == by_time.n == 3
    assert by_file.skipped == by_time.skipped == 0
    assert (by_file.order, by_time.order) == ("file", "time")
    assert by_time.out_of_order == 0
    assert by_file.out_of_order > 0
    assert by_file.events == by_time.events == len(data.events)


def test_out_of_order_and_beyond_lateness_counted_on_a_hand_made_file() -> None:
    # Bound: ttl_s + allowed_lateness_s = 15 s behind the newest.
    sessions = SessionsConfig(ttl_s=10, allowed_lateness_s=5)
    times = [100, 90, 120, 104, 105, 120, 200, 185, 184]
    data = parse_lines([view(f"s{n}", "a", t) for n, t in enumerate(times)])
    # 90: 10 behind 100, late. 104: 16 behind 120, beyond. 105: 15 behind, late.
    # 120: the newest again, in order. 185: 15 behind 200, late. 184: beyond.
    outcome = evaluate(data, set(), 3, ModelConfig(), sessions)
    assert (outcome.events, outcome.out_of_order, outcome.beyond_lateness) == (9, 5, 2)
    assert evaluate(data, set(), 3, ModelConfig(), sessions, order="time").out_of_order == 0


def test_disorder_never_counts_an_event_without_time() -> None:
    disorder = Disorder(bound=1.0)
    for ts in (5.0, None, 3.0, 4.5, None, 6.0):
        disorder.see(ts)
    assert (disorder.events, disorder.out_of_order, disorder.beyond_lateness) == (6, 2, 1)
    assert disorder.newest == 6.0


def test_the_blend_line_lists_weights_largest_first() -> None:
    report = {
        "weights": {"sr": 0.3, "sknn": 0.41, "cooccurrence": 0.29},
        "hr": 0.51234,
        "mrr": 0.25,
        "predictions": 1234,
    }
    assert command.blend_line(report) == (
        "blend weights: sknn 0.41, sr 0.30, cooccurrence 0.29 "
        "(prequential HR@20 0.512, MRR@20 0.250 over 1,234 predictions)"
    )
    assert command.blend_line({"weights": {}, "hr": 0.0, "mrr": 0.0, "predictions": 0}) == ""


def test_the_report_shows_the_blend_after_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    data = parse_lines(shop_lines())
    weights: dict[str, float] = {}
    seen: list[int] = []

    def blend_report(model: Model) -> dict[str, Any]:
        seen.append(model.stats()["items"])  # asked after the whole file was learnt
        return {"weights": dict(weights), "hr": 0.5, "mrr": 0.375, "predictions": 8}

    monkeypatch.setattr(Model, "blend_report", blend_report)
    plain = evaluate(data, {"t"}, 2, ModelConfig(), SessionsConfig())
    assert "blend" not in command._table(plain, Path("f.jsonl"), "s")
    weights.update(sr=0.75, sknn=0.25)
    outcome = evaluate(data, {"t"}, 2, ModelConfig(), SessionsConfig())
    assert seen == [3, 3]
    assert outcome.blend["weights"] == {"sr": 0.75, "sknn": 0.25}
    table = command._table(outcome, Path("f.jsonl"), "s").splitlines()
    assert table[-1] == (
        "blend weights: sr 0.75, sknn 0.25 "
        "(prequential HR@20 0.500, MRR@20 0.375 over 8 predictions)"
    )
    assert command._json(outcome, "s")["blend"] == outcome.blend


def test_chosen_baselines_keep_pop_which_tops_up_their_lists() -> None:
    assert [b.name for b in choose_baselines(None)] == BASELINES
    assert [b.name for b in choose_baselines(["sknn", "sr"])] == ["pop", "sr", "sknn"]
    with pytest.raises(RecsrvError, match="unknown baseline nope: choose from pop, "):
        choose_baselines(["sr", "nope"])
    # x and y share no session with a, b or c: only POP's fill-in can list them.
    elsewhere = [view("other", item, 3000 + n, "u0") for n, item in enumerate("xyx")]
    data = parse_lines(elsewhere + shop_lines())
    every = evaluate(data, {"t"}, 5, ModelConfig(), SessionsConfig())
    some = evaluate(data, {"t"}, 5, ModelConfig(), SessionsConfig(), baselines=["sknn"])
    assert set(some.results) == {"recsrv", "pop", "sknn"}
    # The same lists as in the full run: POP still learnt every step for the fill-in.
    assert some.tallies["sknn"].recommended == every.tallies["sknn"].recommended
    assert some.tallies["sknn"].recommended == {"b", "c", "x", "y"}
    for name, result in some.results.items():
        tally = some.tallies[name]
        assert tally.learning_seconds > 0.0, name
        assert result["seconds"] == pytest.approx(tally.seconds + tally.learning_seconds)
