"""Checkpoints as files in a directory (store.url = file://PATH), the embedded default.

Each checkpoint is `<id>.data` (its chunks, concatenated) and `<id>.json` (its
metadata). Both are written to a temporary name, fsynced and renamed; the data is
appended chunk by chunk as the encoder makes them, and the metadata goes last, so a
checkpoint exists for `complete()` only once its data is durable. A write that fails
removes its temporary file (delete_incomplete() removes any a crash left). File I/O
runs in worker threads.

Replicas on one host may share the directory. The checkpoint writer's lease is an
exclusive `flock` of `writer.lock`, which holds the holder's name: the kernel ends it
with the process that holds it, so lease_s plays no part here (a local directory is
what flock is reliable on, not a network file system). A replica reading a checkpoint
holds a shared `flock` of its data file, and `delete` leaves a data file alone while
it cannot lock it exclusively (once opened, a file is read whole even if unlinked, so
only the instants between listing and locking are left to the fallback to an older
checkpoint).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import BinaryIO

import orjson

from recsrv.errors import CheckpointDamaged, StoreError
from recsrv.store import CheckpointInfo, ChunkStream
from recsrv.store.codec import CHUNK_BYTES

LEASE_FILE = "writer.lock"


class FileStore:
    def __init__(self, directory: str) -> None:
        self.directory = Path(directory).expanduser()
        self.describe = f"checkpoint files in {self.directory}"
        # The open, exclusively locked lease file while this store holds the lease.
        self._lease: int | None = None

    async def open(self) -> None:
        try:
            await asyncio.to_thread(self.directory.mkdir, parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create {self.directory}: {exc.strerror}") from exc

    async def write(self, stream: ChunkStream) -> CheckpointInfo:
        head = stream.head
        data = self.directory / f"{head.id}.data"
        temporary = _temporary(data)
        try:
            handle = await asyncio.to_thread(open, temporary, "wb")
            with handle:
                async for chunk in stream:
                    await asyncio.to_thread(handle.write, chunk)
                info = stream.info()
                await asyncio.to_thread(_sync, handle)
            await asyncio.to_thread(self._complete_write, info, temporary, data)
        except OSError as exc:
            _remove(temporary)
            raise StoreError(f"cannot write checkpoint {head.id}: {exc}") from exc
        except BaseException:
            _remove(temporary)
            raise
        return info

    def _complete_write(self, info: CheckpointInfo, temporary: Path, data: Path) -> None:
        """Make the durable data file the checkpoint's, then write its metadata: only
        then does it exist for complete()."""
        os.replace(temporary, data)
        metadata = orjson.dumps({**info.to_dict(), "complete": 1})
        _write_durably(self.directory / f"{info.id}.json", [metadata])
        _fsync_directory(self.directory)

    async def complete(self) -> list[CheckpointInfo]:
        try:
            return await asyncio.to_thread(self._complete)
        except OSError as exc:
            raise StoreError(f"cannot list {self.directory}: {exc.strerror}") from exc

    def _complete(self) -> list[CheckpointInfo]:
        found = []
        for path in self.directory.glob("*.json"):
            try:
                data = orjson.loads(path.read_bytes())
                if data.get("complete") == 1:
                    found.append(CheckpointInfo.from_dict(data))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                continue  # not ours, or damaged: never restored from
        return sorted(found, key=lambda info: (info.created_at, info.id), reverse=True)

    async def read(self, info: CheckpointInfo) -> AsyncIterator[bytes]:
        path = self.directory / f"{info.id}.data"
        try:
            handle = await asyncio.to_thread(path.open, "rb")
        except OSError as exc:
            raise await self._read_failure(info, exc) from exc
        with handle:
            # Shared: pruning (an exclusive lock, not waited for) passes this file by.
            await asyncio.to_thread(fcntl.flock, handle.fileno(), fcntl.LOCK_SH)
            size = (await asyncio.to_thread(os.fstat, handle.fileno())).st_size
            if size != info.size:
                raise CheckpointDamaged(
                    f"checkpoint {info.id} holds {size} bytes, its metadata says {info.size}"
                )
            while True:
                try:
                    chunk = await asyncio.to_thread(handle.read, CHUNK_BYTES)
                except OSError as exc:
                    raise await self._read_failure(info, exc) from exc
                if not chunk:
                    return
                yield chunk

    async def _read_failure(self, info: CheckpointInfo, exc: OSError) -> StoreError:
        """The error for a data file that cannot be read: with the directory still there
        the checkpoint is damaged (missing, unreadable); without it the store is gone."""
        message = f"cannot read checkpoint {info.id}: {exc.strerror or exc}"
        reachable = await asyncio.to_thread(os.access, self.directory, os.R_OK | os.X_OK)
        return CheckpointDamaged(message) if reachable else StoreError(message)

    async def delete(self, ids: Sequence[str]) -> None:
        await asyncio.to_thread(self._delete, ids)

    def _delete(self, ids: Sequence[str]) -> None:
        for checkpoint_id in ids:
            data = self.directory / f"{checkpoint_id}.data"
            try:
                handle = data.open("rb")
            except FileNotFoundError:
                handle = None
            try:
                if handle is not None:
                    try:
                        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        continue  # a replica is reading it: removed at a later prune
                # Metadata first: a half-deleted checkpoint is then merely incomplete.
                for path in (data.with_suffix(".json"), data):
                    path.unlink(missing_ok=True)
            finally:
                if handle is not None:
                    handle.close()

    async def delete_incomplete(self) -> None:
        await asyncio.to_thread(self._delete_incomplete)

    def _delete_incomplete(self) -> None:
        for path in self.directory.glob("*.tmp"):
            path.unlink(missing_ok=True)
        for path in self.directory.glob("*.data"):
            if not path.with_suffix(".json").exists():
                path.unlink(missing_ok=True)

    async def take_lease(self, holder: str, lease_s: float, replacing: str = "") -> str:
        # A dead holder's lock is gone already: `replacing` has nothing to add.
        try:
            return await asyncio.to_thread(self._take_lease, holder)
        except OSError as exc:
            raise StoreError(f"cannot lock {self.directory / LEASE_FILE}: {exc}") from exc

    def _take_lease(self, holder: str) -> str:
        if self._lease is not None:
            return holder  # the lock lasts as long as the file stays open
        descriptor = os.open(self.directory / LEASE_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            name = os.pread(descriptor, 256, 0).decode(errors="replace") or "another process"
            os.close(descriptor)
            # Another process, or another store of this one, under the same name: still
            # not this store's lease.
            return name if name != holder else f"{name} (another holder of that name)"
        except BaseException:
            os.close(descriptor)
            raise
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, holder.encode(), 0)
        self._lease = descriptor
        return holder

    async def release_lease(self, holder: str) -> None:
        descriptor, self._lease = self._lease, None
        if descriptor is not None:
            os.close(descriptor)  # ends the lock

    async def close(self) -> None:
        await self.release_lease("")


def _temporary(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


def _sync(handle: BinaryIO) -> None:
    handle.flush()
    os.fsync(handle.fileno())


def _remove(path: Path) -> None:
    """Best effort: what is left is removed by delete_incomplete()."""
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


def _write_durably(path: Path, parts: Sequence[bytes]) -> None:
    temporary = _temporary(path)
    with open(temporary, "wb") as handle:
        for part in parts:
            handle.write(part)
        _sync(handle)
    os.replace(temporary, path)


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
