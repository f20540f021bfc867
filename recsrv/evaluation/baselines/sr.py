"""SR (sequential rules): items that followed the session's last item within a few steps
in other sessions, weighted 1/distance (Kamehkhosh et al. 2017; Ludewig & Jannach 2018).

A rule a → b gains 1/d each time b comes d ≤ `steps` positions after a in a session's
ts-ordered sequence (a ≠ b: an item never follows itself). Defaults from session-rec's
`algorithms/baselines/sr.py` (rn5l/session-rec): steps=10, weighting "div" (1/d),
pruning=20.

The cut to 20: the full weights are stored; `scores` takes the `keep` heaviest rules of
the last item (equal weights by item id) at recommend time, *before* the session's own
items are excluded, as session-rec prunes after fitting, before any prediction. So
fewer than `keep` may remain after exclusion, and POP tops the list up.

A late step changes the distances of the pairs around it: its session's rules are
taken out and counted again over the new order.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Set

from recsrv.evaluation.baselines.base import Step, best
from recsrv.evaluation.baselines.pop import Pop
from recsrv.evaluation.baselines.sessions import Sequences

_ZERO = 1e-9  # what is left of a rule taken out and not counted again


class SequentialRules:
    """Rules a → b for b following a within `steps` positions, weighted 1/distance."""

    name = "sr"

    def __init__(self, pop: Pop, steps: int = 10, keep: int = 20) -> None:
        self.pop = pop
        self.steps = steps
        self.keep = keep
        self.sequences = Sequences()
        self.rules: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))

    def observe(self, step: Step) -> None:
        at = self.sequences.add(step)
        sequence = self.sequences.items[step.session_id]
        if at == len(sequence) - 1:
            self._count_after(sequence, at, 1.0)
            return
        before = sequence[:at] + sequence[at + 1 :]
        for position in range(1, len(before)):
            self._count_after(before, position, -1.0)
        for position in range(1, len(sequence)):
            self._count_after(sequence, position, 1.0)
        for earlier in set(sequence):
            rules = self.rules[earlier]
            for later in [later for later, weight in rules.items() if weight < _ZERO]:
                del rules[later]

    def _count_after(self, sequence: list[str], position: int, sign: float) -> None:
        """Add (sign 1) or take out (-1) the rules ending at `sequence[position]`."""
        item = sequence[position]
        for distance in range(1, min(self.steps, position) + 1):
            earlier = sequence[position - distance]
            if earlier != item:
                self.rules[earlier][item] += sign / distance

    def scores(self, session_id: str, user_id: str | None, now: float) -> dict[str, float]:
        """The `keep` heaviest rules of the session's last item."""
        last = self.sequences.last(session_id)
        rules = self.rules.get(last) if last is not None else None
        if not rules:
            return {}
        kept = heapq.nsmallest(self.keep, ((-weight, item) for item, weight in rules.items()))
        return {item: -weight for weight, item in kept}

    def recommend(
        self, session_id: str, user_id: str | None, k: int, exclude: Set[str], now: float
    ) -> list[str]:
        scores = self.scores(session_id, user_id, now)
        return self.pop.fill(best(scores, k, exclude), k, exclude)
