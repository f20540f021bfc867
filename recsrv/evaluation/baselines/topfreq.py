"""GP-TopFreq: the user's own most frequent items, filled up with the globally popular
(P-TopFreq + G-TopFreq, Hu et al., "Modeling personalized item frequency information
for next-basket recommendation", SIGIR 2020).

score(y) = the number of steps of the user on y, every kind counting once (views,
clicks, carts and purchases alike: the task is the next interaction of any kind, and
weighting kinds would be a tuned model, not this baseline). A session's user is the
`user_id` passed to `recommend` or, when absent, the last one a step of that session
carried; steps a session made before any of them carried a user count for no one.
An anonymous session has only its own items, which are excluded from its
list, so it gets POP.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Set

from recsrv.evaluation.baselines.base import Step, best
from recsrv.evaluation.baselines.pop import Pop


class TopFreq:
    """The user's items by how often the user interacted with them, then POP."""

    name = "topfreq"

    def __init__(self, pop: Pop) -> None:
        self.pop = pop
        self.counts: dict[str, Counter[str]] = defaultdict(Counter)
        self.session_users: dict[str, str] = {}

    def observe(self, step: Step) -> None:
        user = step.user_id or self.session_users.get(step.session_id)
        if user is None:
            return
        self.session_users[step.session_id] = user
        self.counts[user][step.item_id] += 1

    def scores(self, session_id: str, user_id: str | None, now: float) -> dict[str, float]:
        user = user_id or self.session_users.get(session_id)
        if user is None or user not in self.counts:
            return {}
        return {item: float(count) for item, count in self.counts[user].items()}

    def recommend(
        self, session_id: str, user_id: str | None, k: int, exclude: Set[str], now: float
    ) -> list[str]:
        scores = self.scores(session_id, user_id, now)
        return self.pop.fill(best(scores, k, exclude), k, exclude)
