"""The blend: one weight per scoring component, learnt online from the stream.

`combine` puts the components' candidates side by side, each component's scores
divided by its own maximum (so that a weight, not a scale, says how much it counts),
and scores every candidate by the weighted sum; the reason of a candidate is that of
the component that contributed most to it.

`learn` is called before the event it learns from is applied (prequential): it
returns the rank the blend gave the item the shopper chose, and keeps the event in a
sample of the last SAMPLE measured events (the features of the best CANDIDATES other
candidates and of the chosen item). Every SEARCH_EVERY events it tries weights around
the current ones on that sample: each weight multiplied or divided by exp(STEP) or
exp(3 STEP), one at a time, and each component active in most sampled events leading
alone, at each weight of LEADS. It moves MOVE of the way to the trial with the best
HR@20 + MRR@20 if that wins at least one more hit than the current weights (less is
noise). The search
optimises the metric itself rather than a surrogate loss, over a handful of
parameters, on what this shop's shoppers did lately; it needs no offline tuning.
(Exponentiated gradient on a pairwise ranking loss was tried first: it drifted weight
to components silent on most candidates and ended near uniform.) Weights stay on the
simplex and above FLOOR, so a component that comes back into play can regain weight.
Deterministic: a function of the events applied. Owns no scoring formula.

Pure code: numpy only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from recsrv.scoring import NO_ITEMS, Scores
from recsrv.state.items import run_firsts, top_k

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]

# Where the weights start, in COMPONENTS order (sessions, sequence, cooccurrence,
# repeat, popular): a reasonable shop before its own stream says otherwise.
PRIOR: Final = (0.35, 0.25, 0.2, 0.15, 0.05)
FLOOR: Final = 0.001
K: Final = 20
SAMPLE: Final = 256
CANDIDATES: Final = 48
SEARCH_EVERY: Final = 8
MIN_SAMPLE: Final = 32
STEP: Final = 0.4
# The weights of the leading component in the trials where one leads alone: 0.9 lets
# the others reorder what it scores within 10% of its best, 0.97 only near-ties. With
# 0.97 as well, file-order HR@20 / MRR@20 rose on every set tried (MovieLens .229/.059
# to .244/.062, the Diginetica-like clickstream .722/.408 to .727/.415); 0.99 instead
# of 0.97 gave less.
LEADS: Final = (0.9, 0.97)
# How far the weights go toward a winning trial. A quarter of the way: a trial that
# keeps winning is reached within a few searches, while one that wins once on the noisy
# sample no longer flips the blend from one corner to another. Moving all the way, the
# weights ended in a different corner for each event order and each small change of
# the model; a quarter raised HR@20 + MRR@20 on 10 of the 13 rows of docs/quality.md
# (MovieLens in time order .274/.074 to .291/.080, Instacart anonymous .356/.118 to
# .377/.131) and lowered it on two (MovieLens in u.data order .244/.062 to .233/.061).
MOVE: Final = 0.25


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
    ARRAYS: Final = ("weights", "features", "valid", "counters")

    def __init__(self, components: int = len(PRIOR)) -> None:
        prior = np.array(PRIOR[:components], dtype=np.float64)
        self.weights = prior / prior.sum()
        # The sample: per measured event, CANDIDATES rows of other candidates (valid
        # marks the real ones) and the chosen item's row last.
        self.features = np.zeros((SAMPLE, CANDIDATES + 1, components), dtype=np.float32)
        self.valid = np.zeros((SAMPLE, CANDIDATES), dtype=np.bool_)
        self.filled = 0
        self.position = 0
        self.since_search = 0

    def combine(self, parts: Sequence[Scores]) -> Blended:
        """The union of the components' candidates, scored by the weighted sum."""
        present = [part for part in parts if len(part)]
        if not present:
            empty = np.empty(0, dtype=np.float64)
            return Blended(NO_ITEMS, empty, NO_ITEMS, NO_ITEMS, np.empty((0, len(parts))))
        # Every component's rows, one run: the candidate, its column and what it says.
        rows = np.concatenate([part.items for part in present])
        ordered = np.sort(rows)
        items = ordered[run_firsts(ordered)]
        width = len(parts)
        columns = np.repeat(
            [column for column, part in enumerate(parts) if len(part)],
            [len(part) for part in present],
        )
        # Each row's cell in the candidates x components matrices, flat (put and take,
        # as methods: faster than two-dimensional fancy indexing on these sizes, and
        # than numpy's function wrappers).
        cells = np.searchsorted(items, rows) * width + columns
        features = np.zeros((len(items), width), dtype=np.float64)
        features.put(cells, np.concatenate([p.scores / p.scores.max() for p in present]))
        # Which row filled each cell, for the reason of the cell that leads a candidate.
        row_of = np.zeros(len(items) * width, dtype=np.int64)
        row_of.put(cells, np.arange(len(rows)))
        weighted = features * self.weights
        leading = weighted.argmax(axis=1)
        best = row_of.take(np.arange(0, len(items) * width, width) + leading)
        return Blended(
            items,
            weighted.sum(axis=1),
            np.concatenate([part.kinds for part in present]).take(best),
            np.concatenate([part.sources for part in present]).take(best),
            features,
        )

    def learn(self, blended: Blended, eligible: npt.NDArray[np.bool_], target: int) -> int:
        """Rank (1-based, among eligible candidates) that the blend gives `target`, 0 if it
        is not a candidate; a candidate target joins the sample, and the weights may move."""
        at = int(np.searchsorted(blended.items, target))
        if at >= len(blended.items) or blended.items[at] != target:
            return 0
        scores = np.where(eligible, blended.scores, -np.inf)
        scores[at] = -np.inf
        rank = 1 + int(np.count_nonzero(scores > blended.scores[at]))
        others = top_k(scores, CANDIDATES)
        row = self.position
        self.features[row] = 0.0
        self.features[row, : len(others)] = blended.features[others]
        self.features[row, CANDIDATES] = blended.features[at]
        self.valid[row] = False
        self.valid[row, : len(others)] = True
        self.position = (row + 1) % SAMPLE
        self.filled = min(self.filled + 1, SAMPLE)
        self.since_search += 1
        if self.since_search >= SEARCH_EVERY and self.filled >= MIN_SAMPLE:
            self.since_search = 0
            self._search()
        return rank

    def _search(self) -> None:
        """Move to the best of the current weights and the trials around them."""
        count = len(self.weights)
        features = self.features[: self.filled].astype(np.float64)
        # Each weight times or divided by e^STEP, and by e^(3 STEP) to leave a corner.
        moves = np.concatenate((np.eye(count), -np.eye(count)))
        steps = np.exp(np.concatenate((STEP * moves, 3.0 * STEP * moves)))
        # Also each component leading alone, the others breaking its ties: a shop whose
        # signal is one component's gets there in one move, not in many small ones.
        # Only a component that scores candidates in most of the sample's events: one
        # that is mostly silent (a user history in a mostly anonymous shop) would
        # "lead" by leaving the order to the others.
        active = (features.max(axis=1) > 0.0).mean(axis=0) >= 0.5
        leading = np.vstack([_leading(count, lead)[active] for lead in LEADS])
        trials = np.vstack((self.weights, self.weights * steps, leading))
        trials = np.maximum(trials / trials.sum(axis=1, keepdims=True), FLOOR)
        trials /= trials.sum(axis=1, keepdims=True)
        scores = features @ trials.T  # events x rows x trials
        chosen = scores[:, CANDIDATES, :]
        valid = self.valid[: self.filled, :, None]
        above = (scores[:, :CANDIDATES, :] > chosen[:, None, :]) & valid
        rank = 1 + above.sum(axis=1)
        hit = rank <= K
        quality = hit.mean(axis=0) + np.where(hit, 1.0 / rank, 0.0).mean(axis=0)
        best = int(np.argmax(quality))
        # A move must win at least one more hit on the sample: noise moves nothing.
        if quality[best] - quality[0] >= 1.0 / self.filled:
            moved = (1.0 - MOVE) * self.weights + MOVE * trials[best]
            self.weights = moved / moved.sum()

    def to_arrays(self) -> dict[str, npt.NDArray[Any]]:
        counters = np.array([self.filled, self.position, self.since_search], dtype=np.int64)
        return {
            "weights": self.weights,
            "features": self.features,
            "valid": self.valid,
            "counters": counters,
        }

    def restore(self, arrays: Mapping[str, npt.NDArray[Any]]) -> None:
        """Take over what to_arrays gave (the same number of components)."""
        self.weights = arrays["weights"].astype(np.float64)
        self.features[:] = arrays["features"]
        self.valid[:] = arrays["valid"]
        self.filled, self.position, self.since_search = (int(v) for v in arrays["counters"])


def _leading(count: int, lead: float) -> Floats:
    """One trial per component: it weighs `lead`, the others share the rest equally."""
    rest = (1.0 - lead) / max(count - 1, 1)
    return np.full((count, count), rest) + np.eye(count) * (lead - rest)
