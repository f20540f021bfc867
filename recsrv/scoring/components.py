"""The scoring components a session's list blends, in the blend's order, and the
request `Context` they read. Pure code."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final

import numpy as np

from recsrv.scoring import Context, Scores, cooccurrence, popular, repeat, sequence, session_knn

if TYPE_CHECKING:
    from recsrv.model import Model

Scorer = Callable[["Model", Context], Scores]

# Name → scorer; the names are the blend's weights' names (in /v1/model, /metrics).
COMPONENTS: Final[dict[str, Scorer]] = {
    "sessions": session_knn.score,
    "sequence": sequence.score,
    "cooccurrence": cooccurrence.score,
    "repeat": repeat.score,
    "popular": popular.score,
}


def context(model: Model, slot: int, user: int, item: int = -1) -> Context:
    """What the session in `slot`, its user (-1: none) and the context item of the
    request (-1: none) tell the scorers."""
    sessions = model.sessions
    recent, types = sessions.recent(slot)
    profile, profile_weights = model.users.profile(user)
    record = int(sessions.records[slot])
    return Context(
        recent=recent.astype(np.int64),
        recent_types=types,
        sequence=np.array(sessions.sequence(slot), dtype=np.int64),
        basket=np.array(sessions.basket(slot), dtype=np.int64),
        profile=profile,
        profile_weights=profile_weights,
        now=float(sessions.last_ts[slot]),
        record=record if model.session_index.holds(record) else -1,
        item=item,
    )


def score_all(model: Model, context: Context) -> list[Scores]:
    """Every component's scores, in COMPONENTS order."""
    return [scorer(model, context) for scorer in COMPONENTS.values()]
