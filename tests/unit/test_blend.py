"""The blend: combining components, learning its weights, and the prequential measure."""

import numpy as np
import pytest

from recsrv import blend as blend_module
from recsrv.blend import PRIOR, Blend
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
    before = blend.to_arrays()
    assert blend.learn(combined, np.ones(4, dtype=np.bool_), target=42) == 0  # not a candidate
    # A target that is no candidate teaches nothing.
    assert blend.measured == 1
    for name, array in blend.to_arrays().items():
        assert np.array_equal(array, before[name]), name


def test_the_prior_is_served_until_a_choice_is_measured() -> None:
    blend = Blend()
    assert blend.weights.tolist() == pytest.approx([p / sum(PRIOR) for p in PRIOR])
    # 495 grid weightings of 5 components, 2 x 5 leaders, the prior.
    assert blend.experts.shape == (495 + 10 + 1, 5)
    assert blend.experts.sum(axis=1) == pytest.approx(np.ones(len(blend.experts)))
    assert blend.experts.min() >= blend_module.FLOOR * 0.99


def chosen_first_by(component: int, rng: np.random.Generator) -> tuple[list[Scores], int]:
    """Ten candidates: `component` scores the chosen item above the others, the other
    component scores it mostly below them."""
    items = rng.permutation(np.arange(100))[:10]
    ordered = np.sort(items)
    target = int(items[0])
    good = np.where(ordered == target, 2.0, 1.0)
    bad = rng.random(10) + np.where(ordered == target, 0.0, 0.5)
    parts = [
        Scores(ordered, values, np.zeros(10, np.int64), np.full(10, -1, np.int64))
        for values in ((good, bad) if component == 0 else (bad, good))
    ]
    return parts, target


def test_the_weights_move_to_the_component_that_ranks_what_shoppers_choose() -> None:
    blend = Blend(components=2)
    blend.weights = np.array([0.2, 0.8])
    rng = np.random.default_rng(5)
    ranks = []
    for _ in range(200):
        parts, target = chosen_first_by(0, rng)
        ranks.append(blend.learn(blend.combine(parts), np.ones(10, dtype=np.bool_), target))
    assert ranks[0] != 1  # the weights it started with get it wrong
    assert ranks[-50:] == [1] * 50
    assert blend.weights[0] > 0.8
    assert blend.weights.sum() == pytest.approx(1.0)


def test_the_weights_follow_a_stream_that_changes() -> None:
    """Component 0 is right for a while, then component 1: within about HORIZON
    measured events the weights have moved over."""
    blend = Blend(components=2)
    rng = np.random.default_rng(7)
    for _ in range(blend_module.HORIZON):
        parts, target = chosen_first_by(0, rng)
        blend.learn(blend.combine(parts), np.ones(10, dtype=np.bool_), target)
    assert blend.weights[0] > 0.8
    ranks = []
    for _ in range(blend_module.HORIZON):
        parts, target = chosen_first_by(1, rng)
        ranks.append(blend.learn(blend.combine(parts), np.ones(10, dtype=np.bool_), target))
    assert np.mean(np.array(ranks[:10]) == 1) < 0.5
    assert ranks[-50:] == [1] * 50
    assert blend.weights[1] > 0.7


def test_a_component_can_lead_so_far_that_the_others_only_break_near_ties() -> None:
    """Component 0 ranks the chosen item first and a rival a close second; component 1
    scores only the rival. Only the weightings with component 1 below 0.05 of component
    0 rank the chosen item first (the grid's corner, and leading at 0.97; leading at 0.9
    gives 0.9 x 0.95 + 0.1 > 0.9), and the mixture goes to them."""
    blend = Blend(components=2)
    ranks = []
    for _ in range(50):
        first = scores([1, 2], [1.0, 0.95], SIMILAR_SESSIONS)
        second = scores([2], [1.0], FOLLOWS)
        ranks.append(blend.learn(blend.combine([first, second]), np.ones(2, np.bool_), 1))
    assert ranks[0] == 2 and ranks[-10:] == [1] * 10
    assert blend.weights[1] < 0.05 * blend.weights[0]


def test_weightings_that_are_as_good_share_the_lead() -> None:
    """Both components put the chosen item first: every weighting ranks it first, so
    none leads and the mixture is their mean, not one corner or the other."""
    blend = Blend(components=2)
    for _ in range(100):
        parts = [scores([1, 2, 3], [3.0, 2.0, 1.0], SIMILAR_SESSIONS)] * 2
        assert blend.learn(blend.combine(parts), np.ones(3, np.bool_), 1) == 1
    assert blend.weights.tolist() == pytest.approx(blend.experts.mean(axis=0).tolist())
    assert blend.weights.tolist() == pytest.approx([0.5, 0.5], abs=0.05)


