"""Checkpoints in MongoDB (store.url = mongodb://host:port/db), with PyMongo's async API.

Collections: `checkpoints` (one metadata document per checkpoint, `complete` 0 until
every chunk is written, then 1, set together with the chunk count, size, sha256 and
chunk ids that only the end of the stream tells; -1 once pruning dooms it) and
`checkpoint_chunks` (binary chunks under 16 MiB, `_id` = "<checkpoint id>.<seq>", each
inserted as the encoder makes it). Only the portable subset of MongoDB is used: string
ids, insert_one, update_one and update_many with $set, find, delete_many, indexes.
`complete` is an integer, not a bool, because some wire-compatible servers do not keep
bools written by $set. A chunk's `data` is BSON binary (subtype 0), the encoding
PyMongo gives `bytes`: wrapping each chunk in bson.Binary first copied its 4 MiB on
the event loop.

Replicas may share the database. `leases` holds the checkpoint writer's lease, one
document (`_id` "checkpoint_writer", `holder`, `expires_at` in wall-clock seconds),
taken or renewed by one conditional upsert: it matches when the lease is the
holder's own or has expired, and otherwise the upsert's insert of the same `_id`
fails with a duplicate key, atomically in the server. Replicas' clocks must agree
to well within store.lease_s (NTP). `checkpoint_reads` holds a document per
checkpoint being read (`checkpoint`, `expires_at`, renewed while the read goes on),
and `delete` spares those checkpoints until the mark is gone or has expired.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any, Final

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError, PyMongoError

from recsrv.config import redact_url
from recsrv.errors import CheckpointDamaged, StoreError
from recsrv.store import CheckpointInfo, ChunkStream

SERVER_TIMEOUT_MS = 5000
LEASE_ID: Final = "checkpoint_writer"
# `complete` of an incomplete checkpoint that pruning is deleting: never 1 after that.
DOOMED: Final = -1
# How long a read's mark lasts unrenewed; a read renews it every third of that.
READ_MARK_S: Final = 60.0


class MongoStore:
    def __init__(self, url: str) -> None:
        self.url = url
        self.describe = f"MongoDB at {redact_url(url)}"
        self._client: AsyncMongoClient[dict[str, Any]] | None = None
        self._db: AsyncDatabase[dict[str, Any]] | None = None

    async def open(self) -> None:
        try:
            client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
                self.url,
                serverSelectionTimeoutMS=SERVER_TIMEOUT_MS,
                connectTimeoutMS=SERVER_TIMEOUT_MS,
                appname="recsrv",
            )
            self._client = client
            database = client.get_default_database(default="recsrv")
            await database["checkpoint_chunks"].create_index([("checkpoint", 1), ("seq", 1)])
            await database["checkpoints"].create_index([("complete", 1), ("created_at", -1)])
            self._db = database
        except PyMongoError as exc:
            await self.close()
            raise StoreError(f"cannot open {self.describe}: {exc}") from exc

    def _database(self) -> AsyncDatabase[dict[str, Any]]:
        if self._db is None:
            raise StoreError(f"{self.describe} is not open")
        return self._db

    async def write(self, stream: ChunkStream) -> CheckpointInfo:
        db = self._database()
        head = stream.head
        chunk_ids: list[str] = []
        try:
            # The head goes in with insert_one: nx-27017 keeps only 15 digits of a float
            # written by $set, and created_at orders the checkpoints.
            await db["checkpoints"].insert_one(
                {
                    "_id": head.id,
                    **head.to_dict(),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(head.created_at)),
                    "complete": 0,
                }
            )
            async for chunk in stream:
                chunk_id = _chunk_id(head.id, len(chunk_ids))
                await db["checkpoint_chunks"].insert_one(
                    {"_id": chunk_id, "checkpoint": head.id, "seq": len(chunk_ids), "data": chunk}
                )
                chunk_ids.append(chunk_id)
            info = stream.info()
            if info.chunks != len(chunk_ids):
                raise StoreError(
                    f"checkpoint {head.id}: {len(chunk_ids)} chunks, {info.chunks} told"
                )
            # What only the end of the stream tells, and the flag: one update, so the
            # metadata is whole whenever `complete` is 1. Only from 0: a replica that
            # took the lease over meanwhile dooms what is incomplete before it deletes
            # the chunks (delete_incomplete), and then this matches nothing.
            marked = await db["checkpoints"].update_one(
                {"_id": head.id, "complete": 0},
                {
                    "$set": {
                        "chunks": info.chunks,
                        "size": info.size,
                        "sha256": info.sha256,
                        "chunk_ids": chunk_ids,
                        "complete": 1,
                    }
                },
            )
            if marked.matched_count != 1:
                with contextlib.suppress(PyMongoError):  # else the next pruning does
                    await db["checkpoint_chunks"].delete_many({"checkpoint": head.id})
                raise StoreError(
                    f"checkpoint {head.id} was removed while it was written (another "
                    "replica took the lease?)"
                )
        except PyMongoError as exc:
            raise StoreError(f"cannot write checkpoint {head.id}: {exc}") from exc
        return info

    async def complete(self) -> list[CheckpointInfo]:
        db = self._database()
        try:
            documents = await db["checkpoints"].find({"complete": 1}).to_list(None)
        except PyMongoError as exc:
            raise StoreError(f"cannot list checkpoints: {exc}") from exc
        found = []
        for document in documents:
            try:
                found.append(CheckpointInfo.from_dict(document))
            except (KeyError, TypeError, ValueError):
                continue  # damaged metadata: never restored from (as in the file store)
        return sorted(found, key=lambda info: (info.created_at, info.id), reverse=True)

    async def read(self, info: CheckpointInfo) -> AsyncIterator[bytes]:
        db = self._database()
        reads = db["checkpoint_reads"]
        mark = f"{info.id}:{uuid.uuid4().hex}"
        marked = 0.0
        try:
            for seq in range(info.chunks):
                try:
                    if time.monotonic() - marked > READ_MARK_S / 3:
                        marked = time.monotonic()
                        await reads.update_one(
                            {"_id": mark},
                            {
                                "$set": {
                                    "checkpoint": info.id,
                                    "expires_at": time.time() + READ_MARK_S,
                                }
                            },
                            upsert=True,
                        )
                    document = await db["checkpoint_chunks"].find_one(
                        {"_id": _chunk_id(info.id, seq)}
                    )
                except PyMongoError as exc:
                    raise StoreError(f"cannot read checkpoint {info.id}: {exc}") from exc
                # The server answered: what is missing or malformed is this checkpoint's fault.
                if document is None:
                    raise CheckpointDamaged(f"checkpoint {info.id} lacks chunk {seq}")
                data = document.get("data")
                if not isinstance(data, bytes):
                    raise CheckpointDamaged(f"chunk {seq} of checkpoint {info.id} holds no bytes")
                yield bytes(data)
        finally:
            if marked:
                with contextlib.suppress(PyMongoError):  # else it expires by itself
                    await reads.delete_many({"_id": mark})

    async def delete(self, ids: Sequence[str]) -> None:
        if not ids:
            return
        db = self._database()
        try:
            now = time.time()
            await db["checkpoint_reads"].delete_many({"expires_at": {"$lte": now}})
            marks = (
                await db["checkpoint_reads"].find({"checkpoint": {"$in": list(ids)}}).to_list(None)
            )
            being_read = {mark["checkpoint"] for mark in marks}
            unread = [checkpoint_id for checkpoint_id in ids if checkpoint_id not in being_read]
            if not unread:
                return
            # Metadata first: a half-deleted checkpoint is then merely incomplete.
            await db["checkpoints"].delete_many({"_id": {"$in": unread}})
            await db["checkpoint_chunks"].delete_many({"checkpoint": {"$in": unread}})
        except PyMongoError as exc:
            raise StoreError(f"cannot delete checkpoints: {exc}") from exc

    async def delete_incomplete(self) -> None:
        db = self._database()
        try:
            # Doomed first, each head by one atomic update (0 -> DOOMED): a writer that
            # lost the lease can no longer mark its checkpoint complete, so its chunks
            # may go. (Reading its chunks back instead to see none went cost as long
            # as writing them on nx-27017, whose queries load every document.)
            await db["checkpoints"].update_many({"complete": 0}, {"$set": {"complete": DOOMED}})
            complete = [info.id for info in await self.complete()]
            await db["checkpoint_chunks"].delete_many({"checkpoint": {"$nin": complete}})
            await db["checkpoints"].delete_many({"complete": {"$ne": 1}})
        except PyMongoError as exc:
            raise StoreError(f"cannot delete incomplete checkpoints: {exc}") from exc

    async def take_lease(self, holder: str, lease_s: float, replacing: str = "") -> str:
        leases = self._database()["leases"]
        now = time.time()
        takeable: list[dict[str, Any]] = [{"holder": holder}, {"expires_at": {"$lt": now}}]
        if replacing:
            takeable.append({"holder": replacing})
        try:
            try:
                await leases.update_one(
                    {"_id": LEASE_ID, "$or": takeable},
                    {"$set": {"holder": holder, "expires_at": now + lease_s}},
                    upsert=True,
                )
                return holder
            except DuplicateKeyError:
                current = await leases.find_one({"_id": LEASE_ID})
        except PyMongoError as exc:
            raise StoreError(f"cannot take the checkpoint lease: {exc}") from exc
        # Released (deleted) between the two calls: free, taken at the next attempt.
        return str(current["holder"]) if current else ""

    async def release_lease(self, holder: str) -> None:
        try:
            await self._database()["leases"].delete_many({"_id": LEASE_ID, "holder": holder})
        except PyMongoError as exc:
            raise StoreError(f"cannot release the checkpoint lease: {exc}") from exc

    async def close(self) -> None:
        client, self._client, self._db = self._client, None, None
        if client is not None:
            await client.close()


def _chunk_id(checkpoint_id: str, seq: int) -> str:
    return f"{checkpoint_id}.{seq:06d}"
