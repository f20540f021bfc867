"""The evaluation replay: events through recsrv's model and the baselines, prequentially.

Order. By default the events are replayed in the file's order, the order in which
`recsrv replay` would publish them (files are often grouped by session or by user, so
events arrive out of `ts` order, as they do at the server); `order="time"` replays
them sorted by `ts` (a stable sort: equal times keep their file order). Either way,
the events of each test session are then put in that session's own `ts` order: the
positions in the replay where the session's events occur are kept, and the session's
events, stably sorted by `ts`, fill those positions. So every order asks the same
predictions (same session prefixes, same targets) and differs only in what the
algorithms learnt before each one.

Prediction. Every event is applied to a fresh `Model`, the same code the server runs,
and the `Step` of every interaction is given to each baseline. Just before an event of
a test session moves that session to an item, each algorithm is asked for its top K
for the session so far (the session's items excluded), and the rank of the item that
came is recorded; only then does everyone learn the event. A prediction is skipped
when the session has no item yet or the next item is already in it (it cannot be
recommended).

Also measured: how many replayed events came after a newer one (`Disorder`), each
line's wall time (learning and listing), and the model's own blend report after the
run. POP always runs when baselines are chosen: the others top up their lists with
its counts, which it learns only from the steps it observes itself.

Pure code: no I/O.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from recsrv.config import ModelConfig, SessionsConfig
from recsrv.errors import RecsrvError
from recsrv.evaluation.baselines import Baseline, Step, make_baselines
from recsrv.evaluation.dataset import Dataset, sequence_item
from recsrv.evaluation.metrics import Disorder, Tally, popularity_ranks
from recsrv.events import Event, Interaction
from recsrv.model import Model
from recsrv.recommend import recommend

RECSRV: Final = "recsrv"
FILE_ORDER: Final = "file"
TIME_ORDER: Final = "time"
ORDERS: Final = (FILE_ORDER, TIME_ORDER)
# Kept whatever baselines are chosen: the others' `fill` reads its counts.
ALWAYS_KEPT: Final = "pop"


@dataclass
class Outcome:
    k: int
    tallies: dict[str, Tally]
    catalog_size: int
    test_sessions: int
    order: str = FILE_ORDER
    skipped: int = 0
    events: int = 0
    # Replayed events with a ts below the newest before them, and those among them
    # more than sessions.ttl_s + sessions.allowed_lateness_s below it.
    out_of_order: int = 0
    beyond_lateness: int = 0
    seconds: float = 0.0
    # (session id, next item) of each prediction, in the order they were asked.
    targets: list[tuple[str, str]] = field(default_factory=list)
    # Per line: name → its tally summary (hr, mrr, coverage, …).
    results: dict[str, dict[str, object]] = field(default_factory=dict)
    # Model.blend_report() after the run: weights per component, live hr, mrr, predictions.
    blend: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return next(iter(self.tallies.values())).n


def choose_baselines(names: Collection[str] | None = None) -> list[Baseline]:
    """The baselines of `make_baselines()` named in `names` (all when None), in their
    usual order, POP always included; RecsrvError names an unknown one."""
    baselines = make_baselines()
    if names is None:
        return baselines
    known = [baseline.name for baseline in baselines]
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise RecsrvError(
            f"unknown baseline {', '.join(unknown)}: choose from {', '.join(known)} "
            f"({RECSRV} always runs)"
        )
    return [b for b in baselines if b.name in names or b.name == ALWAYS_KEPT]


def replay_order(events: Sequence[Event], order: str, test: Collection[str]) -> list[Event]:
    """The events in the order the replay applies them (see the module docstring)."""
    if order == TIME_ORDER:
        events = sorted(events, key=_ts)  # stable
    elif order != FILE_ORDER:
        raise RecsrvError(f"unknown order {order!r}: use {' or '.join(ORDERS)}")
    return sessions_in_ts_order(events, test)


def sessions_in_ts_order(events: Iterable[Event], sessions: Collection[str]) -> list[Event]:
    """`events` where the events of each session of `sessions`, stably sorted by ts,
    are put back into the positions that session's events held."""
    replay = list(events)
    positions: dict[str, list[int]] = defaultdict(list)
    for position, event in enumerate(replay):
        if type(event) is Interaction and event.session_id in sessions:
            positions[event.session_id].append(position)
    for held in positions.values():
        in_time = sorted((replay[position] for position in held), key=_ts)
        for position, event in zip(held, in_time, strict=True):
            replay[position] = event
    return replay