def test_the_experts_rank_among_each_components_best_contenders() -> None:
    """With more than CONTENDERS candidates, the rows ranked are the eligible ones among
    each component's best CONTENDERS, and the chosen item last."""
    count = blend_module.CONTENDERS + 10
    features = np.zeros((count, 2))
    features[:, 0] = np.arange(count)  # component 0 prefers the last rows
    features[:, 1] = np.arange(count)[::-1]  # component 1 the first
    eligible = np.ones(count, dtype=np.bool_)
    eligible[count - 1] = False  # in the cart
    rows, rivals = blend_module._contenders(features, eligible, at=20)
    # Component 0's best: rows 10..39; component 1's: rows 0..29; together every row,
    # less the cart's row 39 and the chosen row 20, which comes last.
    expected = [r for r in range(count) if r not in (20, count - 1)]
    assert rows[:-1, 0].tolist() == features[expected, 0].tolist()
    assert rows[-1].tolist() == features[20].tolist()
    assert rivals.all() and len(rivals) == len(expected)
    few, few_rivals = blend_module._contenders(features[:5], eligible[:5], at=2)
    assert few[-1].tolist() == features[2].tolist()
    assert few_rivals.tolist() == [True, True, False, True, True]


def test_the_blend_state_round_trips() -> None:
    blend = Blend(components=3)
    combined = blend.combine([scores([1, 2], [1.0, 2.0], FOLLOWS)] * 3)
    for _ in range(40):
        blend.learn(combined, np.ones(2, dtype=np.bool_), target=1)
    copy = Blend(components=3)
    copy.restore(blend.to_arrays())
    for name, array in blend.to_arrays().items():
        assert np.array_equal(array, copy.to_arrays()[name]), name
    # And it learns on alike from there.
    for learner in (blend, copy):
        learner.learn(combined, np.ones(2, dtype=np.bool_), target=2)
    assert np.array_equal(blend.weights, copy.weights)


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


def test_each_weighting_is_judged_by_hr_plus_three_times_mrr() -> None:
    """One component ranks the chosen item 4th, so every weighting does: a hit worth
    1 + 3/4. Then a miss (25th of 30): worth 0, and the average halves."""
    blend = Blend(components=2)
    ranked = scores(list(range(1, 31)), [float(30 - n) for n in range(30)], SIMILAR_SESSIONS)
    assert blend.learn(blend.combine([ranked, Scores.empty()]), np.ones(30, np.bool_), 4) == 4
    assert blend.quality.tolist() == pytest.approx([1.0 + 3.0 / 4.0] * len(blend.experts))
    assert blend.learn(blend.combine([ranked, Scores.empty()]), np.ones(30, np.bool_), 25) == 25
    assert blend.quality.tolist() == pytest.approx([(1.0 + 3.0 / 4.0) / 2] * len(blend.experts))


def test_combine_equals_a_candidate_by_candidate_reference() -> None:
    # The reference: for each candidate, each component's score over that component's
    # largest, times its weight, summed in component order; the reason of the first
    # component with the largest weighted value. Random components, some empty.
    rng = np.random.default_rng(6)
    for _ in range(40):
        parts = []
        for kind in range(5):
            size = int(rng.integers(0, 30)) if rng.random() > 0.2 else 0
            items = np.sort(rng.choice(60, size, replace=False)).astype(np.int64)
            values = (rng.integers(1, 9, size) / 8).astype(np.float64)
            sources = rng.integers(-1, 60, size).astype(np.int64)
            parts.append(Scores(items, values, np.full(size, kind, dtype=np.int64), sources))
        combiner = Blend()
        combiner.weights = rng.dirichlet(np.ones(5))
        found = combiner.combine(parts)
        candidates = sorted({i for part in parts for i in part.items.tolist()})
        assert found.items.tolist() == candidates
        for row, item in enumerate(candidates):
            weighted = []
            for column, part in enumerate(parts):
                at = part.items.tolist().index(item) if item in part.items.tolist() else -1
                value = float(part.scores[at] / part.scores.max()) if at >= 0 else 0.0
                assert found.features[row, column] == value
                weighted.append((value * combiner.weights[column], column, at))
            assert found.scores[row] == sum(w for w, _, _ in weighted)
            _, column, at = max(weighted, key=lambda entry: entry[0])
            assert found.kinds[row] == parts[column].kinds[at]
            assert found.sources[row] == parts[column].sources[at]
