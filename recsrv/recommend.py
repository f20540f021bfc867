"""Ranked recommendation lists from the model: state + request → (ids, scores, reasons).

A session with events gets the learnt blend of the scoring components
(recsrv.scoring, recsrv.blend). A request without one (a user, a context item) sums
the neighbour rows of what it knows, each row scaled by its own maximum so that one
busy item does not drown the others; the largest contribution names the reason.
Here: ineligible items are masked with -inf, the top k taken with argpartition, and a
short list is topped up with popular items scored strictly below the last personal
one.

Pure code: numpy only.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from recsrv.model import Model
from recsrv.scoring import (
    BOUGHT_BEFORE,
    BOUGHT_TOGETHER,
    NO_ITEMS,
    POPULAR,
    REASON_PREFIX,
    SAME_CATEGORY,
    SIMILAR_TO,
    Contributions,
    Scores,
    components,
)
from recsrv.state.catalog import NO_CATEGORY
from recsrv.state.items import top_k
from recsrv.state.neighbors import NeighborTable

# Popular fill-ins score at most this share of the last personal score.
FILL_SCORE_SHARE: Final = 0.5

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Scored:
    item_id: str
    score: float
    reason: str  # "similar_to:<id>", "bought_together:<id>", "bought_before", "popular", …


@dataclass(frozen=True, slots=True)
class RecList:
    """A ranked list, held as columns: the JSON of a list endpoint is built from them
    directly, without a `Scored` object per item (`items` makes those on demand)."""

    item_ids: list[str]
    scores: list[float]
    reasons: list[str]
    strategy: str  # "session", "user", "item" or "popular"

    @property
    def items(self) -> list[Scored]:
        return list(map(Scored, self.item_ids, self.scores, self.reasons))


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
    blocked = [model.items.known([exclude] if isinstance(exclude, str) else exclude)]
    # Items the session already saw: left out, unless the list would run short of k.
    seen: list[Ints] = []
    user = _request_user(model, slot, user_id)
    if context is not None:
        blocked.append(np.array([context], dtype=np.int64))
    if slot is not None and model.sessions.has_events(slot):
        candidates = _blend_session(model, slot, user, context, blocked, seen)
        strategy = "session"
    else:
        found = Contributions()
        profile_items, profile_weights = model.users.profile(user)
        if len(profile_items):
            _add_user(found, model, profile_items, profile_weights)
        if context is not None:
            _add_item(found, model, context)
        candidates = found.summed()
        strategy = "item" if context is not None else "user" if len(profile_items) else "popular"
    rule = _make_filter(model, category, np.concatenate(blocked + seen))
    if rule is None:
        return _listed(model, Scores.empty(), strategy)
    ranked = _best(model, candidates, k, rule)
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
    return _listed(model, ranked, strategy)


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
    return _listed(model, ranked, "item")


def bought_together(model: Model, item_id: str, k: int = 10) -> RecList | None:
    """Items carted or purchased together with `item_id`; None if unknown. Never filled."""
    idx = _known_item(model, item_id)
    if idx is None:
        return None
    ranked = _row_list(model, model.bought_together, idx, k, BOUGHT_TOGETHER)
    return _listed(model, ranked, "item")


def popular(model: Model, k: int = 10, category: str | None = None) -> RecList:
    """Trending items (time-decayed popularity), optionally within one category."""
    rule = _make_filter(model, category, NO_ITEMS)
    if rule is None:
        return _listed(model, Scores.empty(), "popular")
    ranked = _fill_with_popular(model, Scores.empty(), k, rule, POPULAR)
    return _listed(model, ranked, "popular")


# -- sources -----------------------------------------------------------------------


def _blend_session(
    model: Model, slot: int, user: int, item: int | None, blocked: list[Ints], seen: list[Ints]
) -> Scores:
    """A session with events: every scoring component, combined by the learnt blend."""
    context = components.context(model, slot, user, -1 if item is None else item)
    blended = model.blend.combine(components.score_all(model, context))
    if model.config.exclude_cart_items:
        blocked.append(context.basket)
    if model.config.exclude_seen_items:
        seen.append(context.recent)
    return Scores(blended.items, blended.scores, blended.kinds, blended.sources)


def _add_user(found: Contributions, model: Model, items: Ints, weights: Floats) -> None:
    """A user with no session events to go by: their past items themselves and the
    similar rows of the heaviest of them."""
    config = model.config
    relative = weights / weights.max()
    # Scaled by how often shoppers here buy again what they bought before: high in
    # grocery, low in fashion, where past purchases are poor guesses.
    history_weight = config.user_history_weight * model.users.repeat_rate()
    found.add_items(items, history_weight * relative, BOUGHT_BEFORE)
    heaviest = top_k(relative, config.user_neighbor_items)
    found.add_rows(
        model.similar,
        items[heaviest],
        config.user_neighbors_weight * relative[heaviest],
        SIMILAR_TO,
    )


def _add_item(found: Contributions, model: Model, idx: int) -> None:
    """A context item (the product page being looked at): its similar and
    bought-together rows."""
    rows = np.array([idx], dtype=np.int64)
    found.add_rows(model.similar, rows, np.ones(1), SIMILAR_TO)
    weight = np.full(1, model.config.bought_together_weight)
    found.add_rows(model.bought_together, rows, weight, BOUGHT_TOGETHER)


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
    ok = model.catalog.available.take(items)
    if rule.category is not None:
        ok &= model.catalog.category[items] == rule.category
    if len(rule.blocked) and len(items):
        at = np.minimum(np.searchsorted(items, rule.blocked), len(items) - 1)
        ok[at[items[at] == rule.blocked]] = False
    return ok


def _best(model: Model, candidates: Scores, k: int, rule: _Filter) -> Scores:
    """The k best candidates that pass the filter, best first."""
    if not len(candidates):
        return candidates
    ok = _passes(model, candidates.items, rule) & (candidates.scores > 0.0)
    # Ranked among the candidates that pass only (a few hundred of them): the same
    # list as masking the others with -inf, without a pass over all of them.
    passing = ok.nonzero()[0]
    top = passing.take(top_k(candidates.scores.take(passing), k))
    return Scores(
        candidates.items.take(top),
        candidates.scores.take(top),
        candidates.kinds.take(top),
        candidates.sources.take(top),
    )


def _row_list(model: Model, table: NeighborTable, idx: int, k: int, kind: int) -> Scores:
    """One neighbour row as a list: available partners, scored relative to the row's max."""
    ids, weights = table.row(idx, model.clock)
    if not len(ids) or weights[0] <= 0.0:
        return Scores.empty()
    scores = weights / weights[0]
    keep = (scores > 0.0) & model.catalog.available[ids]
    ids, scores = ids[keep][:k], scores[keep][:k]
    return Scores(ids, scores, np.full(len(ids), kind), np.full(len(ids), idx))


def _fill_with_popular(model: Model, ranked: Scores, k: int, rule: _Filter, kind: int) -> Scores:
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
    fill = Scores(items, scores, np.full(len(items), kind), np.full(len(items), -1))
    return ranked.then(fill)


def _listed(model: Model, ranked: Scores, strategy: str) -> RecList:
    """The list's columns: item ids, scores and reasons, as plain Python values."""
    ids = model.items.ids
    reasons = []
    for kind, source in zip(ranked.kinds.tolist(), ranked.sources.tolist(), strict=True):
        prefix = REASON_PREFIX[kind]
        reasons.append(prefix + ids[source] if prefix.endswith(":") else prefix)
    item_ids = [ids[item] for item in ranked.items.tolist()]
    return RecList(item_ids, ranked.scores.tolist(), reasons, strategy)
