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
al., 2021). Vectorised over the candidates' items laid end to end (a ragged run, not a
padded candidates x width block: sessions are mostly much shorter than the width),
in a few dozen numpy calls whose cost grows with knn_sample. Pure code.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from recsrv.scoring import SIMILAR_SESSIONS, Context, Scores
from recsrv.state.items import run_starts, stable_order, top_k

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
    # The candidates' items laid end to end: entry e is item `entries[e]`, at
    # `column[e]` of record `owner[e]`.
    lengths = index.lengths[records].astype(np.int64)
    starts = np.cumsum(lengths) - lengths
    owner = np.repeat(np.arange(len(records)), lengths)
    column = np.arange(len(owner)) - starts[owner]
    entries = index.items.ravel()[records[owner] * index.width + column].astype(np.int64)
    # The entries that s shares, with their position in s (1..L), grouped by record.
    # A lookup table over the catalog: zeroed pages cost little, one gather finds all.
    position_of = np.zeros(len(model.items), dtype=np.int16)
    position_of[sequence] = np.arange(1, length + 1)
    position = position_of[entries].astype(np.int64)
    shared = np.flatnonzero(position)
    if not len(shared):
        return Scores.empty()  # only stale candidates: their records were reused
    position = position[shared]
    sharing = owner[shared]
    runs = run_starts(sharing)
    live = sharing[runs]  # the candidates that share an item now
    # j, the position in s of the newest item n shares, and p*, that item's column in
    # n, at once: the largest position * width + column of each run (the items of a
    # record are distinct, so positions within a run are too).
    newest_at = np.maximum.reduceat(position * index.width + column[shared], runs)
    newest, anchor_column = np.divmod(newest_at, index.width)
    spread = max(index.mean_length(), 1.0)
    weight_of = np.exp((np.arange(length + 1, dtype=np.float64) - length) / spread)
    norm = math.sqrt(float(np.square(weight_of[1:]).sum()))
    overlap = np.add.reduceat(weight_of[position], runs)
    similarity = overlap / (norm * np.sqrt(lengths[live])) * weight_of[newest]
    if config.knn_recency_s > 0.0:
        age = np.abs(context.now - index.last_ts[records[live]])
        similarity *= np.exp(-age / config.knn_recency_s)
    if len(live) > config.knn_neighbors:
        # The knn_neighbors most similar (argpartition: a set is enough here).
        cut = len(live) - config.knn_neighbors
        picked = np.argpartition(similarity, cut)[cut:]
        live, similarity, anchor_column = live[picked], similarity[picked], anchor_column[picked]
    # Every item of the chosen neighbours, by its distance in n from p*.
    chosen = np.zeros(len(records), dtype=np.bool_)
    chosen[live] = True
    lent_similarity = np.zeros(len(records))
    lent_similarity[live] = similarity
    anchor = np.zeros(len(records), dtype=np.int64)
    anchor[live] = anchor_column
    lent = chosen[owner]
    owner, column, entries = owner[lent], column[lent], entries[lent]
    values = lent_similarity[owner] * np.exp(-np.abs(column - anchor[owner]) / spread)
    # Summed per item: sorted, then added up run by run.
    by_item, entries = stable_order(entries)
    runs = run_starts(entries)
    items = entries[runs]
    totals = np.add.reduceat(values[by_item], runs)
    if config.knn_idf_weight > 0.0:
        holding = np.maximum(index.item_sessions[items], 1).astype(np.float64)
        idf = np.log(max(index.sessions, 1) / holding)
        totals *= 1.0 + config.knn_idf_weight * np.maximum(idf, 0.0)
    keep = totals > 0.0
    items, totals = items[keep], totals[keep]
    none = np.full(len(items), -1, dtype=np.int64)
    return Scores(items, totals, np.full(len(items), SIMILAR_SESSIONS, dtype=np.int64), none)
