"""The blend: combining components, its weight search, and the prequential measure."""

import numpy as np
import pytest

from recsrv import blend as blend_module
from recsrv.blend import Blend
from recsrv.prequential import WARM_UP, Prequential
from recsrv.scoring import BOUGHT_BEFORE, FOLLOWS, SIMILAR_SESSIONS, Scores


def scores(items: list[int], values: list[float], kind: int, source: int = -1) -> Scores:
    n = len(items)
    return Scores(
        np.array(items, dtype=np.int64),
        np.array(values, dtype=np.float64),
        np.full(n, kind, dtype=np.int64),
        np.full(n, source, dtype=np.int64),
    )


def test_combine_divides_each_component_by_its_largest_and_weighs_it() -> None:
    blend = Blend(components=3)
    blend.weights = np.array([0.5, 0.3, 0.2])
    combined = blend.combine(
        [
            scores([4, 7], [2.0, 4.0], SIMILAR_SESSIONS),
            scores([7, 9], [10.0, 5.0], FOLLOWS, source=1),
            Scores.empty(),
        ]
    )
    assert combined.items.tolist() == [4, 7, 9]
    # 4: 0.5 * 2/4; 7: 0.5 * 4/4 + 0.3 * 10/10; 9: 0.3 * 5/10.
    assert combined.scores.tolist() == pytest.approx([0.25, 0.8, 0.15])
    assert combined.features.tolist() == [[0.5, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.5, 0.0]]
    # The reason is the largest weighted contribution's: 7 gets 0.5 from the sessions.
    assert combined.kinds.tolist() == [SIMILAR_SESSIONS, SIMILAR_SESSIONS, FOLLOWS]
    assert combined.sources.tolist() == [-1, -1, 1]


def test_combine_of_nothing_is_empty() -> None:
    combined = Blend(components=2).combine([Scores.empty(), Scores.empty()])
    assert len(combined.items) == 0
    assert combined.features.shape == (0, 2)


def test_learn_ranks_the_chosen_item_among_eligible_candidates_only() -> None:
    blend = Blend(components=2)
    blend.weights = np.array([0.5, 0.5])
    combined = blend.combine(
        [scores([1, 2, 3], [3.0, 2.0, 1.0], SIMILAR_SESSIONS), scores([9], [1.0], BOUGHT_BEFORE)]
    )
    # Blended: 1 → 0.5, 2 → 0.333, 3 → 0.167, 9 → 0.5 (a tie with 1 ranks it first).
    eligible = np.array([False, True, True, True])  # 1 is in the cart: not a rival
    assert blend.learn(combined, eligible, target=3) == 3
    assert blend.learn(combined, np.ones(4, dtype=np.bool_), target=9) == 1
    assert blend.learn(combined, np.ones(4, dtype=np.bool_), target=42) == 0  # not a candidate
    assert blend.filled == 2  # a target that is no candidate teaches nothing


def test_the_search_finds_the_component_that_ranks_what_shoppers_choose() -> None:
    """Component 0 puts the chosen item first, component 1 mostly below others: the
    weights move to component 0, one search step at a time, until the chosen items
    rank first (then the sample cannot tell better weights apart, and they stay)."""
    blend = Blend(components=2)
    blend.weights = np.array([0.2, 0.8])
    rng = np.random.default_rng(5)
    ranks = []
    for _ in range(200):
        items = rng.permutation(np.arange(100))[:10]
        good = scores(sorted(items.tolist()), [1.0] * 10, SIMILAR_SESSIONS)
        target = int(items[0])
        good_values = np.where(good.items == target, 2.0, 1.0)
        good = Scores(good.items, good_values, good.kinds, good.sources)
        bad_values = rng.random(10) + np.where(good.items == target, 0.0, 0.5)
        bad = Scores(good.items, bad_values, good.kinds, good.sources)
        combined = blend.combine([good, bad])
        ranks.append(blend.learn(combined, np.ones(10, dtype=np.bool_), target))
    assert np.mean(np.array(ranks[:20]) == 1) < 0.5  # the prior weights get it wrong
    assert ranks[-50:] == [1] * 50
    assert blend.weights[0] > 0.6
    assert blend.weights.sum() == pytest.approx(1.0)
    assert blend.weights.min() >= blend_module.FLOOR * 0.99


