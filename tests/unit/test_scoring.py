"""The scoring components, each on a tiny shop worked out by hand."""

import math
from typing import Any

import numpy as np
import pytest

from recsrv.config import ModelConfig, SessionsConfig
from recsrv.model import Model
from recsrv.scoring import (
    BOUGHT_BEFORE,
    FOLLOWS,
    SIMILAR_SESSIONS,
    SIMILAR_TO,
    Context,
    Contributions,
    Scores,
    components,
    popular,
    repeat,
    sequence,
    session_knn,
)
from recsrv.state.neighbors import NeighborTable
from tests.unit.builders import act


def shop(**config: Any) -> Model:
    """n1 went a → b → c, n2 went b → d, and the current session s went a → b."""
    model = Model(ModelConfig(**config), SessionsConfig())
    for session, items, start in [("n1", "abc", 0), ("n2", "bd", 100), ("s", "ab", 200)]:
        for step, item in enumerate(items):
            model.apply(act("view", session, item, t=start + 10 * step))
    return model


def score_of(model: Model, scorer: Any, session: str = "s") -> dict[str, float]:
    slot = model.sessions.lookup(session, model.clock)
    assert slot is not None
    found: Scores = scorer(model, components.context(model, slot, -1))
    ids = model.items.ids
    return {ids[i]: v for i, v in zip(found.items.tolist(), found.scores.tolist(), strict=True)}


def test_sequence_follows_the_newest_items_row() -> None:
    model = shop()
    # Rows (1/distance): b → c 1, d 1; a → b 1 + 1 (n1 and s), c 1/2. The newest item's
    # row alone, as SR does, scaled to its largest.
    assert score_of(model, sequence.score) == pytest.approx({"c": 1.0, "d": 1.0}, rel=1e-4)
    model.apply(act("view", "s", "c", t=230))  # now c is the newest, and nothing follows c
    assert score_of(model, sequence.score) == {}
    # a again: s is now b, c, a. a's row: b 1 (n1) + 1 (s); c 1/2 (n1) + 1/2 (s, a → c
    # at distance 2 when c came).
    model.apply(act("view", "s", "a", t=240))
    assert score_of(model, sequence.score) == pytest.approx({"b": 1.0, "c": 0.5}, rel=1e-4)
    slot = model.sessions.lookup("s", model.clock)
    assert slot is not None
    scores = sequence.score(model, components.context(model, slot, -1))
    assert scores.kinds.tolist() == [FOLLOWS] * len(scores)
    assert set(scores.sources.tolist()) == {model.items.get("a")}


def expected_knn(idf: dict[str, float] | None = None) -> dict[str, float]:
    """STAN/VSTAN for s = (a, b) by hand. λ = mean record length = (3 + 2 + 2) / 3."""
    spread = 7 / 3
    w = {1: math.exp(-1 / spread), 2: 1.0}  # position weights in s
    norm = math.sqrt(w[1] ** 2 + w[2] ** 2)
    sim_n1 = (w[1] + w[2]) / (norm * math.sqrt(3))  # shares a and b; newest shared: b
    sim_n2 = w[2] / (norm * math.sqrt(2))  # shares b
    near = math.exp(-1 / spread)  # one step from the shared item b inside the neighbour
    scores = {
        "a": sim_n1 * near,
        "b": sim_n1 + sim_n2,
        "c": sim_n1 * near,
        "d": sim_n2 * near,
    }
    if idf is not None:
        scores = {item: value * (1 + idf[item]) for item, value in scores.items()}
    return scores


def test_session_knn_is_vstan_on_the_session_index() -> None:
    model = shop(knn_recency_s=1e9, knn_idf_weight=0.0)
    assert score_of(model, session_knn.score) == pytest.approx(expected_knn(), rel=1e-6)


def test_session_knn_weighs_rare_items_up_by_idf() -> None:
    model = shop(knn_recency_s=1e9, knn_idf_weight=1.0)
    # 3 sessions; a is in 2 of them, b in 3, c and d in 1.
    idf = {"a": math.log(3 / 2), "b": 0.0, "c": math.log(3), "d": math.log(3)}
    assert score_of(model, session_knn.score) == pytest.approx(expected_knn(idf), rel=1e-6)


def test_session_knn_prefers_neighbours_near_in_time() -> None:
    model = shop(knn_recency_s=100.0, knn_idf_weight=0.0)
    found = score_of(model, session_knn.score)
    # n1 ended at t=20, n2 at t=110, s at t=210: n1's items lose exp(-190/100).
    by_hand = expected_knn()
    assert found["c"] == pytest.approx(by_hand["c"] * math.exp(-190 / 100), rel=1e-6)
    assert found["d"] == pytest.approx(by_hand["d"] * math.exp(-100 / 100), rel=1e-6)


def test_session_knn_takes_the_most_recent_candidates_and_the_nearest_neighbours() -> None:
    model = shop(knn_recency_s=1e9, knn_idf_weight=0.0, knn_sample=1)
    # Only the most recent candidate (n2) is compared: a and c never show up.
    assert set(score_of(model, session_knn.score)) == {"b", "d"}
    model = shop(knn_recency_s=1e9, knn_idf_weight=0.0, knn_neighbors=1)
    # Both are compared, n1 is the more similar and the only one kept.
    assert set(score_of(model, session_knn.score)) == {"a", "b", "c"}


