"""Prequential quality: how the served blend ranks what shoppers choose next, measured
on the live stream before each measured event is learnt.

Every `every`-th eligible event (an item event of a session that already has items,
to an item new to it) is measured, and every one of the first WARM_UP: the blend
ranks the session's candidates, the rank of the chosen item is recorded, and the
blend learns from it. A young shop thus tunes its blend from its first few thousand
sessions' events (with a shorter warm-up the weights froze in the regime of the
stream's first minutes: on a 300-session sequential stream, MRR@20 .556 against .613
measuring all), and a busy one spends little on it afterwards. Counting events, not
time, keeps it a function of the stream. HR@20 and MRR@20 are kept over all measured
events and as exponential averages over about the last RECENT of them.

Pure code.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

K: Final = 20
RECENT: Final = 1000
WARM_UP: Final = 4096


class Prequential:
    FIELDS: Final = (
        "countdown",
        "predictions",
        "hits",
        "reciprocal_sum",
        "recent_hr",
        "recent_mrr",
    )

    def __init__(self, every: int) -> None:
        self.every = every
        self.countdown = 0
        self.predictions = 0
        self.hits = 0
        self.reciprocal_sum = 0.0
        self.recent_hr = 0.0
        self.recent_mrr = 0.0

    def due(self) -> bool:
        """Count an eligible event; True when this one is to be measured."""
        if self.predictions < WARM_UP:
            return True
        if self.countdown > 0:
            self.countdown -= 1
            return False
        self.countdown = self.every - 1
        return True

    def record(self, rank: int) -> None:
        """The chosen item's rank in the blended list (0: not in it)."""
        hit = 0 < rank <= K
        reciprocal = 1.0 / rank if hit else 0.0
        self.predictions += 1
        self.hits += hit
        self.reciprocal_sum += reciprocal
        # Plain means until RECENT predictions, then an exponential average.
        alpha = max(1.0 / self.predictions, 1.0 / RECENT)
        self.recent_hr += alpha * (hit - self.recent_hr)
        self.recent_mrr += alpha * (reciprocal - self.recent_mrr)

    @property
    def hr(self) -> float:
        return self.hits / self.predictions if self.predictions else 0.0

    @property
    def mrr(self) -> float:
        return self.reciprocal_sum / self.predictions if self.predictions else 0.0

    def to_array(self) -> npt.NDArray[np.float64]:
        return np.array([float(getattr(self, name)) for name in self.FIELDS], dtype=np.float64)

    def restore(self, values: npt.NDArray[np.float64]) -> None:
        countdown, predictions, hits, reciprocal_sum, recent_hr, recent_mrr = values.tolist()
        self.countdown = int(countdown)
        self.predictions = int(predictions)
        self.hits = int(hits)
        self.reciprocal_sum = reciprocal_sum
        self.recent_hr = recent_hr
        self.recent_mrr = recent_mrr
