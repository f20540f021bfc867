"""Prometheus collectors, on a registry of the app's own (no global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.messages_consumed = Counter(
            "recsrv_messages_consumed_total",
            "Messages read from the event log.",
            registry=self.registry,
        )
        self.events_applied = Counter(
            "recsrv_events_applied_total",
            "Valid events applied to the state, by type.",
            ["type"],
            registry=self.registry,
        )
        self.events_duplicate = Counter(
            "recsrv_events_duplicate_total",
            "Events ignored because their event_id was already applied.",
            registry=self.registry,
        )
        self.events_invalid = Counter(
            "recsrv_events_invalid_total",
            "Invalid elements copied to the invalid-events exchange, by kind.",
            ["code"],
            registry=self.registry,
        )
        self.events_published = Counter(
            "recsrv_events_published_total",
            "Events published by the REST API after the broker confirmed them.",
            registry=self.registry,
        )
        self.model_offset = Gauge(
            "recsrv_model_offset",
            "Stream offset of the last message applied.",
            registry=self.registry,
        )
        self.model_events = Gauge(
            "recsrv_model_events",
            "Valid events applied to the state since it began.",
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

    def checkpoint_written(self, size: int, seconds: float, created_at: float) -> None:
        self.checkpoint_size.set(size)
        self.checkpoint_duration.set(seconds)
        self.checkpoint_created.set(created_at)

    def render(self) -> bytes:
        return generate_latest(self.registry)
