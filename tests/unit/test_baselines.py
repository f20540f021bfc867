"""The baselines of `recsrv evaluate`: their formulas on sessions small enough to score by
hand, and the ts order of each session's items whatever order the steps arrive in."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

import pytest

from recsrv.evaluation.baselines import (
    ItemKnn,
    Pop,
    SequentialRules,
    SessionKnn,
    Stan,
    Step,
    TopFreq,
    VSessionKnn,
    Vstan,
    make_baselines,
)

E = math.exp(1.0)


def feed(baseline: Any, sessions: dict[str, str], user: str | None = None) -> float:
    """Each session's items one second apart, sessions one after the other; the last ts."""
    t = 0.0
    for session, items in sessions.items():
        for item in items:
            t += 1.0
            baseline.observe(Step(session, user, item, "view", t))
    return t


def approx(expected: dict[str, float]) -> Any:
    return pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_make_baselines_names_and_order() -> None:
    names = [baseline.name for baseline in make_baselines()]
    assert names == ["pop", "itemknn", "sr", "sknn", "vsknn", "stan", "vstan", "topfreq"]


# -- item-kNN, SR, SKNN ----------------------------------------------------------------


def test_item_knn_scores_are_cosines_with_the_last_item() -> None:
    knn = ItemKnn(Pop())
    feed(knn, {"s1": "ab", "s2": "abc", "s3": "c", "s4": "c", "now": "xa"})
    # Sessions holding a: s1 s2 now (3); b: s1 s2 (2); c: s2 s3 s4 (3); x: now (1).
    # Together with a: b twice, c once, x once.
    assert knn.scores("now", None, 0.0) == approx(
        {"b": 2 / math.sqrt(3 * 2), "c": 1 / math.sqrt(3 * 3), "x": 1 / math.sqrt(3 * 1)}
    )


def test_sr_weighs_by_distance_and_keeps_the_heaviest_rules() -> None:
    pop = Pop()
    sr = SequentialRules(pop, keep=2)
    for baseline in (pop, sr):
        feed(baseline, {"s1": "abcd", "s2": "ab", "now": "xa"})
    # a → b: 1 (s1) + 1 (s2); a → c: 1/2; a → d: 1/3; x → a: 1 (now).
    assert sr.rules["a"] == approx({"b": 2.0, "c": 0.5, "d": 1 / 3})
    assert sr.rules["x"] == {"a": 1.0}
    # The cut to the 2 heaviest is made on the full weights, before exclusion:
    assert sr.scores("now", None, 0.0) == {"b": 2.0, "c": 0.5}
    # so excluding b leaves c, and POP (a 3, b 2, …) tops up with what is not excluded.
    assert sr.recommend("now", None, 2, {"b", "x", "a"}, 0.0) == ["c", "d"]


def test_sr_counts_at_most_steps_back() -> None:
    sr = SequentialRules(Pop(), steps=2)
    feed(sr, {"s1": "abc", "s2": "ac", "s3": "ab"})
    # a → c at distance 2 in s1 counts 1/2; with steps=2, nothing reaches 3 back.
    assert sr.rules["a"] == {"b": 2.0, "c": 1.5}
    feed_more = SequentialRules(Pop(), steps=2)
    feed(feed_more, {"s": "abcd"})
    assert "d" not in feed_more.rules["a"]


def test_sknn_scores_are_summed_cosines_of_the_nearest() -> None:
    sknn = SessionKnn(Pop(), neighbors=2)
    feed(sknn, {"s1": "abz", "s2": "aby", "s3": "a", "s4": "cw", "now": "ab"})
    # cos(now, s1) = cos(now, s2) = 2 / (√2·√3); s3 (1 / (√2·1) ≈ 0.707 < 0.816) is
    # third and cut by neighbors=2; s4 shares nothing.
    sim = 2 / (math.sqrt(2) * math.sqrt(3))
    assert sknn.scores("now", None, 0.0) == approx({"a": 2 * sim, "b": 2 * sim, "y": sim, "z": sim})


# -- V-SKNN ----------------------------------------------------------------------------


VSKNN_SESSIONS = {"n1": "ad", "n2": "be", "n3": "ce", "s": "abac"}


