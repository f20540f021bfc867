"""Ranked recommendation lists from the model: state + request → (ids, scores, reasons).

Candidates come from neighbour rows of what the request knows about — the session's
recent items and its basket, the user's profile, a context item — each row scaled by
its own maximum so that one busy item does not drown the others. Contributions are
summed per candidate; the largest single contribution names the reason. Ineligible
items are masked with -inf, the top k taken with argpartition, and a short list is
topped up with popular items scored strictly below the last personal one.

Pure code: numpy only.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from recsrv.model import REMOVE_FROM_CART, Model
from recsrv.state.catalog import NO_CATEGORY
from recsrv.state.items import top_k
from recsrv.state.neighbors import NeighborTable

SIMILAR_TO, BOUGHT_TOGETHER, BOUGHT_BEFORE, POPULAR, SAME_CATEGORY = range(5)
REASON_PREFIX: Final = {
    SIMILAR_TO: "similar_to:",
    BOUGHT_TOGETHER: "bought_together:",
    BOUGHT_BEFORE: "bought_before",
    POPULAR: "popular",
    SAME_CATEGORY: "same_category",
}
# Popular fill-ins score at most this share of the last personal score.
FILL_SCORE_SHARE: Final = 0.5

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]
NO_ITEMS: Final[Ints] = np.empty(0, dtype=np.int64)


@dataclass(frozen=True, slots=True)
class Scored:
    item_id: str
    score: float
    reason: str  # "similar_to:<id>", "bought_together:<id>", "bought_before", "popular", …


@dataclass(frozen=True, slots=True)
class RecList:
    items: list[Scored]
    strategy: str  # "session", "user", "item" or "popular"


@dataclass(frozen=True, slots=True)
class _Ranked:
    """A ranked list in index form: items, scores, reason kinds and reason source items."""

    items: Ints
    scores: Floats
    kinds: Ints
    sources: Ints

    @staticmethod
    def empty() -> _Ranked:
        return _Ranked(NO_ITEMS, np.empty(0), NO_ITEMS, NO_ITEMS)

    def __len__(self) -> int:
        return len(self.items)

    def then(self, other: _Ranked) -> _Ranked:
        return _Ranked(
            np.concatenate((self.items, other.items)),
            np.concatenate((self.scores, other.scores)),
            np.concatenate((self.kinds, other.kinds)),
            np.concatenate((self.sources, other.sources)),
        )


class _Contributions:
    """(candidate, contribution, reason kind, reason source) rows from several sources."""

    def __init__(self) -> None:
        self._items: list[npt.NDArray[np.integer]] = []
        self._values: list[Floats] = []
        self._kinds: list[Ints] = []
        self._sources: list[npt.NDArray[np.integer]] = []

    def add_items(self, items: Ints, values: Floats, kind: int) -> None:
        """The items themselves as candidates (their reason names no source item)."""
        self._append(items, values, kind, np.full(len(items), -1, dtype=np.int64))

    def add_rows(self, table: NeighborTable, rows: Ints, row_weights: Floats, kind: int) -> None:
        """The neighbours of `rows`, each row scaled to max 1 and times its row weight."""
        if len(rows) == 0:
            return
        ids, weights = table.gather(rows)
        row_max = weights.max(axis=1)
        scale = np.divide(row_weights, row_max, out=np.zeros_like(row_max), where=row_max > 0)
        values = weights * scale[:, None]
        row_of, column = np.nonzero(values > 0.0)  # empty slots hold weight 0
        self._append(ids[row_of, column], values[row_of, column], kind, rows[row_of])

    def summed(self) -> _Ranked:
        """One row per distinct candidate, in index order: its total, and the reason of
        its largest contribution (ties go to the contribution added first)."""
        if not self._items:
            return _Ranked.empty()
        items = np.concatenate(self._items)
        values = np.concatenate(self._values)
        # A stable sort groups each candidate's contributions, in the order added.
        order = np.argsort(items, kind="stable")
        grouped = items[order]
        grouped_values = values[order]
        first = np.empty(len(order), dtype=np.bool_)
        first[0] = True
        np.not_equal(grouped[1:], grouped[:-1], out=first[1:])
        starts = np.flatnonzero(first)
        group_max = np.maximum.reduceat(grouped_values, starts)
        sizes = np.diff(np.append(starts, len(order)))
        # The first contribution of each group that equals the group's maximum.
        at_max = np.flatnonzero(grouped_values == np.repeat(group_max, sizes))
        group_of = np.cumsum(first)[at_max]
        leading = np.empty(len(at_max), dtype=np.bool_)
        leading[0] = True
        np.not_equal(group_of[1:], group_of[:-1], out=leading[1:])
        best = order[at_max[leading]]
        return _Ranked(
            grouped[starts].astype(np.int64, copy=False),
            np.add.reduceat(grouped_values, starts),
            np.concatenate(self._kinds)[best],
            np.concatenate(self._sources)[best].astype(np.int64, copy=False),
        )

    def _append(
        self,
        items: npt.NDArray[np.integer],
        values: Floats,
        kind: int,
        sources: npt.NDArray[np.integer],
    ) -> None:
        if len(items):
            self._items.append(items)
            self._values.append(values)
            self._kinds.append(np.full(len(items), kind, dtype=np.int64))
            self._sources.append(sources)


@dataclass(frozen=True, slots=True)
class _Filter:
    """What may appear in a list: available items, in `category` if set, not `blocked`."""

    blocked: Ints
    category: int | None = None


def recommend(
    model: Model,
    *,
    session_id: str | None = None,
    user_id: str | None = None,
    item_id: str | None = None,
    k: int = 10,
    category: str | None = None,
    exclude: Collection[str] = (),
) -> RecList:
    """A personal list for a session, a user and/or a context item, topped up with popular.

    Unknown ids contribute nothing; they are not errors.
    """
    slot = model.sessions.lookup(session_id, model.clock) if session_id is not None else None
    context = _known_item(model, item_id)
    found = _Contributions()
    blocked = [model.items.known([exclude] if isinstance(exclude, str) else exclude)]
    # Items the session already saw: left out, unless the list would run short of k.
    seen: list[Ints] = []
    if slot is not None:
        _add_session(found, model, slot, blocked, seen)
    profile_items, profile_weights = model.users.profile(_request_user(model, slot, user_id))
    if len(profile_items):
        in_session = slot is not None and model.sessions.has_events(slot)
        _add_user(found, model, profile_items, profile_weights, in_session)
    if context is not None:
        _add_item(found, model, context, blocked)
    if slot is not None and model.sessions.has_events(slot):
        strategy = "session"
    elif context is not None:
        strategy = "item"
    elif len(profile_items):
        strategy = "user"
    else:
        strategy = "popular"
    rule = _make_filter(model, category, np.concatenate(blocked + seen))
    if rule is None:
        return RecList([], strategy)
    ranked = _best(model, found.summed(), k, rule)
    # Short of k (a new item, a quiet corner of the shop): what is popular in the
    # category the shopper is in comes before what is popular anywhere.
    if len(ranked) < k and rule.category is None:
        focus = _focus_category(model, slot, context)
        if focus != NO_CATEGORY:
            same = _Filter(rule.blocked, focus)
            ranked = _fill_with_popular(model, ranked, k, same, SAME_CATEGORY)
    ranked = _fill_with_popular(model, ranked, k, rule, POPULAR)
    if len(ranked) < k and seen:
        # The design promises k items whenever the shop has that many eligible ones,
        # and a seen item is eligible: rather one seen before than a short list.
        relaxed = _make_filter(model, category, np.concatenate(blocked))
        if relaxed is not None:
            ranked = _fill_with_popular(model, ranked, k, relaxed, POPULAR)
    return RecList(_scored(model, ranked), strategy)


def similar(model: Model, item_id: str, k: int = 10) -> RecList | None:
    """Items most similar to `item_id` (browsed with it, after it first); None if unknown.

    A short list is topped up with popular items of the item's own category.
    """
    idx = _known_item(model, item_id)
    if idx is None:
        return None
    ranked = _row_list(model, model.similar, idx, k, SIMILAR_TO)
    code = int(model.catalog.category[idx])
    if code != NO_CATEGORY:
        rule = _Filter(np.array([idx], dtype=np.int64), code)
        ranked = _fill_with_popular(model, ranked, k, rule, SAME_CATEGORY)
    return RecList(_scored(model, ranked), "item")


def bought_together(model: Model, item_id: str, k: int = 10) -> RecList | None:
    """Items carted or purchased together with `item_id`; None if unknown. Never filled."""
    idx = _known_item(model, item_id)
    if idx is None:
        return None
    ranked = _row_list(model, model.bought_together, idx, k, BOUGHT_TOGETHER)
    return RecList(_scored(model, ranked), "item")


def popular(model: Model, k: int = 10, category: str | None = None) -> RecList:
    """Trending items (time-decayed popularity), optionally within one category."""
    rule = _make_filter(model, category, NO_ITEMS)
    if rule is None:
        return RecList([], "popular")
    ranked = _fill_with_popular(model, _Ranked.empty(), k, rule, POPULAR)
    return RecList(_scored(model, ranked), "popular")


# -- sources -----------------------------------------------------------------------


def _add_session(
    found: _Contributions, model: Model, slot: int, blocked: list[Ints], seen: list[Ints]
) -> None:
    """The session's recent items (newer ones weigh more) and its cart and purchases."""
    config = model.config
    recent, types = model.sessions.recent(slot)
    recency = config.recency_decay ** np.arange(len(recent), dtype=np.float64)
    recency[types == REMOVE_FROM_CART] = 0.0  # a removed item is no lead to follow
    recent_rows = recent.astype(np.int64)
    found.add_rows(model.similar, recent_rows, recency, SIMILAR_TO)
    basket = np.array(model.sessions.basket(slot), dtype=np.int64)
    weights = np.full(len(basket), config.bought_together_weight)
    found.add_rows(model.bought_together, basket, weights, BOUGHT_TOGETHER)
    if config.exclude_cart_items:
        blocked.append(basket)
    if config.exclude_seen_items:
        seen.append(recent_rows)


