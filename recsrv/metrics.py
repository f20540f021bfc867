"""Prometheus metrics, on a registry of the app's own (no global state).

The hot paths add to plain numbers held here: the consumer once per message, the HTTP
middleware once per request. A collector turns those numbers into metric families
when /metrics is scraped. prometheus_client's own Counter and Histogram take a lock,
and with labels a lookup, on every call (0.5-1.5 µs each, several per message), which
ingest cannot spare. Every number here is written and read on the event loop's
thread only, so none needs a lock.

Figures that describe the state (sessions, users, items, subscribers, checkpoint age,
the blend's weights and its prequential quality) are read from their owners at scrape
time, never kept up to date on the way.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Info,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from recsrv import prequential

if TYPE_CHECKING:
    from recsrv.model import Model

# Upper bounds (seconds) of the histograms' buckets.
APPLY_BUCKETS_S = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    0.5, 1.0, 2.5,
)  # fmt: skip
# AMQP timestamps are whole seconds: finer buckets would only measure the rounding.
ARRIVAL_LAG_BUCKETS_S = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0)
LOOP_LAG_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
HTTP_BUCKETS_S = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

# The route label of a request no route matched (404, 405, CORS preflights).
UNMATCHED_ROUTE = "unmatched"
# The method label of anything but the usual methods: a client chooses the method
# string, and each distinct label value is a new time series.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
OTHER_METHOD = "other"


class Buckets:
    """A histogram with fixed upper bounds, inclusive like Prometheus' `le`."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(sorted(bounds))
        # One count per bound, and a last one for values above every bound.
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, float]]:
        """(le, observations <= le) pairs, ending with +Inf: what the text format shows."""
        pairs: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip(self.bounds, self.counts, strict=False):
            running += count
            pairs.append((repr(float(bound)), running))
        pairs.append(("+Inf", running + self.counts[-1]))
        return pairs


def add_counts(totals: dict[str, int], counts: Mapping[str, int]) -> None:
    for key, count in counts.items():
        totals[key] = totals.get(key, 0) + count


@dataclass(eq=False, slots=True)
class ConsumerStats:
    """What the consumer counts, once per message."""

    messages: int = 0
    # Events decoded from messages, by type: applied + duplicate + failed to apply.
    received: dict[str, int] = field(default_factory=dict)
    applied: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    # Invalid elements, by the kind of problem (an invalid element has no trusted type).
    invalid: dict[str, int] = field(default_factory=dict)
    apply_seconds: Buckets = field(default_factory=lambda: Buckets(APPLY_BUCKETS_S))
    arrival_lag_seconds: Buckets = field(default_factory=lambda: Buckets(ARRIVAL_LAG_BUCKETS_S))


