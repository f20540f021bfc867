"""Neighbour sessions (VSTAN): items of past sessions that resemble the current one.

With the current session s (distinct items in ts order, positions i = 1..L) and a
candidate neighbour n from the session index:

- candidates: the `model.knn_sample` indexed sessions nearest in time to s that hold
  any item of s (the index remembers `model.knn_per_item` sessions per item);
- position weight of an item of s: w(i) = exp((i - L)/λ), the newest counting most;
- sim(s, n) = Σ w(x) over shared items x / (√(Σ w(i)²) · √|n|)
             · exp(-|t_s - t_n| / `model.knn_recency_s`)    (how near in time n is;
                                                             off when 0, the default)
             · exp((j - L)/λ)    (j: position in s of the newest item n shares);
- the `model.knn_neighbors` most similar n lend their items y, each weighted by its
  distance in n from the shared item p*: sim · exp(-|p_n(y) - p*|/λ),
  times (1 + `model.knn_idf_weight` · ln(#sessions / #sessions holding y)).

λ is the mean length of the indexed sessions, so the same setting fits shops with
short and long sessions. This follows STAN (Garg et al., 2019) and VSTAN (Ludewig et
al., 2021). Vectorised over a (candidates x width) block: a few dozen numpy calls.
Pure code.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from recsrv.scoring import SIMILAR_SESSIONS, Context, Scores
from recsrv.state.items import top_k

if TYPE_CHECKING:
    from recsrv.model import Model


def score(model: Model, context: Context) -> Scores:
    config, index = model.config, model.session_index
    sequence = context.sequence
    length = len(sequence)
    if not length:
        return Scores.empty()
    records = index.candidates(sequence, context.record)
    if not len(records):
        return Scores.empty()
    if len(records) > config.knn_sample:
        # The nearest in time to this session: the most recent ones when events come
        # in order, and no later ones picked over earlier ones when a late session is
        # scored among sessions that lie after it.
        nearness = -np.abs(index.last_ts[records] - context.now)
        records = records[top_k(nearness, config.knn_sample)]
    rows = index.items[records].astype(np.int64)
    # Position in s (1..L) of every entry of the candidates' rows; 0 where not shared.
    order = np.argsort(sequence)
    sorted_items = sequence[order]
    at = np.minimum(np.searchsorted(sorted_items, rows), length - 1)
    shared = (sorted_items[at] == rows) & (rows >= 0)
    position = np.where(shared, order[at] + 1, 0)
    newest = position.max(axis=1)  # j; 0 for a record that no longer shares anything
    live = newest > 0
    if not live.any():
        return Scores.empty()
    records, rows, position, newest = records[live], rows[live], position[live], newest[live]
    spread = max(index.mean_length(), 1.0)
    weight_of = np.exp((np.arange(length + 1, dtype=np.float64) - length) / spread)
    weight_of[0] = 0.0
    norm = math.sqrt(float(np.square(weight_of[1:]).sum()))
    overlap = weight_of[position].sum(axis=1)
    sizes = index.lengths[records].astype(np.float64)
    similarity = overlap / (norm * np.sqrt(sizes)) * weight_of[newest] / weight_of[length]
    if config.knn_recency_s > 0.0:
        age = np.abs(context.now - index.last_ts[records])
        similarity *= np.exp(-age / config.knn_recency_s)
    nearest = top_k(similarity, config.knn_neighbors)
    rows, position, newest, similarity = (
        rows[nearest],
        position[nearest],
        newest[nearest],
        similarity[nearest],
    )
    # p*: where in n the shared item at position j stands.
    anchor = np.argmax(position == newest[:, None], axis=1)
    columns = np.arange(rows.shape[1])
    closeness = np.exp(-np.abs(columns[None, :] - anchor[:, None]) / spread)
    values = similarity[:, None] * closeness
    present = rows >= 0
    items, inverse = np.unique(rows[present], return_inverse=True)
    totals = np.asarray(
        np.bincount(inverse, weights=values[present], minlength=len(items)), dtype=np.float64
    )
    if config.knn_idf_weight > 0.0:
        holding = np.maximum(index.item_sessions[items], 1).astype(np.float64)
        idf = np.log(max(index.sessions, 1) / holding)
        totals *= 1.0 + config.knn_idf_weight * np.maximum(idf, 0.0)
    keep = totals > 0.0
    items, totals = items[keep], totals[keep]
    none = np.full(len(items), -1, dtype=np.int64)
    return Scores(items, totals, np.full(len(items), SIMILAR_SESSIONS, dtype=np.int64), none)
