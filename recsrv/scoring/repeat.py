"""Repeat consumption: the user's own past items (P-TopFreq), by their profile weight
(carts and purchases, accumulated), relative to the heaviest. Pure code."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from recsrv.scoring import BOUGHT_BEFORE, Context, Scores

if TYPE_CHECKING:
    from recsrv.model import Model


def score(model: Model, context: Context) -> Scores:
    if not len(context.profile):
        return Scores.empty()
    relative = context.profile_weights / context.profile_weights.max()
    # A profile's items are distinct (a dict's keys): summing per candidate would
    # change nothing, so they are only put in index order.
    order = context.profile.argsort()
    count = len(order)
    return Scores(
        context.profile.take(order),
        relative.take(order),
        np.full(count, BOUGHT_BEFORE, dtype=np.int64),
        np.full(count, -1, dtype=np.int64),
    )