def _ts(event: Event) -> float:
    return event.ts


def evaluate(
    data: Dataset,
    test: set[str],
    k: int,
    model_config: ModelConfig,
    sessions_config: SessionsConfig,
    progress: Callable[[int], None] | None = None,
    *,
    order: str = FILE_ORDER,
    baselines: Collection[str] | None = None,
) -> Outcome:
    """Replay `data` in `order`, predicting every next item of the `test` sessions with
    recsrv and the `baselines` named (all by default, POP always)."""
    started = time.perf_counter()
    lines = _Lines(k, Model(model_config, sessions_config), choose_baselines(baselines))
    ranks = popularity_ranks(data.item_counts)
    outcome = Outcome(k, lines.tallies, len(data.item_counts), len(test), order=order)
    disorder = Disorder(sessions_config.ttl_s + sessions_config.allowed_lateness_s)
    so_far: dict[str, list[str]] = {}  # items of each test session, in order
    for position, event in enumerate(replay_order(data.events, order, test)):
        disorder.see(event.ts)
        item = sequence_item(event)
        if item is not None and type(event) is Interaction and event.session_id in test:
            seen = so_far.setdefault(event.session_id, [])
            if seen and item not in seen:
                lines.predict(event, item, frozenset(seen), ranks)
                outcome.targets.append((event.session_id, item))
            elif seen:
                outcome.skipped += 1
            if item not in seen:
                seen.append(item)
        lines.learn(event, item)
        if progress is not None and position % 10_000 == 0:
            progress(position)
    outcome.events = disorder.events
    outcome.out_of_order = disorder.out_of_order
    outcome.beyond_lateness = disorder.beyond_lateness
    outcome.blend = lines.model.blend_report()
    outcome.seconds = time.perf_counter() - started
    outcome.results = {
        name: tally.summary(outcome.catalog_size) for name, tally in lines.tallies.items()
    }
    return outcome


class _Lines:
    """recsrv's model and the baselines, each with its tally and its time."""

    def __init__(self, k: int, model: Model, baselines: list[Baseline]) -> None:
        self.k = k
        self.model = model
        self.baselines = baselines
        names = [RECSRV, *(baseline.name for baseline in baselines)]
        self.tallies = {name: Tally(k) for name in names}

    def predict(
        self, event: Interaction, target: str, exclude: frozenset[str], ranks: dict[str, int]
    ) -> None:
        start = time.perf_counter()
        listed = recommend(self.model, session_id=event.session_id, k=self.k, exclude=exclude)
        items = [scored.item_id for scored in listed.items]
        self.tallies[RECSRV].record(target, items, time.perf_counter() - start, ranks)
        for baseline in self.baselines:
            start = time.perf_counter()
            items = baseline.recommend(event.session_id, event.user_id, self.k, exclude, event.ts)
            self.tallies[baseline.name].record(target, items, time.perf_counter() - start, ranks)

    def learn(self, event: Event, item: str | None) -> None:
        start = time.perf_counter()
        self.model.apply(event)
        now = time.perf_counter()
        self.tallies[RECSRV].learning_seconds += now - start
        if item is None or type(event) is not Interaction:
            return
        step = Step(event.session_id, event.user_id, item, event.type, event.ts)
        for baseline in self.baselines:
            start = now
            baseline.observe(step)
            now = time.perf_counter()
            self.tallies[baseline.name].learning_seconds += now - start
