import numpy as np

from recsrv.config import ModelConfig, SessionsConfig
from recsrv.events import Interaction
from recsrv.model import Model
from recsrv.state.items import (
    ItemIndex,
    grown,
    positions_held,
    run_starts,
    stable_order,
    top_k,
)


def test_index_assigns_dense_indices_in_first_mention_order() -> None:
    index = ItemIndex(capacity=4)
    assert [index.add(item) for item in ("a", "b", "a", "c")] == [0, 1, 0, 2]
    assert index.get("c") == 2
    assert index.get("missing") is None
    assert index.ids == ["a", "b", "c"]
    assert len(index) == 3


def test_index_capacity_doubles_past_the_initial_capacity() -> None:
    index = ItemIndex(capacity=4)
    for n in range(10):
        index.add(f"i{n}")
    assert index.capacity == 16
    assert index.get("i9") == 9


def test_known_leaves_out_unknown_ids() -> None:
    index = ItemIndex()
    index.add("a")
    index.add("b")
    assert index.known(["b", "zzz", "a"]).tolist() == [1, 0]
    assert index.known([]).dtype == np.int64


def test_grown_keeps_rows_and_fills_new_ones() -> None:
    array = np.arange(6, dtype=np.int32).reshape(3, 2)
    bigger = grown(array, 5, -1)
    assert bigger.dtype == np.int32
    assert bigger.tolist() == [[0, 1], [2, 3], [4, 5], [-1, -1], [-1, -1]]


def test_top_k_sorts_descending_skips_minus_inf_and_breaks_ties_by_position() -> None:
    values = np.array([1.0, 5.0, -np.inf, 5.0, 3.0, 2.0])
    assert top_k(values, 3).tolist() == [1, 3, 4]
    assert top_k(values, 10).tolist() == [1, 3, 4, 5, 0]
    assert top_k(values, 0).tolist() == []
    assert top_k(np.full(4, -np.inf), 2).tolist() == []


def test_model_grows_every_per_item_array_past_the_initial_capacity() -> None:
    model = Model(ModelConfig(), SessionsConfig(), initial_capacity=4)
    for n in range(40):
        model.apply(Interaction("view", "s1", ts=1000.0 + n, item_id=f"i{n}"))
    assert model.items.capacity == 64
    assert model.catalog.counters.shape[0] == 64
    assert model.similar.ids.shape == (64, model.config.neighbors)
    assert model.popularity.scores.shape == (64,)
    info = model.item_info("i39")
    assert info is not None
    assert info["counters"]["view"] == 1
    # i38's row: i39 viewed next (forward), then the window of 5 before it (backward).
    row_ids, _ = model.similar.row(model.items.add("i38"), model.clock)
    assert row_ids.tolist() == [39, 37, 36, 35, 34, 33]


def test_stable_order_is_a_stable_argsort() -> None:
    rng = np.random.default_rng(3)
    for size in (0, 1, 2, 7, 300, 5000):
        indices = rng.integers(0, 50, size)  # many ties: stability shows
        order, ordered = stable_order(indices)
        assert order.tolist() == np.argsort(indices, kind="stable").tolist()
        assert ordered.tolist() == sorted(indices.tolist())
    # Large indices keep their value next to the packed position.
    order, ordered = stable_order(np.array([2**31 - 1, 0, 2**31 - 1]))
    assert order.tolist() == [1, 0, 2] and ordered.tolist() == [0, 2**31 - 1, 2**31 - 1]


def test_run_starts_marks_the_first_of_each_run() -> None:
    assert run_starts(np.array([3, 3, 5, 7, 7, 7])).tolist() == [0, 2, 3]
    assert run_starts(np.array([4])).tolist() == [0]
    assert run_starts(np.array([], dtype=np.int64)).tolist() == []


def test_top_k_equals_sorting_every_finite_value() -> None:
    # The reference: every finite value, by value descending then position; the first k.
    # Few distinct values (many ties), -inf and -0.0 among them; k on both sides of the
    # size where top_k switches from Python's sort to np.lexsort.
    rng = np.random.default_rng(11)
    for size in (1, 5, 40, 300):
        for _ in range(30):
            values = rng.integers(0, 6, size).astype(np.float64) / 4
            values[rng.random(size) < 0.1] = -np.inf
            values[rng.random(size) < 0.05] = -0.0
            finite = [p for p in range(size) if np.isfinite(values[p])]
            ranked = sorted(finite, key=lambda p: (-values[p], p))
            for k in (1, 3, 10, 63, 64, 65, 100, size):
                picked = top_k(values, k).tolist()
                # argpartition decides which of the values tied at the cut get in, so
                # the reference's order holds for the values, and positions where
                # distinct from the cut value.
                assert [values[p] for p in picked] == [values[p] for p in ranked[:k]]
                assert picked == sorted(picked, key=lambda p: (-values[p], p))


def test_positions_held_finds_what_isin_finds() -> None:
    rng = np.random.default_rng(4)
    for size in (0, 1, 5, 300):
        ordered = np.unique(rng.integers(0, 500, size=size))
        for count in (0, 1, 40):
            values = rng.integers(-3, 520, size=count)  # below, inside and past the ends
            expected = np.isin(ordered, values).nonzero()[0]
            held = positions_held(ordered, values)  # repeats once per repeated value
            assert np.unique(held).tolist() == expected.tolist()
