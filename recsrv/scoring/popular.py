"""Popularity: the shop's trending items (time-decayed), relative to the top one. A
weak signal on its own, but what a blend leans on where sessions say little. Pure code."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import numpy as np

from recsrv.scoring import POPULAR, Context, Scores

if TYPE_CHECKING:
    from recsrv.model import Model

# How many of the most popular items are candidates.
POPULAR_CANDIDATES: Final = 100


def score(model: Model, context: Context) -> Scores:
    n = len(model.items)
    items, values = model.popularity.top(
        POPULAR_CANDIDATES, model.catalog.available[:n], model.clock
    )
    keep = values > 0.0
    items, values = items[keep], values[keep]
    order = np.argsort(items)
    items, values = items[order], values[order]
    return Scores(
        items,
        values,
        np.full(len(items), POPULAR, dtype=np.int64),
        np.full(len(items), -1, dtype=np.int64),
    )