def test_vsknn_by_hand() -> None:
    vsknn = VSessionKnn(Pop(), k=2, lambda_idf=1.0)
    feed(vsknn, VSKNN_SESSIONS)
    # s = a b a c, L = 4; a keeps its later position 3: w(a) = 3/4, w(b) = 2/4,
    # w(c) = 4/4; 3 distinct items.
    # sim(n1) = 3/4 / 3 = 1/4, sim(n2) = 2/4 / 3 = 1/6, sim(n3) = 1 / 3: k=2 keeps n3, n1.
    # step(n3) = 4 - 4 + 1 = 1 (c is last); step(n1) = 4 - 3 + 1 = 2 (a at 3).
    # idf over 4 sessions: a has 3 events, c 2, d 1, e 2.
    idf = {"a": math.log(4 / 3), "c": math.log(4 / 2), "d": math.log(4), "e": math.log(2)}
    n1, n3 = (1 / 4) / 2, (1 / 3) / 1
    expected = {"a": n1, "d": n1, "c": n3, "e": n3}
    assert vsknn.scores("s", None, 0.0) == approx(
        {item: value * (1 + idf[item]) for item, value in expected.items()}
    )
    # ≈ a 0.161, d 0.298, c 0.564, e 0.564: e ties c and c is excluded, then d, a.
    assert vsknn.recommend("s", None, 2, {"a", "b", "c"}, 0.0) == ["e", "d"]


def test_vsknn_takes_candidates_from_the_latest_sessions() -> None:
    vsknn = VSessionKnn(Pop(), sample_size=2, lambda_idf=0.0)
    feed(vsknn, VSKNN_SESSIONS)
    # n1, n2, n3 share an item with s; the 2 latest are n2 and n3, so d is never seen.
    # sim(n2) = 1/6 with step 4 - 2 + 1 = 3; sim(n3) = 1/3 with step 1.
    assert vsknn.scores("s", None, 0.0) == approx({"b": 1 / 18, "e": 1 / 18 + 1 / 3, "c": 1 / 3})


# -- STAN and VSTAN --------------------------------------------------------------------


# n1 = c a d (last ts 3), n2 = b a e (last ts 6), s = a b (ts 7, 8); asked at now = 10.
STAN_SESSIONS = {"n1": "cad", "n2": "bae", "s": "ab"}
LAMBDAS = {"lambda_spw": 1.0, "lambda_snh": 10.0, "lambda_inh": 1.0}


def stan_similarities() -> tuple[float, float]:
    # w(a) = e^((1-2)/1) = 1/e, w(b) = e^0 = 1; √Σw² = √(1 + 1/e²). |n1| = |n2| = 3.
    norm = math.sqrt(1 + E**-2)
    sim1 = (1 / E) / (norm * math.sqrt(3)) * math.exp(-(10 - 3) / 10)  # ≈ 0.0986
    sim2 = (1 / E + 1) / (norm * math.sqrt(3)) * math.exp(-(10 - 6) / 10)  # ≈ 0.4985
    return sim1, sim2


def test_stan_by_hand() -> None:
    stan = Stan(Pop(), **LAMBDAS)
    feed(stan, STAN_SESSIONS)
    sim1, sim2 = stan_similarities()
    # p* is the last position in n of an item s holds: a at 2 in both n1 and n2 (in n2,
    # b at 1 is the latest in s but not in n2). Items at distance 1 from p* get 1/e.
    assert stan.scores("s", None, 10.0) == approx(
        {
            "c": sim1 / E,
            "d": sim1 / E,
            "a": sim1 + sim2,
            "b": sim2 / E,
            "e": sim2 / E,
        }
    )


def test_stan_decays_by_the_absolute_age_of_a_neighbour() -> None:
    stan = Stan(Pop(), **LAMBDAS)
    feed(stan, {"n": "ab", "s": "a"})  # n's last ts is 2
    # sim = w(a) / (w(a)·√2) · e^(-4/10), whether n is 4 s older or 4 s newer than now.
    sim = 1 / math.sqrt(2) * math.exp(-0.4)
    expected = {"a": sim, "b": sim / E}
    assert stan.scores("s", None, 6.0) == approx(expected)
    assert stan.scores("s", None, -2.0) == approx(expected)


def test_vstan_by_hand() -> None:
    vstan = Vstan(Pop(), **LAMBDAS, lambda_ipw=1.0, lambda_idf=1.0)
    feed(vstan, STAN_SESSIONS)
    sim1, sim2 = stan_similarities()
    # idf over 3 sessions: a has 3 events (idf 0), b 2, c d e 1 each.
    boost = {"a": 1.0, "b": 1 + math.log(3 / 2), "c": 1 + math.log(3)}
    boost["d"] = boost["e"] = boost["c"]
    # ipw: the latest item of s (a b) that n1 holds is a, at 1: e^((1-2)/1) = 1/e;
    # n2 holds b, at 2: e^0 = 1.
    ipw1, ipw2 = 1 / E, 1.0
    expected = {
        "c": sim1 * ipw1 / E,
        "d": sim1 * ipw1 / E,
        "a": sim1 * ipw1 + sim2 * ipw2,
        "b": sim2 * ipw2 / E,
        "e": sim2 * ipw2 / E,
    }
    assert vstan.scores("s", None, 10.0) == approx(
        {item: value * boost[item] for item, value in expected.items()}
    )


