"""Repeat consumption: the user's own past items (P-TopFreq), by their profile weight
(carts and purchases, accumulated), relative to the heaviest. Pure code."""

from __future__ import annotations

from typing import TYPE_CHECKING

from recsrv.scoring import BOUGHT_BEFORE, Context, Contributions, Scores

if TYPE_CHECKING:
    from recsrv.model import Model


def score(model: Model, context: Context) -> Scores:
    if not len(context.profile):
        return Scores.empty()
    found = Contributions()
    relative = context.profile_weights / context.profile_weights.max()
    found.add_items(context.profile, relative, BOUGHT_BEFORE)
    return found.summed()
