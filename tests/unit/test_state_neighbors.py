import gc
import math
import sys

import numpy as np
import pytest

from recsrv.state.neighbors import NeighborTable

DAY = 86400.0
T0 = 1.7e9


def weights_by_partner(table: NeighborTable, row: int, now: float) -> dict[int, float]:
    ids, weights = table.row(row, now)
    return dict(zip(ids.tolist(), weights.tolist(), strict=True))


def test_add_fills_empty_slots_then_accumulates() -> None:
    table = NeighborTable(width=3, half_life_s=DAY, capacity=8)
    table.add(0, [1, 2], [1.0, 2.0], T0)
    table.add(0, [1], [4.0], T0)
    assert weights_by_partner(table, 0, T0) == pytest.approx({1: 5.0, 2: 2.0})
    assert table.sizes[0] == 2
    # Heaviest first.
    assert table.row(0, T0)[0].tolist() == [1, 2]


def test_full_row_replaces_its_smallest_entry_only_when_beaten() -> None:
    table = NeighborTable(width=3, half_life_s=DAY, capacity=8)
    table.add(0, [1, 2, 3], [3.0, 1.0, 2.0], T0)
    table.add(0, [4], [0.5], T0)  # weaker than every entry: ignored
    assert sorted(weights_by_partner(table, 0, T0)) == [1, 2, 3]
    table.add(0, [5], [1.5], T0)  # beats the smallest (2 with 1.0)
    assert weights_by_partner(table, 0, T0) == pytest.approx({1: 3.0, 3: 2.0, 5: 1.5})
    assert table.sizes[0] == 3


def test_add_to_rows_adds_one_partner_to_several_rows() -> None:
    table = NeighborTable(width=4, half_life_s=DAY, capacity=8)
    table.add_to_rows([1, 2, 3], 7, [1.0, 0.7, 0.49], T0)
    assert weights_by_partner(table, 1, T0) == pytest.approx({7: 1.0})
    assert weights_by_partner(table, 3, T0) == pytest.approx({7: 0.49})
    assert weights_by_partner(table, 7, T0) == {}


def test_weights_halve_after_one_half_life_of_event_time() -> None:
    table = NeighborTable(width=4, half_life_s=DAY, capacity=8)
    table.add(0, [1], [8.0], T0)
    assert weights_by_partner(table, 0, T0 + DAY) == pytest.approx({1: 4.0})
    assert weights_by_partner(table, 0, T0 + 3 * DAY) == pytest.approx({1: 1.0})
    # A new observation a day later counts in full and the old one at half.
    table.add(0, [1, 2], [1.0, 3.0], T0 + DAY)
    assert weights_by_partner(table, 0, T0 + DAY) == pytest.approx({1: 5.0, 2: 3.0})


def test_an_older_out_of_order_event_adds_less() -> None:
    table = NeighborTable(width=4, half_life_s=DAY, capacity=8)
    table.add(0, [1], [1.0], T0)
    table.add(0, [2], [1.0], T0 - DAY)
    assert weights_by_partner(table, 0, T0) == pytest.approx({1: 1.0, 2: 0.5})


def test_rebase_keeps_weights_finite_and_correct_over_many_half_lives() -> None:
    table = NeighborTable(width=4, half_life_s=60.0, capacity=8)
    for step in range(200):  # 200 half-lives: e^(138) without rebasing
        table.add(0, [1], [1.0], T0 + 60.0 * step)
    now = T0 + 60.0 * 199
    assert np.isfinite(table.weights).all()
    # Geometric sum 1 + 1/2 + 1/4 + ... → 2.
    assert weights_by_partner(table, 0, now) == pytest.approx({1: 2.0})
    assert table.scale.rate * (now - table.scale.t_ref) <= 30.0


def test_replacement_compares_current_decayed_weights() -> None:
    table = NeighborTable(width=2, half_life_s=DAY, capacity=8)
    table.add(0, [1, 2], [4.0, 4.0], T0)
    # Three days later the old entries are worth 0.5 each: a new 1.0 beats one of them.
    table.add(0, [3], [1.0], T0 + 3 * DAY)
    assert weights_by_partner(table, 0, T0 + 3 * DAY) == pytest.approx({2: 0.5, 3: 1.0})


@pytest.mark.skipif(sys.byteorder != "little", reason="the byte pattern assumes little-endian")
def test_a_byte_pattern_straddling_two_entries_is_not_a_match() -> None:
    table = NeighborTable(width=4, half_life_s=DAY, capacity=8)
    table.add(0, [256, 5], [1.0, 1.0], T0)
    # Little-endian 256, 5 → 00 01 00 00 05 00 00 00; bytes 1..4 spell this partner.
    straddler = int.from_bytes(bytes([0x01, 0x00, 0x00, 0x05]), "little")
    table.add(0, [straddler], [2.0], T0)
    assert weights_by_partner(table, 0, T0) == pytest.approx({256: 1.0, 5: 1.0, straddler: 2.0})


def test_grow_keeps_rows() -> None:
    table = NeighborTable(width=2, half_life_s=DAY, capacity=2)
    table.add(1, [0], [1.0], T0)
    table.grow(8)
    table.add(7, [1], [2.0], T0)
    assert weights_by_partner(table, 1, T0) == pytest.approx({0: 1.0})
    assert weights_by_partner(table, 7, T0) == pytest.approx({1: 2.0})
    assert table.ids[5].tolist() == [-1, -1]


