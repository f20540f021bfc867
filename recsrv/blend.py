"""The blend: one weight per scoring component, learnt online from the stream.

`combine` puts the components' candidates side by side, each component's scores
divided by its own maximum (so that a weight, not a scale, says how much it counts),
and scores every candidate by the weighted sum; the reason of a candidate is that of
the component that contributed most to it.

`learn` is called before the event it learns from is applied (prequential). It
returns the rank the served weights gave the item the shopper chose, and scores the
same choice under every one of a fixed set of weightings, the experts, in one matrix
product: every weighting on a grid of the simplex in steps of 1/GRID, each component
leading alone at each weight of LEADS, and the prior. Each expert keeps an
exponential average of its HR@20 + MRR_WEIGHT x MRR@20 over about the last HORIZON
measured events, and the served weights are the Hedge mixture of the experts: each counts
exp(ETA x (its average - the best average)). So every measured event judges every
expert once, on the model as it was at that moment, and the weights follow the
weightings that have ranked this shop's choices best lately; weightings that are all
about as good share the lead instead of taking turns.

(Until 2026-11-30 a hill climber kept the last 256 measured events and, every 8,
moved a quarter of the way toward the best of some 30 trials around the current
weights. Picking the best of 30 on 256 events mostly picked noise: its weights swung
from one corner of the simplex to another throughout a replay, and where they ended
depended on the order of the events. On MovieLens in file order they ended far from
the weightings that ranked best (HR@20 .258 against .276 for the time order's final
weights, fixed); docs/quality.md has the figures of both.)

Ranks are counted among the best CONTENDERS candidates of each component and the
chosen item: a candidate in no component's top CONTENDERS can hardly reach an
expert's top 20, and the product stays at most 5 x CONTENDERS + 1 rows by the
experts. Deterministic: a function of the events applied. Owns no scoring formula.

Pure code: numpy only.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from recsrv.scoring import NO_ITEMS, Scores
from recsrv.state.items import run_firsts

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]

# Where the weights start, in COMPONENTS order (sessions, sequence, cooccurrence,
# repeat, popular): a reasonable shop before its own stream says otherwise.
PRIOR: Final = (0.35, 0.25, 0.2, 0.15, 0.05)
FLOOR: Final = 0.001
K: Final = 20
# Steps of the experts' grid: 1/8, 495 weightings of five components. 1/10 (1,001)
# costs twice as much per measured event, and ranked no better when tried (serving the
# single best weighting).
GRID: Final = 8
# Besides the grid, each component leading alone at these weights, the others sharing
# the rest: at 0.97 the others only break near-ties of the leader.
LEADS: Final = (0.9, 0.97)
# Measured events an expert's average mostly covers. Serving the single best weighting,
# 500 (grid 1/8) gave the clickstream's MRR@20 .409-.413, 1,000 (grid 1/10) .416-.419.
HORIZON: Final = 1000
# How sharply the mixture favours the best experts: an average 0.005 below the best
# (HR@20 + MRR_WEIGHT x MRR@20) counts e^-3 as much. At 200 the mixture spread weight over
# components that change nothing and lost MRR@20 on the sequential streams.
ETA: Final = 600.0
# What a hit is worth: 1 + MRR_WEIGHT / rank, so a first place counts four times a
# twentieth. With HR@20 + MRR@20 (first place twice a twentieth) the experts were
# ranked almost by HR@20 alone: on the clickstream the mixture leant towards the
# weightings that put more choices somewhere in the top 20 and fewer first (HR@20
# .726, MRR@20 .413, below sequential rules' .420); at 3, .714 / .421, and within
# .005 of the former on every other data set of docs/quality.md.
MRR_WEIGHT: Final = 3.0
CONTENDERS: Final = 30


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
    ARRAYS: Final = ("weights", "quality", "counters")

    def __init__(self, components: int = len(PRIOR)) -> None:
        prior = np.array(PRIOR[:components], dtype=np.float64)
        self.weights = prior / prior.sum()
        self.experts = _experts(self.weights)
        self._experts_t = np.ascontiguousarray(self.experts.T)
        # Per expert: exponential average of HR@20 + MRR_WEIGHT x MRR@20 on the
        # measured events.
        self.quality = np.zeros(len(self.experts), dtype=np.float64)
        self.measured = 0

    def combine(self, parts: Sequence[Scores]) -> Blended:
        """The union of the components' candidates, scored by the weighted sum."""
        present = [part for part in parts if len(part)]
        if not present:
            empty = np.empty(0, dtype=np.float64)
            return Blended(NO_ITEMS, empty, NO_ITEMS, NO_ITEMS, np.empty((0, len(parts))))
        # Every component's rows, one run: the candidate, its column and what it says.
        lengths = [len(part) for part in present]
        rows = np.concatenate([part.items for part in present])
        ordered = np.sort(rows)
        items = ordered[run_firsts(ordered)]
        width = len(parts)
        columns = np.repeat([column for column, part in enumerate(parts) if len(part)], lengths)
        # Each row's cell in the candidates x components matrices, flat (put and take,
        # as methods: faster than two-dimensional fancy indexing on these sizes, and
        # than numpy's function wrappers).
        cells = items.searchsorted(rows)
        cells *= width
        cells += columns
        features = np.zeros((len(items), width), dtype=np.float64)
        # Each component's scores over its own maximum: the maxima of all at once, one
        # reduceat over the run (the same divisions as part by part).
        scores = np.concatenate([part.scores for part in present])
        starts = np.array([0, *itertools.accumulate(lengths[:-1])])
        scores /= np.maximum.reduceat(scores, starts).repeat(lengths)
        features.put(cells, scores)
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
        is not a candidate; a candidate target is ranked by every expert too, and the
        weights follow the experts' averages."""
        at = int(np.searchsorted(blended.items, target))
        if at >= len(blended.items) or blended.items[at] != target:
            return 0
        scores = np.where(eligible, blended.scores, -np.inf)
        scores[at] = -np.inf
        rank = 1 + int(np.count_nonzero(scores > blended.scores[at]))
        features, rivals = _contenders(blended.features, eligible, at)
        trials = features @ self._experts_t  # rows x experts; the chosen item last
        above = (trials[:-1] > trials[-1]) & rivals[:, None]
        ranks = 1 + np.count_nonzero(above, axis=0)
        hit = ranks <= K
        self.measured += 1
        # Plain means until HORIZON measured events, then an exponential average.
        alpha = max(1.0 / self.measured, 1.0 / HORIZON)
        self.quality += alpha * (hit + np.where(hit, MRR_WEIGHT / ranks, 0.0) - self.quality)
        mixture = np.exp(ETA * (self.quality - self.quality.max()))
        weights = mixture @ self.experts
        self.weights = weights / weights.sum()
        return rank

    def to_arrays(self) -> dict[str, npt.NDArray[Any]]:
        return {
            "weights": self.weights,
            "quality": self.quality,
            "counters": np.array([self.measured], dtype=np.int64),
        }

    def restore(self, arrays: Mapping[str, npt.NDArray[Any]]) -> None:
        """Take over what to_arrays gave (the same number of components)."""
        self.weights = arrays["weights"].astype(np.float64)
        self.quality = arrays["quality"].astype(np.float64)
        self.measured = int(arrays["counters"][0])


