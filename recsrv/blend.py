"""The blend: one weight per scoring component, learnt online from the stream.

`combine` puts the components' candidates side by side, each component's scores
divided by its own maximum (so that a weight, not a scale, says how much it counts),
and scores every candidate by the weighted sum; the reason of a candidate is that of
the component that contributed most to it.

`learn` is one step of exponentiated gradient on a ranking loss, made before the
event it learns from is applied (prequential): when the item the shopper chose ranks
below others, each weight is multiplied by exp(-η·g), where g is how much more that
component scored the items ranked above the chosen one (the top K of them, on
average) than the chosen one. Components that pushed wrong items up lose weight,
those that favoured the right one gain. The weights stay on the simplex, mixed with
a small uniform share so that none ever dies and a changing shop can be followed.
Deterministic: a function of the events applied. Owns no scoring formula.

Pure code: numpy only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from recsrv.scoring import NO_ITEMS, Scores

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]

# Where the weights start, in COMPONENTS order (sessions, sequence, cooccurrence,
# repeat, popular): a reasonable shop before its own stream says otherwise.
PRIOR: Final = (0.3, 0.25, 0.2, 0.2, 0.05)
# Share of the uniform mix kept in the weights.
FLOOR: Final = 0.02
# The items above the chosen one that a step compares it with.
COMPARE_TOP: Final = 20


@dataclass(frozen=True, slots=True)
class Blended:
    """Candidates (ascending indices) with blended scores, reasons, and the per-component
    normalised scores behind them (candidates x components)."""

    items: Ints
    scores: Floats
    kinds: Ints
    sources: Ints
    features: Floats


class Blend:
    def __init__(self, learning_rate: float, components: int = len(PRIOR)) -> None:
        self.learning_rate = learning_rate
        prior = np.array(PRIOR[:components], dtype=np.float64)
        self.weights = prior / prior.sum()

    def combine(self, parts: Sequence[Scores]) -> Blended:
        """The union of the components' candidates, scored by the weighted sum."""
        present = [part for part in parts if len(part)]
        if not present:
            empty = np.empty(0, dtype=np.float64)
            return Blended(NO_ITEMS, empty, NO_ITEMS, NO_ITEMS, np.empty((0, len(parts))))
        items, inverse = np.unique(np.concatenate([p.items for p in present]), return_inverse=True)
        features = np.zeros((len(items), len(parts)), dtype=np.float64)
        kinds = np.zeros((len(items), len(parts)), dtype=np.int64)
        sources = np.full((len(items), len(parts)), -1, dtype=np.int64)
        start = 0
        for column, part in enumerate(parts):
            if not len(part):
                continue
            rows = inverse[start : start + len(part)]
            start += len(part)
            features[rows, column] = part.scores / part.scores.max()
            kinds[rows, column] = part.kinds
            sources[rows, column] = part.sources
        weighted = features * self.weights
        leading = weighted.argmax(axis=1)
        picked = np.arange(len(items))
        return Blended(
            items.astype(np.int64, copy=False),
            weighted.sum(axis=1),
            kinds[picked, leading],
            sources[picked, leading],
            features,
        )

    def learn(self, blended: Blended, eligible: npt.NDArray[np.bool_], target: int) -> int:
        """Rank (1-based, among eligible candidates) of the chosen item `target` before
        this step, 0 if it is not a candidate; then one learning step."""
        at = int(np.searchsorted(blended.items, target))
        if at >= len(blended.items) or blended.items[at] != target:
            return 0
        scores = np.where(eligible, blended.scores, -np.inf)
        scores[at] = blended.scores[at]
        above = np.flatnonzero(scores > scores[at])
        rank = len(above) + 1
        if len(above):
            if len(above) > COMPARE_TOP:
                above = above[np.argpartition(-scores[above], COMPARE_TOP - 1)[:COMPARE_TOP]]
            gradient = blended.features[above].mean(axis=0) - blended.features[at]
            weights = self.weights * np.exp(-self.learning_rate * gradient)
            weights /= weights.sum()
            self.weights = (1.0 - FLOOR) * weights + FLOOR / len(weights)
        return rank
