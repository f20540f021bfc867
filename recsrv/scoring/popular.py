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
DERIVED_KEY: Final = "popular_candidates"


def score(model: Model, context: Context) -> Scores:
    """The same for every request until the next event: computed once in between."""
    found: Scores | None = model.derived.get(DERIVED_KEY)
    if found is None:
        found = model.derived[DERIVED_KEY] = _popular(model)
    return found


def _popular(model: Model) -> Scores:
    n = len(model.items)
    items, values = model.popularity.top(
        POPULAR_CANDIDATES, model.catalog.available[:n], model.clock
    )
    keep = values > 0.0
    items, values = items[keep], values[keep]
    order = np.argsort(items)
    arrays = (
        items[order],
        values[order],
        np.full(len(items), POPULAR, dtype=np.int64),
        np.full(len(items), -1, dtype=np.int64),
    )
    for array in arrays:
        array.setflags(write=False)  # shared by the requests until the next event
    return Scores(*arrays)
