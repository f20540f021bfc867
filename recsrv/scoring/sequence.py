"""Sequential rules: what tends to come next after the session's newest item.

The `successors` table holds, per item a, the items that followed a within
`model.sr_steps` events in some session, each pair weighted 1/distance (an item seen
twice in reach counts at both distances, as sequential rules count it) and decayed on
event time (direction matters: nothing is learnt backwards). The newest
item of the session lends its row, scaled to max 1. One item, as sequential rules
use: on the synthetic sequential streams, adding the rows of older items (at 0.3 per
step) blurred the next step (MRR@20 .642 with three items against .651 with one), and
what older items say reaches the list through the neighbour-session component. One
row needs no summing: a few numpy calls. Pure code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from recsrv.scoring import FOLLOWS, Context, Scores

if TYPE_CHECKING:
    from recsrv.model import Model


def score(model: Model, context: Context) -> Scores:
    if not len(context.sequence):
        return Scores.empty()
    newest = int(context.sequence[-1])
    table = model.successors
    # The row itself (views), not a gather of one row: boolean indexing copies.
    weights = table.weights[newest]
    keep = weights > 0.0  # empty slots hold weight 0
    ids, weights = table.ids[newest][keep].astype(np.int64), weights[keep]
    if not len(ids):
        return Scores.empty()
    return Scores(
        ids,
        weights / weights.max(),
        np.full(len(ids), FOLLOWS, dtype=np.int64),
        np.full(len(ids), newest, dtype=np.int64),
    )