def test_gather_returns_raw_rows_whose_ratios_are_exact() -> None:
    table = NeighborTable(width=3, half_life_s=DAY, capacity=8)
    table.add(2, [0, 1], [3.0, 1.0], T0)
    ids, weights = table.gather(np.array([2, 4]))
    assert ids.tolist() == [[0, 1, -1], [-1, -1, -1]]
    assert weights[0, 0] / weights[0, 1] == pytest.approx(3.0)
    assert math.isclose(weights[1].sum(), 0.0)


def random_pairs(count: int, rows: int, seed: int) -> list[tuple[int, int, float]]:
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(count):
        a, partner = (int(x) for x in rng.integers(rows, size=2))
        if a != partner:
            # Some weights at or below zero: _add_pair ignores those.
            pairs.append((a, partner, float(rng.choice([0.0, -1.0, *rng.random(8) * 3]))))
    return pairs


@pytest.mark.parametrize("seed", range(4))
def test_a_long_queue_applied_in_steps_equals_one_pair_at_a_time(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps = []
    step = NeighborTable._step
    monkeypatch.setattr(
        NeighborTable, "_step", lambda table, *arrays: steps.append(1) or step(table, *arrays)
    )
    # Few rows, narrow rows, many pairs: appends, hits, replacements, rejections, and
    # busy rows that outlast the vectorised steps.
    pairs = random_pairs(3000, rows=40, seed=seed)
    stepped = NeighborTable(width=5, half_life_s=DAY, capacity=64)
    single = NeighborTable(width=5, half_life_s=DAY, capacity=64)
    for a, partner, weight in pairs:
        stepped.queue(a, [partner], [weight], T0)
    stepped.flush()
    assert len(steps) > 10  # the vectorised path did the work
    for a, partner, weight in pairs:
        single.add(a, [partner], [weight], T0)
    assert np.array_equal(stepped.ids, single.ids)
    assert np.array_equal(stepped.weights, single.weights)
    assert np.array_equal(stepped.sizes, single.sizes)
    assert (single.sizes[:40] == 5).all()


def test_queued_pairs_wait_for_flush_and_a_rebase_applies_them_first() -> None:
    table = NeighborTable(width=4, half_life_s=60.0, capacity=8)
    table.queue(0, [1], [1.0], T0)
    assert table.sizes[0] == 0  # nothing applied yet
    # 40 half-lives later a rebase is due: the queued pair is applied at the old scale
    # first, then everything is rescaled.
    table.queue(0, [2], [1.0], T0 + 60.0 * 40)
    table.flush()
    now = T0 + 60.0 * 40
    assert weights_by_partner(table, 0, now) == pytest.approx({1: 2.0**-40, 2: 1.0})


def test_a_full_row_rejects_a_weaker_partner_and_still_takes_a_stronger_one_later() -> None:
    table = NeighborTable(width=2, half_life_s=DAY, capacity=8)
    table.add(0, [1, 2], [2.0, 3.0], T0)
    table.add(0, [3], [1.0], T0)  # below the smallest: rejected (and the bound learnt)
    table.add(0, [4], [1.5], T0)  # still below
    table.add(0, [1], [5.0], T0)  # the smallest grows: 7.0
    table.add(0, [5], [3.5], T0)  # beats 3.0 (partner 2), the new smallest
    assert weights_by_partner(table, 0, T0) == pytest.approx({1: 7.0, 5: 3.5})


def test_rescale_keeps_replacement_decisions_right() -> None:
    table = NeighborTable(width=2, half_life_s=DAY, capacity=8)
    table.add(0, [1, 2], [4.0, 4.0], T0)
    table.add(0, [3], [1.0], T0)  # rejected: the row's smallest is 4.0
    table.rescale(0.125)  # every weight is now 0.5
    table.add(0, [3], [1.0], T0)
    assert weights_by_partner(table, 0, T0) == pytest.approx({2: 0.5, 3: 1.0})


def test_grow_keeps_queued_and_applied_pairs() -> None:
    table = NeighborTable(width=2, half_life_s=DAY, capacity=2)
    table.add(1, [0], [1.0], T0)
    table.queue(1, [5], [2.0], T0)
    table.grow(8)
    table.flush()
    table.add(7, [1], [3.0], T0)
    assert weights_by_partner(table, 1, T0) == pytest.approx({0: 1.0, 5: 2.0})
    assert weights_by_partner(table, 7, T0) == pytest.approx({1: 3.0})


def test_per_item_bookkeeping_gives_the_garbage_collector_nothing_to_walk() -> None:
    # A list of a float per item was what full collections walked longest.
    table = NeighborTable(width=4, half_life_s=1e9, capacity=10_000)
    table.add(1, [2, 3], [1.0, 1.0], ts=0.0)
    table.grow(20_000)
    table.rescale(0.5)
    # What a collection visits inside each attribute: a handful of objects, not one
    # per item (numpy arrays and array('d') hold raw numbers).
    visited = {name: len(gc.get_referents(value)) for name, value in vars(table).items()}
    assert max(visited.values()) < 100, visited
