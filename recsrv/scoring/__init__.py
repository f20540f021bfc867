"""Scoring components: each turns what the state knows about a request into scored
candidates, with the reason each one is there.

One module per method, all of the same shape: a function of the model and a
`Context` (what the request knows: the session's items, its basket, the user's
profile) returning `Scores`. `recsrv.blend` combines them with learnt weights and
owns no formula; `recsrv.recommend` filters, ranks and fills in.

Pure code: numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from recsrv.state.items import run_firsts, run_starts, stable_order
from recsrv.state.neighbors import NeighborTable

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]
NO_ITEMS: Final[Ints] = np.empty(0, dtype=np.int64)

# Reason kinds, and how a reason is written (a kind ending in ":" names its source item).
SIMILAR_TO, BOUGHT_TOGETHER, BOUGHT_BEFORE, POPULAR, SAME_CATEGORY, FOLLOWS, SIMILAR_SESSIONS = (
    range(7)
)
REASON_PREFIX: Final = {
    SIMILAR_TO: "similar_to:",
    BOUGHT_TOGETHER: "bought_together:",
    BOUGHT_BEFORE: "bought_before",
    POPULAR: "popular",
    SAME_CATEGORY: "same_category",
    FOLLOWS: "often_next_after:",
    SIMILAR_SESSIONS: "similar_sessions",
}


@dataclass(frozen=True, slots=True)
class Scores:
    """Candidates (item indices) with their scores, and for each the reason kind and the
    source item (-1 when the reason names none). A component's candidates are distinct,
    ascending and positive; a ranked list holds them best first."""

    items: Ints
    scores: Floats
    kinds: Ints
    sources: Ints

    @staticmethod
    def empty() -> Scores:
        return Scores(NO_ITEMS, np.empty(0), NO_ITEMS, NO_ITEMS)

    def __len__(self) -> int:
        return len(self.items)

    def then(self, other: Scores) -> Scores:
        """These rows followed by `other`'s (for ranked lists, not candidate sets)."""
        return Scores(
            np.concatenate((self.items, other.items)),
            np.concatenate((self.scores, other.scores)),
            np.concatenate((self.kinds, other.kinds)),
            np.concatenate((self.sources, other.sources)),
        )


@dataclass(frozen=True, slots=True)
class Context:
    """What a request knows, gathered once for every component.

    recent/recent_types: the session's item events newest first (ring buffer order);
    sequence: its distinct items in ts order, oldest first; basket: carted or bought
    in it; profile/profile_weights: the user's past items; now: the session's time
    (its newest ts); record: the serial of the session's own index record (-1: none);
    item: the context item of the request (the product page shown; -1: none).
    """

    recent: Ints
    recent_types: npt.NDArray[np.int8]
    sequence: Ints
    basket: Ints
    profile: Ints
    profile_weights: Floats
    now: float
    record: int
    item: int = -1


class Contributions:
    """(candidate, contribution, reason kind, reason source) rows from several sources,
    summed per candidate by `summed`."""

    def __init__(self) -> None:
        self._items: list[npt.NDArray[np.integer]] = []
        self._values: list[Floats] = []
        self._kinds: list[Ints] = []
        self._sources: list[npt.NDArray[np.integer]] = []

    def add_items(self, items: Ints, values: Floats, kind: int) -> None:
        """The items themselves as candidates (their reason names no source item)."""
        self.add(items, values, kind, np.full(len(items), -1, dtype=np.int64))

    def add_rows(self, table: NeighborTable, rows: Ints, row_weights: Floats, kind: int) -> None:
        """The neighbours of `rows`, each row scaled to max 1 and times its row weight."""
        if len(rows) == 0:
            return
        ids, weights = table.gather(rows)
        row_max = np.maximum.reduce(weights, axis=1)  # the ufunc: max() is a Python call
        # An empty row (max 0) is divided by inf: scale 0, as its weights are.
        scale = row_weights / np.where(row_max > 0.0, row_max, np.inf)
        values = (weights * scale[:, None]).ravel()
        filled = (values > 0.0).nonzero()[0]  # empty slots hold weight 0
        sources = rows.take(filled // weights.shape[1])
        self.add(ids.take(filled), values.take(filled), kind, sources)

    def add(
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

    def summed(self) -> Scores:
        """One row per distinct candidate, in index order: its total, and the reason of
        its largest contribution (ties go to the contribution added first)."""
        if not self._items:
            return Scores.empty()
        # One source (the common case: a session's recent rows, no basket): its arrays
        # as they are, not copies joined.
        single = len(self._items) == 1
        items = self._items[0] if single else np.concatenate(self._items)
        values = self._values[0] if single else np.concatenate(self._values)
        # A stable sort groups each candidate's contributions, in the order added.
        order, grouped = stable_order(items)
        first = run_firsts(grouped)
        starts = first.nonzero()[0]
        grouped_values = values.take(order)
        group_max = np.maximum.reduceat(grouped_values, starts)
        # The group of each entry (cumsum on int64, several times faster than on bool).
        group = first.astype(np.int64)
        group.cumsum(out=group)
        group -= 1
        # The first contribution of each group that equals the group's maximum.
        at_max = (grouped_values == group_max.take(group)).nonzero()[0]
        best = order.take(at_max[run_starts(group.take(at_max))])
        return Scores(
            grouped.take(starts),
            np.add.reduceat(grouped_values, starts),
            (self._kinds[0] if single else np.concatenate(self._kinds)).take(best),
            (self._sources[0] if single else np.concatenate(self._sources))
            .take(best)
            .astype(np.int64, copy=False),
        )