def _add_user(
    found: _Contributions, model: Model, items: Ints, weights: Floats, in_session: bool
) -> None:
    """The user's past items themselves and, when the session has no events of its own
    to go by, the similar rows of the heaviest of them (in a session they only blur
    what the session says)."""
    config = model.config
    relative = weights / weights.max()
    # Scaled by how often shoppers here buy again what they bought before: high in
    # grocery, low in fashion, where past purchases are poor guesses.
    history_weight = config.user_history_weight * model.users.repeat_rate()
    found.add_items(items, history_weight * relative, BOUGHT_BEFORE)
    if in_session:
        return
    heaviest = top_k(relative, config.user_neighbor_items)
    found.add_rows(
        model.similar,
        items[heaviest],
        config.user_neighbors_weight * relative[heaviest],
        SIMILAR_TO,
    )


def _add_item(found: _Contributions, model: Model, idx: int, blocked: list[Ints]) -> None:
    """A context item (the product page being looked at): its similar and
    bought-together rows."""
    rows = np.array([idx], dtype=np.int64)
    found.add_rows(model.similar, rows, np.ones(1), SIMILAR_TO)
    weight = np.full(1, model.config.bought_together_weight)
    found.add_rows(model.bought_together, rows, weight, BOUGHT_TOGETHER)
    blocked.append(rows)


