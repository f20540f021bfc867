"""Next-item metrics over ranked lists: HR@k, MRR@k, coverage and popularity rank; and
how far a stream of events is from `ts` order.

Pure code. One `Tally` per algorithm records, for every prediction, the rank of the
true next item in the list (0 when it is not in the top K), which gives HR@k and
MRR@k for every k <= K at once. `Disorder` counts the events that come after a newer
one, as `recsrv evaluate` replays them and as `recsrv replay` would publish them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass
class Tally:
    k: int
    # Rank (1-based) of the true next item in each list; 0 when it was missed.
    ranks: list[int] = field(default_factory=list)
    recommended: set[str] = field(default_factory=set)
    popularity_rank_sum: float = 0.0
    listed: int = 0
    seconds: float = 0.0  # spent making the lists
    learning_seconds: float = 0.0  # spent learning the replayed events

    def record(
        self,
        target: str,
        items: Sequence[str],
        seconds: float,
        popularity_rank: Mapping[str, int],
    ) -> None:
        """One prediction: the list an algorithm gave (best first) and the item that came."""
        items = items[: self.k]
        try:
            rank = items.index(target) + 1
        except ValueError:
            rank = 0
        self.ranks.append(rank)
        self.recommended.update(items)
        unranked = len(popularity_rank) + 1
        self.popularity_rank_sum += sum(popularity_rank.get(item, unranked) for item in items)
        self.listed += len(items)
        self.seconds += seconds

    @property
    def n(self) -> int:
        return len(self.ranks)

    def hit_rate(self, k: int | None = None) -> float:
        """Share of predictions whose next item is in the top k (default K)."""
        k = self.k if k is None else k
        if not self.ranks:
            return 0.0
        return sum(1 for rank in self.ranks if 0 < rank <= k) / len(self.ranks)

    def mrr(self, k: int | None = None) -> float:
        """Mean reciprocal rank of the next item, counting 0 when it is not in the top k."""
        k = self.k if k is None else k
        if not self.ranks:
            return 0.0
        return sum(1.0 / rank for rank in self.ranks if 0 < rank <= k) / len(self.ranks)

    def coverage(self, catalog_size: int) -> float:
        """Share of the catalog that appeared in at least one list."""
        return len(self.recommended) / catalog_size if catalog_size else 0.0

    def mean_popularity_rank(self) -> float:
        """Mean popularity rank (1 = most interacted with) of the items listed."""
        return self.popularity_rank_sum / self.listed if self.listed else 0.0

    def ms_per_list(self) -> float:
        return 1000.0 * self.seconds / self.n if self.n else 0.0

    def wall_seconds(self) -> float:
        """All the time the algorithm took in the run: learning and listing."""
        return self.seconds + self.learning_seconds

    def summary(self, catalog_size: int) -> dict[str, object]:
        return {
            "hr": self.hit_rate(),
            "mrr": self.mrr(),
            "coverage": self.coverage(catalog_size),
            "popularity_rank": self.mean_popularity_rank(),
            "ms_per_list": self.ms_per_list(),
            "seconds": self.wall_seconds(),
            "hr_at": [self.hit_rate(k) for k in range(1, self.k + 1)],
            "mrr_at": [self.mrr(k) for k in range(1, self.k + 1)],
        }


def popularity_ranks(counts: Mapping[str, int]) -> dict[str, int]:
    """Rank of each item by its count, 1 for the most frequent (ties by id, for stability)."""
    ordered = sorted(counts, key=lambda item: (-counts[item], item))
    return {item: rank for rank, item in enumerate(ordered, start=1)}


@dataclass
class Disorder:
    """Events counted in the order they come: those older than the newest before them
    (`out_of_order`), and among those the ones more than `bound` seconds older
    (`beyond_lateness`; the bound is sessions.ttl_s + sessions.allowed_lateness_s, past
    which the server no longer holds the event's session)."""

    bound: float
    events: int = 0
    out_of_order: int = 0
    beyond_lateness: int = 0
    newest: float = -math.inf

    def see(self, ts: float | None) -> None:
        """One event; `ts` None for one without a time (the server stamps it on arrival,
        so it is never late)."""
        self.events += 1
        if ts is None:
            return
        if ts >= self.newest:
            self.newest = ts
            return
        self.out_of_order += 1
        if ts < self.newest - self.bound:
            self.beyond_lateness += 1
