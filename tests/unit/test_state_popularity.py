import numpy as np
import pytest

from recsrv.state.popularity import LEADERS, Popularity

HOUR = 3600.0
T0 = 1.7e9


def test_score_halves_after_one_half_life() -> None:
    popularity = Popularity(half_life_s=HOUR, capacity=4)
    popularity.add(0, 6.0, T0)
    assert popularity.current(0, T0) == pytest.approx(6.0)
    assert popularity.current(0, T0 + HOUR) == pytest.approx(3.0)
    assert popularity.current(0, T0 + 2 * HOUR) == pytest.approx(1.5)


def test_older_events_add_less_and_order_of_arrival_does_not_matter() -> None:
    in_order = Popularity(half_life_s=HOUR, capacity=2)
    in_order.add(0, 1.0, T0 - HOUR)
    in_order.add(0, 1.0, T0)
    shuffled = Popularity(half_life_s=HOUR, capacity=2)
    shuffled.add(0, 1.0, T0)
    shuffled.add(0, 1.0, T0 - HOUR)
    assert in_order.current(0, T0) == pytest.approx(1.5)
    assert shuffled.current(0, T0) == pytest.approx(1.5)


def test_rebase_keeps_scores_finite_and_right() -> None:
    popularity = Popularity(half_life_s=60.0, capacity=2)
    for step in range(300):
        popularity.add(0, 1.0, T0 + 60.0 * step)
    popularity.add(1, 1.0, T0)  # ancient by now: adds (almost) nothing
    now = T0 + 60.0 * 299
    assert np.isfinite(popularity.scores).all()
    assert popularity.current(0, now) == pytest.approx(2.0)
    assert popularity.current(1, now) == pytest.approx(0.0, abs=1e-60)


def test_fresh_activity_overtakes_old_activity() -> None:
    popularity = Popularity(half_life_s=HOUR, capacity=4)
    popularity.add(0, 6.0, T0)  # one purchase, three half-lives ago at read time
    popularity.add(1, 1.0, T0 + 3 * HOUR)  # one view now
    items, scores = popularity.top(2, np.ones(2, dtype=np.bool_), T0 + 3 * HOUR)
    assert items.tolist() == [1, 0]
    assert scores.tolist() == pytest.approx([1.0, 0.75])


def test_top_respects_the_mask_and_lists_cold_items_last_in_index_order() -> None:
    popularity = Popularity(half_life_s=HOUR, capacity=8)
    for idx, weight in ((1, 1.0), (2, 3.0), (4, 2.0)):
        popularity.add(idx, weight, T0)
    eligible = np.array([True, True, True, True, False, True])
    items, scores = popularity.top(5, eligible, T0)
    assert items.tolist() == [2, 1, 0, 3, 5]
    assert scores.tolist() == pytest.approx([3.0, 1.0, 0.0, 0.0, 0.0])
    in_category = np.array([False, True, False, False, True, False])
    assert popularity.top(3, in_category, T0)[0].tolist() == [4, 1]


@pytest.mark.parametrize("mask_share", [1.0, 0.5, 0.05, 0.01])
def test_leader_set_gives_the_same_top_k_as_a_full_sort(mask_share: float) -> None:
    rng = np.random.default_rng(7)
    n = 4 * LEADERS
    popularity = Popularity(half_life_s=HOUR, capacity=n)
    for step in range(20_000):
        skewed = int(rng.pareto(1.0) * 20) % n
        idx = skewed if step % 2 else int(rng.integers(n))
        popularity.add(idx, 1.0 + step % 3, T0 + step)
    now = T0 + 20_000
    eligible = rng.random(n) < mask_share
    items, scores = popularity.top(50, eligible, now)
    decayed = popularity.scores * popularity.scale.read_factor(now)
    positive = np.flatnonzero(eligible & (decayed > 0))
    expected = positive[np.lexsort((positive, -decayed[positive]))][:50]
    if len(expected) < 50:
        cold = np.flatnonzero(eligible & (decayed <= 0))[: 50 - len(expected)]
        expected = np.concatenate((expected, cold))
    assert items.tolist() == expected.tolist()
    assert scores.tolist() == pytest.approx(decayed[expected].tolist())
    assert popularity.leader_count == LEADERS
    leaders = set(popularity.leaders.tolist())
    assert set(np.argsort(-popularity.scores, kind="stable")[: LEADERS // 2].tolist()) <= leaders


def test_zero_weight_adds_nothing() -> None:
    popularity = Popularity(half_life_s=HOUR, capacity=2)
    popularity.add(0, 0.0, T0)
    assert popularity.current(0, T0) == 0.0
    assert popularity.leader_count == 0
