"""The evaluation replay: events in file order through recsrv's model and the baselines.

Every event is applied to a fresh `Model`, the same code the server runs. Before an
event of a test session moves that session to an item, each algorithm is asked for
its top K for the session so far (the session's items excluded), and the rank of the
item that came is recorded. Then everyone learns the event. A prediction is skipped
when the session has no item yet or the next item is already in it (it cannot be
recommended).

Pure code: no I/O.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from recsrv.config import ModelConfig, SessionsConfig
from recsrv.evaluation.baselines import Baseline, Step, make_baselines
from recsrv.evaluation.dataset import Dataset, sequence_item
from recsrv.evaluation.metrics import Tally, popularity_ranks
from recsrv.events import Interaction
from recsrv.model import Model
from recsrv.recommend import recommend

RECSRV = "recsrv"


@dataclass
class Outcome:
    k: int
    tallies: dict[str, Tally]
    catalog_size: int
    test_sessions: int
    skipped: int = 0
    events: int = 0
    seconds: float = 0.0
    # Per line: name → its tally summary (hr, mrr, coverage, …).
    results: dict[str, dict[str, object]] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return next(iter(self.tallies.values())).n


def evaluate(
    data: Dataset,
    test: set[str],
    k: int,
    model_config: ModelConfig,
    sessions_config: SessionsConfig,
    progress: Callable[[int], None] | None = None,
) -> Outcome:
    """Replay `data`, predicting every next item of the `test` sessions with every line."""
    started = time.perf_counter()
    model = Model(model_config, sessions_config)
    baselines = make_baselines()
    names = [RECSRV, *(baseline.name for baseline in baselines)]
    tallies = {name: Tally(k) for name in names}
    ranks = popularity_ranks(data.item_counts)
    outcome = Outcome(k, tallies, len(data.item_counts), len(test))
    so_far: dict[str, list[str]] = {}  # items of each test session, in order
    for position, event in enumerate(data.events):
        item = sequence_item(event)
        if item is not None and type(event) is Interaction and event.session_id in test:
            seen = so_far.setdefault(event.session_id, [])
            if seen and item not in seen:
                exclude = frozenset(seen)
                _predict(model, baselines, event, item, exclude, k, tallies, ranks)
            elif seen:
                outcome.skipped += 1
            if item not in seen:
                seen.append(item)
        model.apply(event)
        if item is not None and type(event) is Interaction:
            step = Step(event.session_id, event.user_id, item, event.type, event.ts)
            for baseline in baselines:
                baseline.observe(step)
        if progress is not None and position % 10_000 == 0:
            progress(position)
    outcome.events = len(data.events)
    outcome.seconds = time.perf_counter() - started
    outcome.results = {name: tally.summary(outcome.catalog_size) for name, tally in tallies.items()}
    return outcome


def _predict(
    model: Model,
    baselines: list[Baseline],
    event: Interaction,
    target: str,
    exclude: frozenset[str],
    k: int,
    tallies: dict[str, Tally],
    ranks: dict[str, int],
) -> None:
    start = time.perf_counter()
    listed = recommend(model, session_id=event.session_id, k=k, exclude=exclude)
    items = [scored.item_id for scored in listed.items]
    tallies[RECSRV].record(target, items, time.perf_counter() - start, ranks)
    for baseline in baselines:
        start = time.perf_counter()
        items = baseline.recommend(event.session_id, event.user_id, k, exclude, event.ts)
        tallies[baseline.name].record(target, items, time.perf_counter() - start, ranks)