def test_a_component_can_lead_so_far_that_the_others_only_break_near_ties() -> None:
    """Component 0 ranks the chosen item first and a rival a close second; component 1
    scores only the rival. Leading at 0.9 still leaves the rival ahead
    (0.9 x 0.95 + 0.1 > 0.9), and so does every step around the prior; leading at 0.97
    ranks the chosen item first (0.97 > 0.97 x 0.95 + 0.03). The weights go a quarter
    of the way there per search, and stop once the chosen item comes first (above
    0.95 / 0.05 + 0.95 ≈ 0.952)."""
    blend = Blend(components=2)
    ranks = []
    for _ in range(blend_module.MIN_SAMPLE + 16 * blend_module.SEARCH_EVERY):
        first = scores([1, 2], [1.0, 0.95], SIMILAR_SESSIONS)
        second = scores([2], [1.0], FOLLOWS)
        ranks.append(blend.learn(blend.combine([first, second]), np.ones(2, np.bool_), 1))
    assert ranks[0] == 2 and ranks[-blend_module.SEARCH_EVERY :] == [1] * blend_module.SEARCH_EVERY
    assert 0.952 < blend.weights[0] < 0.97


def test_a_search_moves_a_quarter_of_the_way_to_the_winning_trial() -> None:
    """The same stream: the first search finds that leading at 0.97 wins, and the
    weights move MOVE of the way from the prior toward it, not all the way."""
    blend = Blend(components=2)
    prior = blend.weights.copy()
    for _ in range(blend_module.MIN_SAMPLE):
        first = scores([1, 2], [1.0, 0.95], SIMILAR_SESSIONS)
        second = scores([2], [1.0], FOLLOWS)
        blend.learn(blend.combine([first, second]), np.ones(2, np.bool_), 1)
    assert blend_module.MOVE == 0.25
    expected = prior + 0.25 * (np.array([0.97, 0.03]) - prior)
    assert blend.weights.tolist() == pytest.approx(expected.tolist())


def test_the_weights_stay_put_while_the_sample_is_too_small() -> None:
    blend = Blend(components=2)
    before = blend.weights.copy()
    combined = blend.combine([scores([1, 2], [1.0, 2.0], FOLLOWS), scores([1], [1.0], FOLLOWS)])
    for _ in range(blend_module.MIN_SAMPLE - 1):
        blend.learn(combined, np.ones(2, dtype=np.bool_), target=1)
    assert np.array_equal(blend.weights, before)


def test_the_blend_state_round_trips() -> None:
    blend = Blend(components=3)
    combined = blend.combine([scores([1, 2], [1.0, 2.0], FOLLOWS)] * 3)
    for _ in range(40):
        blend.learn(combined, np.ones(2, dtype=np.bool_), target=1)
    copy = Blend(components=3)
    copy.restore(blend.to_arrays())
    for name, array in blend.to_arrays().items():
        assert np.array_equal(array, copy.to_arrays()[name]), name


def test_prequential_measures_every_event_while_warming_up_then_one_in_every() -> None:
    quality = Prequential(every=4)
    due = []
    for _ in range(WARM_UP):
        assert quality.due()
        quality.record(1)
    for _ in range(12):
        due.append(quality.due())
    assert due == [True, False, False, False] * 3


def test_prequential_hr_and_mrr_at_20() -> None:
    quality = Prequential(every=1)
    for rank in (1, 4, 0, 21):
        quality.record(rank)
    assert quality.predictions == 4
    assert quality.hr == pytest.approx(2 / 4)
    assert quality.mrr == pytest.approx((1 + 1 / 4) / 4)
    # Below RECENT predictions the recent figures are the plain means.
    assert quality.recent_hr == pytest.approx(quality.hr)
    assert quality.recent_mrr == pytest.approx(quality.mrr)
    copy = Prequential(every=1)
    copy.restore(quality.to_array())
    assert np.array_equal(copy.to_array(), quality.to_array())