def _contenders(
    features: Floats, eligible: npt.NDArray[np.bool_], at: int
) -> tuple[Floats, npt.NDArray[np.bool_]]:
    """The rows the experts rank: the eligible candidates among the best CONTENDERS of
    each component, then the chosen item's row (`at`) last; and which of the rows before
    it are rivals (eligible, not the chosen item)."""
    rivals = eligible.copy()
    rivals[at] = False
    if len(features) > CONTENDERS:
        best = np.argpartition(-features, CONTENDERS, axis=0)[:CONTENDERS]
        kept = np.zeros(len(features), dtype=np.bool_)
        kept[best.ravel()] = True
        kept &= rivals
        rows = kept.nonzero()[0]
        return np.vstack((features[rows], features[at])), np.ones(len(rows), dtype=np.bool_)
    return np.vstack((features, features[at])), rivals


def _experts(prior: Floats) -> Floats:
    """The prior, every weighting on the simplex grid of step 1/GRID, and each component
    leading at each of LEADS; none below FLOOR, each summing to 1."""
    count = len(prior)
    rows = [prior]
    # Stars and bars: GRID steps shared among `count` components.
    for bars in itertools.combinations(range(GRID + count - 1), count - 1):
        shares = np.diff(np.array((-1, *bars, GRID + count - 1))) - 1
        rows.append(shares / GRID)
    for lead in LEADS:
        rows.extend(_leading(count, lead))
    experts = np.maximum(np.array(rows, dtype=np.float64), FLOOR)
    normalised: Floats = experts / experts.sum(axis=1, keepdims=True)
    return normalised


def _leading(count: int, lead: float) -> Floats:
    """One weighting per component: it weighs `lead`, the others share the rest equally."""
    rest = (1.0 - lead) / max(count - 1, 1)
    return np.full((count, count), rest) + np.eye(count) * (lead - rest)