# -- GP-TopFreq ------------------------------------------------------------------------


def test_topfreq_ranks_the_users_items_then_pop() -> None:
    pop = Pop()
    top = TopFreq(pop)
    steps = [
        Step("u-1", "u", "a", "view", 1.0),
        Step("u-1", None, "a", "purchase", 2.0),  # the session's user is still u
        Step("u-1", "u", "b", "add_to_cart", 3.0),
        Step("u-2", "u", "c", "view", 4.0),
        Step("anon", None, "d", "view", 5.0),
        Step("anon", None, "d", "view", 6.0),
        Step("anon", None, "e", "view", 7.0),
    ]
    for step in steps:
        pop.observe(step)
        top.observe(step)
    # Every kind counts once: a 2, b 1, c 1 for u.
    assert top.scores("u-3", "u", 8.0) == {"a": 2.0, "b": 1.0, "c": 1.0}
    assert top.scores("u-2", None, 8.0) == {"a": 2.0, "b": 1.0, "c": 1.0}
    # b and c tie, by id; then POP (a 2, d 2, b, c, e) fills with d.
    assert top.recommend("u-3", "u", 4, set(), 8.0) == ["a", "b", "c", "d"]
    assert top.recommend("u-2", "u", 2, {"c", "a"}, 8.0) == ["b", "d"]
    # Anonymous: nothing of its own to recommend, so POP without its items.
    assert top.scores("anon", None, 8.0) == {}
    assert top.recommend("anon", None, 2, {"d", "e"}, 8.0) == ["a", "b"]


# -- late steps ------------------------------------------------------------------------


def test_a_late_step_is_placed_at_its_time() -> None:
    knn, sr = ItemKnn(Pop()), SequentialRules(Pop())
    for baseline in (knn, sr):
        baseline.observe(Step("s", None, "a", "view", 1.0))
        baseline.observe(Step("s", None, "c", "view", 3.0))
        baseline.observe(Step("s", None, "b", "view", 2.0))  # late
        baseline.observe(Step("s", None, "d", "view", 3.0))  # ties c: after it
    assert knn.sequences.get("s") == ["a", "b", "c", "d"]
    assert sr.sequences.get("s") == ["a", "b", "c", "d"]
    # The rules are those of a b c d, none left of the arrival order a c b.
    assert sr.rules["a"] == approx({"b": 1.0, "c": 1 / 2, "d": 1 / 3})
    assert sr.rules["b"] == approx({"c": 1.0, "d": 1 / 2})
    assert sr.rules["c"] == approx({"d": 1.0})
    assert dict(sr.rules["d"]) == {}


FACTORIES: dict[str, Callable[[Pop], Any]] = {
    "itemknn": ItemKnn,
    "sr": SequentialRules,
    "sknn": SessionKnn,
    "vsknn": VSessionKnn,
    "stan": Stan,
    "vstan": Vstan,
    "topfreq": TopFreq,
}


def late_file() -> tuple[list[Step], list[Step]]:
    """Steps in ts order, and the same steps in a file order with many late ones."""
    rng = random.Random(7)
    steps = []
    for n in range(30):
        user = f"u{n % 4}"
        for position in range(rng.randint(2, 6)):
            item = f"i{rng.randint(0, 11)}"
            steps.append(Step(f"s{n}", user, item, "view", 100.0 * n + 10.0 * position))
    shuffled = steps[:]
    rng.shuffle(shuffled)
    return steps, shuffled


@pytest.mark.parametrize("name", FACTORIES)
def test_file_order_does_not_change_the_scores(name: str) -> None:
    in_order, in_file = late_file()
    assert in_order != in_file
    sorted_line, file_line = FACTORIES[name](Pop()), FACTORIES[name](Pop())
    for step in in_order:
        sorted_line.observe(step)
    for step in in_file:
        file_line.observe(step)
    sessions = sorted({(step.session_id, step.user_id) for step in in_order})
    checked = 0
    for session, user in sessions:
        expected = sorted_line.scores(session, user, 5000.0)
        assert file_line.scores(session, user, 5000.0) == pytest.approx(expected), session
        checked += bool(expected)
    assert checked > 20
