"""Exponential decay on event time, stored so that one update touches one entry.

A decayed sum v(t) = Σ wᵢ·2^(-(t-tᵢ)/h) is kept as s = Σ wᵢ·e^(λ(tᵢ-t_ref)), λ = ln 2 / h.
Adding an event costs one exp; reading multiplies by e^(-λ(t-t_ref)); two entries of
the same array compare correctly without any read factor. When λ(t-t_ref) grows past
REBASE_EXPONENT the owner multiplies its arrays by `rebase(t)` and t_ref moves to t,
so stored values stay far inside float64's range. Older (out-of-order) events just
get a factor below 1.
"""

from __future__ import annotations

import math

REBASE_EXPONENT = 30.0


class ExpScale:
    """The reference time and rate of one family of decayed arrays."""

    __slots__ = ("rate", "t_ref")

    def __init__(self, half_life_s: float) -> None:
        self.rate = math.log(2.0) / half_life_s
        self.t_ref = 0.0

    def due(self, ts: float) -> bool:
        """Whether a write at `ts` must first rebase the arrays."""
        return self.rate * (ts - self.t_ref) > REBASE_EXPONENT

    def rebase(self, ts: float) -> float:
        """Move t_ref to `ts`; return the factor the owner must multiply its arrays by."""
        # Underflow to 0.0 is correct here: those values are negligible at `ts`.
        shrink = math.exp(-self.rate * (ts - self.t_ref))
        self.t_ref = ts
        return shrink

    def write_factor(self, ts: float) -> float:
        """Multiplier of a weight observed at `ts` (call `due` first)."""
        return math.exp(self.rate * (ts - self.t_ref))

    def read_factor(self, now: float) -> float:
        """Multiplier that turns stored values into their decayed value at `now`."""
        # t_ref never passes the model clock; the clamp only guards a caller's odd `now`.
        return math.exp(min(-self.rate * (now - self.t_ref), 700.0))
