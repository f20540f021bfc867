"""Checkpoint stores: where snapshots of the state are kept between runs.

A checkpoint is a sequence of binary chunks (recsrv.store.codec makes them) plus one
metadata record. A store makes a checkpoint visible to `latest()` only once all of
its chunks are written, so a crash mid-checkpoint leaves the previous one in force.
Two implementations share the `CheckpointStore` protocol: `files.FileStore`
(file://PATH, the embedded default) and `mongo.MongoStore` (mongodb://…).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from recsrv.config import StoreConfig


@dataclass(frozen=True, slots=True)
class CheckpointInfo:
    """The metadata of one checkpoint."""

    id: str
    created_at: float  # wall-clock seconds since the epoch
    offset: int  # stream offset of the last message the state holds
    events: int  # model.events at that offset
    format: int  # codec format version
    chunks: int
    size: int  # bytes over all chunks
    sha256: str  # of the chunks' concatenation

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckpointInfo:
        return cls(
            id=str(data["id"]),
            created_at=float(data["created_at"]),
            offset=int(data["offset"]),
            events=int(data["events"]),
            format=int(data["format"]),
            chunks=int(data["chunks"]),
            size=int(data["size"]),
            sha256=str(data["sha256"]),
        )


class CheckpointStore(Protocol):
    describe: str

    async def open(self) -> None:
        """Connect and prepare (indexes, directories); raise StoreError on failure."""

    async def write(self, info: CheckpointInfo, chunks: Sequence[bytes]) -> None:
        """Write every chunk, then the metadata that makes the checkpoint complete."""

    async def complete(self) -> list[CheckpointInfo]:
        """Complete checkpoints, newest first."""

    def read(self, info: CheckpointInfo) -> AsyncIterator[bytes]:
        """The chunks of a complete checkpoint, in order."""

    async def delete(self, ids: Sequence[str]) -> None:
        """Remove these checkpoints and their chunks."""

    async def delete_incomplete(self) -> None:
        """Remove chunks left by checkpoints that never completed."""

    async def close(self) -> None: ...


def open_store(config: StoreConfig) -> CheckpointStore:
    if config.url.startswith("file://"):
        from recsrv.store.files import FileStore

        return FileStore(config.url.removeprefix("file://"))
    from recsrv.store.mongo import MongoStore

    return MongoStore(config.url)
