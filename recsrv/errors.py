"""The exceptions recsrv raises.

    RecsrvError                 base of everything below
    ├── ConfigError             invalid configuration: names the key and the problem
    ├── EventError              one event element is invalid: names the field and the reason
    ├── BrokerError             the event log refused or lost a publish
    ├── StoreError              the checkpoint store failed or cannot be reached
    │   └── CheckpointDamaged   the store answered, but one checkpoint cannot be read
    │                           whole (a missing file or chunk, wrong size, bad bytes)
    └── NotCheckpointWriter     another replica holds the checkpoint writer's lease

Pure code (events, state, recommend) raises only ConfigError and EventError; the
I/O adapters raise BrokerError and StoreError.
"""

from __future__ import annotations


class RecsrvError(Exception):
    """Base class of every error recsrv raises on purpose."""


class ConfigError(RecsrvError):
    """A configuration key has an invalid value."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"config key {key!r}: {problem}")
        self.key = key
        self.problem = problem


class EventError(RecsrvError):
    """An event element failed validation."""

    def __init__(self, field: str | None, reason: str) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.field = field
        self.reason = reason


class BrokerError(RecsrvError):
    """Publishing to, or consuming from, the event log failed."""


class StoreError(RecsrvError):
    """Writing or reading a checkpoint failed."""


class CheckpointDamaged(StoreError):
    """One checkpoint cannot be read whole although the store answers: restore skips it
    for the next older one, where any other StoreError is retried (the store is down)."""


class NotCheckpointWriter(RecsrvError):
    """Another replica holds the lease that lets one replica of a store write checkpoints."""

    def __init__(self, holder: str) -> None:
        super().__init__(
            f"replica {holder!r} holds the checkpoint lease and writes the checkpoints"
        )
        self.holder = holder