@dataclass(eq=False, slots=True)
class HttpStats:
    """Requests by route template, method and status; durations of answered ones."""

    requests: dict[tuple[str, str, int], int] = field(default_factory=dict)
    durations: dict[tuple[str, str], Buckets] = field(default_factory=dict)

    def finished(self, route: str, method: str, status: int, seconds: float | None) -> None:
        """Count one request; `seconds` None leaves it out of the durations (streams)."""
        if method not in KNOWN_METHODS:
            method = OTHER_METHOD
        key = (route, method, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        if seconds is None:
            return
        durations = self.durations.get((route, method))
        if durations is None:
            durations = self.durations[route, method] = Buckets(HTTP_BUCKETS_S)
        durations.observe(seconds)


class Metrics:
    def __init__(self, instance: str = "") -> None:
        self.registry = CollectorRegistry()
        if instance:
            # recsrv_instance_info{instance="…"} 1: which replica a scrape reached (a
            # label to join on, rather than on every series).
            Info("recsrv_instance", "This replica's name.", registry=self.registry).info(
                {"instance": instance}
            )
        self.consumer = ConsumerStats()
        self.http = HttpStats()
        self.loop_lag_seconds = Buckets(LOOP_LAG_BUCKETS_S)
        # The stream's newest offset as last sampled (None: not read, or unreadable).
        self.stream_end: int | None = None
        # When the newest checkpoint known was created (written, or restored at start).
        self.checkpoint_at: float | None = None
        # Read at scrape time; set by watch_model and watch_subscribers.
        self.current_model: Callable[[], Model] | None = None
        self.subscriber_count: Callable[[], int] | None = None
        self.lease_held: Callable[[], bool] | None = None

        self.events_published = Counter(
            "recsrv_events_published_total",
            "Events published by the REST API after the broker confirmed them.",
            registry=self.registry,
        )
        self.checkpoint_size = Gauge(
            "recsrv_checkpoint_size_bytes",
            "Size of the last checkpoint written.",
            registry=self.registry,
        )
        self.checkpoint_duration = Gauge(
            "recsrv_checkpoint_duration_seconds",
            "Time the last checkpoint took, snapshot and write.",
            registry=self.registry,
        )
        self.checkpoint_created = Gauge(
            "recsrv_checkpoint_last_success_timestamp_seconds",
            "When the last checkpoint was written (0: never, this run).",
            registry=self.registry,
        )
        self.checkpoint_failures = Counter(
            "recsrv_checkpoint_failures_total",
            "Checkpoints that failed to be written.",
            registry=self.registry,
        )
        self.store_up = Gauge(
            "recsrv_checkpoint_store_up",
            "1 while the last checkpoint write succeeded, 0 after a failure.",
            registry=self.registry,
        )
        self.store_up.set(1)
        # recsrv_process_*: CPU seconds, resident and virtual memory bytes, open files,
        # start time (read from /proc at scrape; Linux only).
        ProcessCollector(namespace="recsrv", registry=self.registry)
        self.registry.register(_Figures(self))

    def watch_model(self, current: Callable[[], Model]) -> None:
        """Read offset, events, sessions, users and items from `current()` at scrape."""
        self.current_model = current

    def watch_subscribers(self, count: Callable[[], int]) -> None:
        """Read the number of live SSE streams from `count()` at scrape."""
        self.subscriber_count = count

    def watch_lease(self, held: Callable[[], bool]) -> None:
        """Read whether this replica holds the checkpoint lease from `held()` at scrape."""
        self.lease_held = held

    def checkpoint_written(self, size: int, seconds: float, created_at: float) -> None:
        self.checkpoint_size.set(size)
        self.checkpoint_duration.set(seconds)
        self.checkpoint_created.set(created_at)
        self.checkpoint_at = created_at

    def checkpoint_restored(self, created_at: float) -> None:
        self.checkpoint_at = created_at

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Figures:
    """The collector of the plain numbers in Metrics and of the watched state."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        metrics = self.metrics
        yield from _consumer_families(metrics.consumer)
        yield from _http_families(metrics.http)
        yield _histogram(
            "recsrv_event_loop_lag_seconds",
            "How late a timer on the event loop fires (sampled 4 times a second).",
            metrics.loop_lag_seconds,
        )
        yield from _state_families(metrics)
        if metrics.subscriber_count is not None:
            yield GaugeMetricFamily(
                "recsrv_sse_subscribers", "Live SSE streams.", value=metrics.subscriber_count()
            )
        if metrics.lease_held is not None:
            yield GaugeMetricFamily(
                "recsrv_checkpoint_writer",
                "1 while this replica holds the checkpoint lease (writes the checkpoints).",
                value=1.0 if metrics.lease_held() else 0.0,
            )
        if metrics.checkpoint_at is not None:
            yield GaugeMetricFamily(
                "recsrv_checkpoint_age_seconds",
                "Seconds since the newest checkpoint (written, or restored at start) was made.",
                value=max(time.time() - metrics.checkpoint_at, 0.0),
            )


def _consumer_families(stats: ConsumerStats) -> Iterator[Metric]:
    yield CounterMetricFamily(
        "recsrv_messages_consumed_total", "Messages read from the event log.", stats.messages
    )
    yield _labelled_counter(
        "recsrv_events_received_total",
        "Valid events decoded from messages, by type, before de-duplication.",
        "type",
        stats.received,
    )
    yield _labelled_counter(
        "recsrv_events_applied_total", "Valid events applied to the state, by type.", "type",
        stats.applied,
    )  # fmt: skip
    yield CounterMetricFamily(
        "recsrv_events_duplicate_total",
        "Events ignored because their event_id was already applied.",
        stats.duplicates,
    )
    yield _labelled_counter(
        "recsrv_events_invalid_total",
        "Invalid elements copied to the invalid-events exchange, by kind of problem.",
        "code",
        stats.invalid,
    )
    yield _histogram(
        "recsrv_apply_duration_seconds",
        "Time from reading a message to having applied it (decode, apply, invalid copies).",
        stats.apply_seconds,
    )
    yield _histogram(
        "recsrv_consumer_lag_seconds",
        "Time from publish (the message's AMQP timestamp, whole seconds) to application; "
        "messages without a timestamp are not counted.",
        stats.arrival_lag_seconds,
    )


def _http_families(stats: HttpStats) -> Iterator[Metric]:
    requests = CounterMetricFamily(
        "recsrv_http_requests_total",
        "HTTP requests answered, by route template, method and status.",
        labels=("route", "method", "status"),
    )
    for (route, method, status), count in stats.requests.items():
        requests.add_metric((route, method, str(status)), count)
    yield requests
    durations = HistogramMetricFamily(
        "recsrv_http_request_duration_seconds",
        "Time to answer an HTTP request, by route template and method (streams excluded).",
        labels=("route", "method"),
    )
    for (route, method), buckets in stats.durations.items():
        durations.add_metric((route, method), buckets.cumulative(), buckets.sum)
    yield durations


def _state_families(metrics: Metrics) -> Iterator[Metric]:
    if metrics.current_model is None:
        return
    model = metrics.current_model()
    stats = model.stats()
    figures = (
        ("recsrv_model_offset", "Stream offset of the last message applied.", model.offset),
        ("recsrv_model_events", "Valid events applied to the state since it began.", model.events),
        ("recsrv_sessions", "Live sessions (not expired on the model's clock).", stats["sessions"]),
        (
            "recsrv_session_slots",
            "Sessions held in memory, expired ones not yet reclaimed included.",
            len(model.sessions),
        ),
        ("recsrv_users", "Users with a profile in memory.", stats["users"]),
        ("recsrv_items", "Items known and not deleted.", stats["items"]),
    )
    for name, documentation, value in figures:
        yield GaugeMetricFamily(name, documentation, value=value)
    yield from _blend_families(model.blend_report())
    if metrics.stream_end is not None:
        yield GaugeMetricFamily(
            "recsrv_stream_end_offset",
            "Newest offset of the stream, as last sampled (every few seconds).",
            value=metrics.stream_end,
        )
        yield GaugeMetricFamily(
            "recsrv_consumer_lag_messages",
            "Messages between the last one applied and the stream's sampled end.",
            value=max(metrics.stream_end - model.offset, 0),
        )


def _blend_families(report: Mapping[str, Any]) -> Iterator[Metric]:
    """The blend's weights and its prequential quality (Model.blend_report: a handful of
    numbers, cheap to read on every scrape)."""
    weights = GaugeMetricFamily(
        "recsrv_blend_weight",
        "The blend's learnt weight of a scoring component (the weights sum to 1).",
        labels=("component",),
    )
    for component, weight in report["weights"].items():
        weights.add_metric((component,), weight)
    yield weights
    k = str(prequential.K)
    for measure, name in (("hr", "HR"), ("mrr", "MRR")):
        family = GaugeMetricFamily(
            f"recsrv_prequential_{measure}",
            f"{name}@k of the served blend on the item a shopper chose next, measured on "
            "sampled events before they are learnt; window: all (since the state began) "
            f"or recent (exponential average over about the last {prequential.RECENT}).",
            labels=("k", "window"),
        )
        family.add_metric((k, "all"), report[measure])
        family.add_metric((k, "recent"), report[f"recent_{measure}"])
        yield family
    yield CounterMetricFamily(
        "recsrv_prequential_predictions",
        "Events measured prequentially since the state began (restored with it).",
        report["predictions"],
    )


def _labelled_counter(
    name: str, documentation: str, label: str, counts: Mapping[str, int]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=(label,))
    for value, count in counts.items():
        family.add_metric((value,), count)
    return family


def _histogram(name: str, documentation: str, buckets: Buckets) -> HistogramMetricFamily:
    return HistogramMetricFamily(
        name, documentation, buckets=buckets.cumulative(), sum_value=buckets.sum
    )
