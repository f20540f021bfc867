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
al., 2021). Vectorised over the candidates' rows of the index, in a few dozen numpy
calls whose cost grows with knn_sample. Pure code.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from recsrv.scoring import SIMILAR_SESSIONS, Context, Scores
from recsrv.state.items import run_starts, stable_order

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
        # scored among sessions that lie after it (a set: argpartition, no sort).
        distance = np.abs(index.last_ts.take(records) - context.now)
        nearest = np.argpartition(distance, config.knn_sample - 1)[: config.knn_sample]
        records = records.take(nearest)
    # The candidates' rows, cut to the longest of them (-1 pads the others), and through
    # a lookup table over the catalog, whose extra last entry is what -1 reads, the
    # position in s (1..L) of every cell; 0: not in s. `take`, not fancy indexing, and
    # nonzero on a mask, not on the integers: several times faster on these few
    # thousand cells. Array methods rather than the np.take and np.flatnonzero
    # wrappers: the wrappers cost a microsecond a call, some sixty a list here.
    width = int(index.lengths.take(records).max())
    block = np.ascontiguousarray(index.items.take(records, axis=0)[:, :width]).ravel()
    small = np.uint8 if length < 256 else np.uint16  # a smaller table, a faster gather
    position_of = np.zeros(len(model.items) + 1, dtype=small)
    position_of[sequence] = np.arange(1, length + 1)
    # mode="wrap": -1 still reads the extra last entry, and numpy skips the per-cell
    # bounds check that "raise" makes (a quarter fewer instructions on these cells).
    positions = position_of.take(block, mode="wrap")
    shared = (positions != 0).nonzero()[0]  # grouped by candidate, row after row
    if not len(shared):
        return Scores.empty()  # only stale candidates: their records were reused
    position = positions.take(shared).astype(np.int64)
    sharing, shared_column = np.divmod(shared, width)
    runs = run_starts(sharing)
    live = sharing.take(runs)  # the candidates that share an item now
    # j, the position in s of the newest item n shares, and p*, that item's column in
    # n, at once: the largest position * width + column of each run (the items of a
    # record are distinct, so positions within a run are too).
    newest_at = np.maximum.reduceat(position * width + shared_column, runs)
    newest, anchor_column = np.divmod(newest_at, width)
    spread = max(index.mean_length(), 1.0)
    weight_of = np.exp((np.arange(length + 1, dtype=np.float64) - length) / spread)
    norm = math.sqrt(float(np.dot(weight_of[1:], weight_of[1:])))
    overlap = np.add.reduceat(weight_of.take(position), runs)
    live_records = records.take(live)
    lengths = index.lengths.take(live_records)
    similarity = overlap / (norm * np.sqrt(lengths)) * weight_of.take(newest)
    if config.knn_recency_s > 0.0:
        age = np.abs(context.now - index.last_ts.take(live_records))
        similarity *= np.exp(-age / config.knn_recency_s)
    if len(live) > config.knn_neighbors:
        # The knn_neighbors most similar (argpartition: a set is enough here).
        cut = len(live) - config.knn_neighbors
        picked = np.argpartition(similarity, cut)[cut:]
        live = live.take(picked)
        similarity = similarity.take(picked)
        anchor_column = anchor_column.take(picked)
    # Every item of the chosen neighbours, by its distance in n from p*: exp(-d/λ)
    # read from a table of the few distances a row can have (the same values as
    # computing each, a gather instead of an exp per cell).
    lent = block.reshape(-1, width).take(live, axis=0).ravel()
    filled = (lent >= 0).nonzero()[0]
    row, column = np.divmod(filled, width)
    lent_items = lent.take(filled)
    distance_in_n = np.abs(column - anchor_column.take(row))
    decay = np.exp(np.arange(width, dtype=np.int64) * (-1.0 / spread))
    values = similarity.take(row) * decay.take(distance_in_n)
    # Summed per item: sorted, then added up run by run.
    by_item, grouped = stable_order(lent_items)
    runs = run_starts(grouped)
    items = grouped.take(runs)
    totals = np.add.reduceat(values.take(by_item), runs)
    if config.knn_idf_weight > 0.0:
        holding = np.maximum(index.item_sessions.take(items), 1).astype(np.float64)
        idf = np.log(max(index.sessions, 1) / holding)
        totals *= 1.0 + config.knn_idf_weight * np.maximum(idf, 0.0)
    keep = totals > 0.0
    items, totals = items[keep], totals[keep]
    none = np.full(len(items), -1, dtype=np.int64)
    return Scores(items, totals, np.full(len(items), SIMILAR_SESSIONS, dtype=np.int64), none)
