"""Checkpoint stores: where snapshots of the state are kept between runs.

A checkpoint is a sequence of binary chunks (recsrv.store.codec makes them) plus one
metadata record. A store writes the chunks as they come (a `ChunkStream`: the encoder
makes the next ones while the store writes these), and makes the checkpoint visible
to `complete()` only after the last one, with the metadata that only then is known
(chunk count, size, sha256): a failure or crash mid-checkpoint leaves the previous
one in force.
Two implementations share the `CheckpointStore` protocol: `files.FileStore`
(file://PATH, the embedded default) and `mongo.MongoStore` (mongodb://…).

Replicas may share a store. Each store also keeps the checkpoint writer's lease
(recsrv.lease), which lets one replica at a time write and prune, and marks the
checkpoints being read, which pruning spares until the read is over.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterable, Sequence
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


@dataclass(frozen=True, slots=True)
class CheckpointHead:
    """The metadata of a checkpoint that is known before its chunks are made."""

    id: str
    created_at: float
    offset: int
    events: int
    format: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def finish(self, chunks: int, size: int, sha256: str) -> CheckpointInfo:
        return CheckpointInfo(
            self.id, self.created_at, self.offset, self.events, self.format, chunks, size, sha256
        )


class ChunkStream(Protocol):
    """A checkpoint on its way to a store: its head at once, its chunks as they are
    made (iterated once), and its whole metadata once the last chunk has been taken."""

    head: CheckpointHead

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    def info(self) -> CheckpointInfo:
        """The metadata, chunk count, size and sha256 included; only after the last
        chunk (before, it raises RuntimeError)."""


class ChunkList:
    """A ChunkStream of chunks made already (hashed on the event loop: for tests and
    small checkpoints)."""

    def __init__(self, head: CheckpointHead, chunks: Iterable[bytes]) -> None:
        self.head = head
        self.chunks = chunks
        self._info: CheckpointInfo | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        digest = hashlib.sha256()
        count = size = 0
        for chunk in self.chunks:
            digest.update(chunk)
            count += 1
            size += len(chunk)
            yield chunk
        self._info = self.head.finish(count, size, digest.hexdigest())

    def info(self) -> CheckpointInfo:
        if self._info is None:
            raise RuntimeError(f"checkpoint {self.head.id} has chunks not yet taken")
        return self._info


class CheckpointStore(Protocol):
    describe: str

    async def open(self) -> None:
        """Connect and prepare (indexes, directories); raise StoreError on failure."""

    async def write(self, stream: ChunkStream) -> CheckpointInfo:
        """Write each chunk as it comes, then the metadata that makes the checkpoint
        complete; return that. On any failure (the store's or the stream's) the
        checkpoint stays incomplete: never restored from, removed by
        delete_incomplete()."""

    async def complete(self) -> list[CheckpointInfo]:
        """Complete checkpoints, newest first."""

    def read(self, info: CheckpointInfo) -> AsyncIterator[bytes]:
        """The chunks of a complete checkpoint, in order."""

    async def delete(self, ids: Sequence[str]) -> None:
        """Remove these checkpoints and their chunks, except those that a replica is
        reading (`read` marks them): they go at a later call."""

    async def delete_incomplete(self) -> None:
        """Remove chunks left by checkpoints that never completed (only the lease's
        holder calls it: another writer's checkpoint in progress would go too)."""

    async def take_lease(self, holder: str, lease_s: float, replacing: str = "") -> str:
        """Take the checkpoint writer's lease for `holder`, or renew it, if it is free,
        expired or held by `holder` already (or by `replacing`, a holder known to be
        dead), for `lease_s` seconds from now; the name of the holder afterwards
        (`holder` itself when it has the lease)."""

    async def release_lease(self, holder: str) -> None:
        """Give the lease up, if `holder` holds it, so that another takes it at once."""

    async def close(self) -> None: ...


def open_store(config: StoreConfig) -> CheckpointStore:
    if config.url.startswith("file://"):
        from recsrv.store.files import FileStore

        return FileStore(config.url.removeprefix("file://"))
    from recsrv.store.mongo import MongoStore

    return MongoStore(config.url)