def _focus_category(model: Model, slot: int | None, context: int | None) -> int:
    """The category of the context item, else of the session's newest item."""
    if context is not None:
        return int(model.catalog.category[context])
    if slot is not None and model.sessions.has_events(slot):
        recent, _ = model.sessions.recent(slot)
        if len(recent):
            return int(model.catalog.category[int(recent[0])])
    return NO_CATEGORY


def _request_user(model: Model, slot: int | None, user_id: str | None) -> int:
    """The user_id given, else the session's user; -1 if none is known."""
    if user_id is not None:
        user = model.users.get(user_id)
        if user is not None:
            return user
    return model.sessions.user_of(slot) if slot is not None else -1


def _known_item(model: Model, item_id: str | None) -> int | None:
    """Index of a seen, not deleted item."""
    if item_id is None:
        return None
    idx = model.items.get(item_id)
    if idx is None or model.catalog.deleted[idx]:
        return None
    return idx


# -- ranking -------------------------------------------------------------------------


def _make_filter(model: Model, category: str | None, blocked: Ints) -> _Filter | None:
    """The filter of a request; None if it names a category no item has (nothing passes)."""
    if category is None:
        return _Filter(blocked)
    code = model.catalog.category_code(category)
    return None if code == NO_CATEGORY else _Filter(blocked, code)


