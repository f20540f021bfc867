"""What the request handlers share: the live model and the adapters around it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from recsrv.broker import EventLog
from recsrv.config import Config
from recsrv.consumer import Consumer
from recsrv.metrics import Metrics
from recsrv.model import Model
from recsrv.read_after_write import ReadAfterWrite
from recsrv.store import CheckpointStore


@dataclass
class Runtime:
    config: Config
    log: EventLog
    store: CheckpointStore
    model: Model
    consumer: Consumer
    metrics: Metrics
    # Set once the state is restored (from the newest checkpoint, when there is one).
    restored_event: asyncio.Event = field(default_factory=asyncio.Event)
    # Why the process is not ready, besides consumer lag (e.g. "cannot restore").
    problems: dict[str, str] = field(default_factory=dict)
    # What is degraded while the process still serves (e.g. "checkpoints failing").
    warnings: dict[str, str] = field(default_factory=dict)
    # List requests with after=EVENT_ID waiting for their event (set by build).
    read_after_write: ReadAfterWrite = field(init=False)
    # This replica's name (server.instance, or host and pid).
    instance: str = ""

    @classmethod
    def build(cls, config: Config, log: EventLog, store: CheckpointStore) -> Runtime:
        model = Model(config.model, config.sessions)
        instance = config.server.instance_name()
        metrics = Metrics(instance)
        consumer = Consumer(log, model, config.broker, metrics)
        runtime = cls(
            config=config,
            log=log,
            store=store,
            model=model,
            consumer=consumer,
            metrics=metrics,
            instance=instance,
        )
        # Through the runtime, so a scrape sees the model swapped in by a restore.
        metrics.watch_model(lambda: runtime.model)
        runtime.read_after_write = ReadAfterWrite(lambda: runtime.model)
        return runtime

    def replace_model(self, model: Model) -> None:
        """Swap in a restored model (one assignment each: readers see old or new)."""
        self.model = model
        self.consumer.model = model

    @property
    def restored(self) -> bool:
        return self.restored_event.is_set()

    def model_info(self) -> dict[str, int]:
        return {"offset": self.model.offset, "events": self.model.events}
