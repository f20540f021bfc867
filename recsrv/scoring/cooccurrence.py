"""Co-occurrence: items browsed near the session's recent items (the `similar` table,
order-aware but two-way) and items carted or bought with its basket (`bought_together`),
and the neighbours of the request's context item.

Each of the RECENT_ROWS newest events lends its item's neighbour row, scaled to max 1
and by `recency_decay` per step back; a removed item lends nothing. Pure code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import numpy as np

from recsrv.scoring import BOUGHT_TOGETHER, SIMILAR_TO, Context, Contributions, Scores
from recsrv.state.catalog import TYPE_CODE

if TYPE_CHECKING:
    from recsrv.model import Model

REMOVE_FROM_CART = TYPE_CODE["remove_from_cart"]
# The newest events whose rows are read: further back, recency_decay (0.8) leaves
# less than 1% of the newest one's weight, for the cost of a row each.
RECENT_ROWS: Final = 20


def score(model: Model, context: Context) -> Scores:
    config = model.config
    found = Contributions()
    recent, types = context.recent[:RECENT_ROWS], context.recent_types[:RECENT_ROWS]
    recency = config.recency_decay ** np.arange(len(recent), dtype=np.float64)
    recency[types == REMOVE_FROM_CART] = 0.0  # a removed item is no lead
    found.add_rows(model.similar, recent, recency, SIMILAR_TO)
    weights = np.full(len(context.basket), config.bought_together_weight)
    found.add_rows(model.bought_together, context.basket, weights, BOUGHT_TOGETHER)
    if context.item >= 0:  # the product page being looked at
        rows = np.array([context.item], dtype=np.int64)
        found.add_rows(model.similar, rows, np.ones(1), SIMILAR_TO)
        weight = np.full(1, config.bought_together_weight)
        found.add_rows(model.bought_together, rows, weight, BOUGHT_TOGETHER)
    return found.summed()