def _passes(model: Model, items: Ints, rule: _Filter) -> npt.NDArray[np.bool_]:
    """Which of `items` (sorted, distinct) the filter lets through."""
    ok = model.catalog.available[items]
    if rule.category is not None:
        ok &= model.catalog.category[items] == rule.category
    if len(rule.blocked) and len(items):
        at = np.minimum(np.searchsorted(items, rule.blocked), len(items) - 1)
        ok[at[items[at] == rule.blocked]] = False
    return ok


def _best(model: Model, candidates: _Ranked, k: int, rule: _Filter) -> _Ranked:
    """The k best candidates that pass the filter, best first."""
    if not len(candidates):
        return candidates
    ok = _passes(model, candidates.items, rule) & (candidates.scores > 0.0)
    top = top_k(np.where(ok, candidates.scores, -np.inf), k)
    return _Ranked(
        candidates.items[top],
        candidates.scores[top],
        candidates.kinds[top],
        candidates.sources[top],
    )


def _row_list(model: Model, table: NeighborTable, idx: int, k: int, kind: int) -> _Ranked:
    """One neighbour row as a list: available partners, scored relative to the row's max."""
    ids, weights = table.row(idx, model.clock)
    if not len(ids) or weights[0] <= 0.0:
        return _Ranked.empty()
    scores = weights / weights[0]
    keep = (scores > 0.0) & model.catalog.available[ids]
    ids, scores = ids[keep][:k], scores[keep][:k]
    return _Ranked(ids, scores, np.full(len(ids), kind), np.full(len(ids), idx))


def _fill_with_popular(model: Model, ranked: _Ranked, k: int, rule: _Filter, kind: int) -> _Ranked:
    """Top `ranked` up to k with popular items that pass `rule` and are not listed yet.

    Fill-in scores keep the popularity order but stay strictly below the last score
    already listed, so scores never increase down the list.
    """
    need = k - len(ranked)
    if need <= 0:
        return ranked
    n = len(model.items)
    eligible = model.catalog.available[:n].copy()
    if rule.category is not None:
        eligible &= model.catalog.in_category(n, rule.category)
    eligible[rule.blocked] = False
    eligible[ranked.items] = False
    items, scores = model.popularity.top(need, eligible, model.clock)
    if len(ranked) and len(items):
        highest = scores.max()
        ceiling = FILL_SCORE_SHARE * float(ranked.scores[-1])
        scores = scores * (ceiling / highest) if highest > 0.0 else np.zeros(len(items))
    fill = _Ranked(items, scores, np.full(len(items), kind), np.full(len(items), -1))
    return ranked.then(fill)


def _scored(model: Model, ranked: _Ranked) -> list[Scored]:
    ids = model.items.ids
    return [
        Scored(ids[item], score, _reason(ids, kind, source))
        for item, score, kind, source in zip(
            ranked.items.tolist(),
            ranked.scores.tolist(),
            ranked.kinds.tolist(),
            ranked.sources.tolist(),
            strict=True,
        )
    ]


def _reason(ids: Sequence[str], kind: int, source: int) -> str:
    prefix = REASON_PREFIX[kind]
    return prefix + ids[source] if prefix.endswith(":") else prefix