def test_session_knn_reason_and_the_own_session_left_out() -> None:
    model = shop(knn_recency_s=1e9)
    slot = model.sessions.lookup("s", model.clock)
    assert slot is not None
    found = session_knn.score(model, components.context(model, slot, -1))
    assert set(found.kinds.tolist()) == {SIMILAR_SESSIONS}
    # s itself is indexed but no neighbour of its own: alone, nothing is found.
    lonely = Model(ModelConfig(), SessionsConfig())
    lonely.apply(act("view", "s", "a"))
    assert score_of(lonely, session_knn.score) == {}


def test_session_knn_positions_past_255_in_a_long_session() -> None:
    # s holds 300 distinct items; its neighbour n shares only the newest of them. The
    # position of that item (300) must not wrap around a small integer type.
    model = Model(
        ModelConfig(knn_recency_s=0.0, knn_idf_weight=0.0), SessionsConfig(max_events=400)
    )
    model.apply(act("view", "n", "i299", t=0))
    model.apply(act("view", "n", "z", t=1))
    for step in range(300):
        model.apply(act("view", "s", f"i{step}", t=10 + step))
    spread = (2 + 300) / 2  # mean record length
    norm = math.sqrt(sum(math.exp(2 * (i - 300) / spread) for i in range(1, 301)))
    similarity = 1.0 / (norm * math.sqrt(2))  # w(300) = 1, newest shared at 300
    found = score_of(model, session_knn.score)
    assert found["z"] == pytest.approx(similarity * math.exp(-1 / spread), rel=1e-6)
    assert found["i299"] == pytest.approx(similarity, rel=1e-6)


def test_popular_candidates_are_kept_until_the_next_event() -> None:
    model = shop()
    first = score_of(model, popular.score)
    assert score_of(model, popular.score) == first
    slot = model.sessions.lookup("s", model.clock)
    assert slot is not None
    context = components.context(model, slot, -1)
    assert popular.score(model, context) is popular.score(model, context)  # computed once
    for step in range(5):
        model.apply(act("view", f"v{step}", "d", t=300 + step))
    after = score_of(model, popular.score)
    assert max(after, key=after.__getitem__) == "d"  # the new events count at once
    assert after != first


def _context(profile: list[int], weights: list[float]) -> Context:
    no_items = np.empty(0, dtype=np.int64)
    return Context(
        recent=no_items,
        recent_types=np.empty(0, dtype=np.int8),
        sequence=no_items,
        basket=no_items,
        profile=np.array(profile, dtype=np.int64),
        profile_weights=np.array(weights, dtype=np.float64),
        now=0.0,
        record=-1,
    )


def test_repeat_equals_summing_the_profile_as_contributions() -> None:
    # A profile's items are distinct; the reference sums them per candidate anyway.
    rng = np.random.default_rng(4)
    for size in (1, 2, 9, 200):
        items = rng.permutation(1000)[:size]
        weights = rng.random(size) * 3.0
        context = _context(items.tolist(), weights.tolist())
        reference = Contributions()
        reference.add_items(context.profile, weights / weights.max(), BOUGHT_BEFORE)
        expected, found = (
            reference.summed(),
            repeat.score(Model(ModelConfig(), SessionsConfig()), context),
        )
        for name in ("items", "scores", "kinds", "sources"):
            assert getattr(found, name).tolist() == getattr(expected, name).tolist()
            assert getattr(found, name).dtype == getattr(expected, name).dtype


def test_add_rows_scales_each_row_to_its_max_and_skips_empty_slots() -> None:
    # The reference walks every cell of every row in Python.
    table = NeighborTable(width=4, half_life_s=1e9, capacity=16)
    rng = np.random.default_rng(8)
    for a in range(1, 12):  # row 0 and rows 12-15 stay empty
        for b in rng.permutation(16)[: rng.integers(1, 6)].tolist():
            if b != a:
                table.add(a, [int(b)], [float(rng.integers(1, 5))], 0.0)
    rows = np.array([3, 0, 7, 12, 1, 9], dtype=np.int64)
    row_weights = np.array([1.0, 0.5, 0.8, 0.0, 0.3, 0.64])
    found = Contributions()
    found.add_rows(table, rows, row_weights, SIMILAR_TO)
    expected: dict[int, list[tuple[float, int]]] = {}
    for row, row_weight in zip(rows.tolist(), row_weights.tolist(), strict=True):
        ids, weights = table.ids[row].tolist(), table.weights[row].tolist()
        row_max = max(weights)
        for item, weight in zip(ids, weights, strict=True):
            value = weight * (row_weight / row_max) if row_max > 0 else 0.0
            if value > 0.0:
                expected.setdefault(item, []).append((value, row))
    summed = found.summed()
    assert summed.items.tolist() == sorted(expected)
    for item, total, source in zip(
        summed.items.tolist(), summed.scores.tolist(), summed.sources.tolist(), strict=True
    ):
        values = expected[item]
        assert total == sum(value for value, _ in values)
        assert source == max(values, key=lambda pair: pair[0])[1]  # first of the largest
