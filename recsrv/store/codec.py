"""Checkpoint bytes: named numpy arrays ↔ compressed chunks.

The logical stream is a sequence of records: a 2-byte name length, the UTF-8 name,
then the array in the .npy format (np.lib.format, allow_pickle=False, so dtype and
shape travel with the raw bytes and nothing is ever unpickled). The stream is cut
into chunks of CHUNK_BYTES. Chunks are not compressed: zlib at its fastest level ran
at under 20 MB/s here on the mostly random weights and indices, slower than writing
the bytes. Pure code: no I/O besides in-memory buffers.

`encode` is meant for a worker thread beside an event loop. A thread that holds the GIL
makes the loop's thread wait for it, each time the loop wakes, until the interpreter's
switch interval (5 ms) runs out; so the encoder also sleeps PAUSE_S every PAUSE_EVERY_S
of work, which hands the GIL over at once.
"""

from __future__ import annotations

import hashlib
import io
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import numpy as np

from recsrv.errors import CheckpointDamaged, StoreError

CODEC_FORMAT: Final = 1
# Well under MongoDB's 16 MiB document limit; PyMongo encodes each document on the
# event loop, so a smaller chunk is a shorter stall.
CHUNK_BYTES: Final = 4 * 1024 * 1024
WRITE_SLICE: Final = 1024 * 1024
# About 5% more time for the encoder; the loop's longest wait for the GIL goes from the
# switch interval (5 ms) to PAUSE_EVERY_S plus one step (a slice, an orjson piece).
PAUSE_EVERY_S: Final = 0.002
PAUSE_S: Final = 0.0001
NAME_LENGTH = struct.Struct("<H")


@dataclass(frozen=True, slots=True)
class Encoded:
    chunks: list[bytes]
    size: int
    sha256: str


class _Chunks:
    """Collects the stream into fixed-size chunks, copying at most WRITE_SLICE bytes per
    step and pausing between steps (see PAUSE_S): a worker thread encoding a checkpoint
    then never holds the GIL for long (no buffer ever grows, and so is never
    reallocated, past CHUNK_BYTES; sha256 lets the GIL go while it hashes a chunk)."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.digest = hashlib.sha256()
        self._current = bytearray(CHUNK_BYTES)
        self._fill = 0
        self._since_pause = time.perf_counter()

    def pause(self) -> None:
        """Let the GIL go for a moment if this thread has held it for PAUSE_EVERY_S."""
        if time.perf_counter() - self._since_pause >= PAUSE_EVERY_S:
            time.sleep(PAUSE_S)
            self._since_pause = time.perf_counter()

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        position = 0
        while position < len(view):
            take = min(CHUNK_BYTES - self._fill, WRITE_SLICE, len(view) - position)
            self._current[self._fill : self._fill + take] = view[position : position + take]
            self._fill += take
            position += take
            if self._fill == CHUNK_BYTES:
                self.flush()
            self.pause()

    def flush(self) -> None:
        if self._fill:
            chunk = bytes(memoryview(self._current)[: self._fill])
            self.digest.update(chunk)
            self.chunks.append(chunk)
            self._fill = 0


def encode(arrays: Iterable[tuple[str, np.ndarray]]) -> Encoded:
    """Serialise named arrays into chunks."""
    out = _Chunks()
    for name, array in arrays:
        out.pause()  # producing an array may have taken a while (orjson pieces)
        if array.dtype.hasobject:
            raise StoreError(f"array {name!r} has object dtype; it cannot be checkpointed")
        encoded_name = name.encode()
        out.write(NAME_LENGTH.pack(len(encoded_name)) + encoded_name)
        if not array.flags.c_contiguous:
            array = array.copy(order="C")
        header = io.BytesIO()
        np.lib.format.write_array_header_2_0(
            header, np.lib.format.header_data_from_array_1_0(array)
        )
        out.write(header.getbuffer())
        if array.size:
            out.write(array.reshape(-1).view(np.uint8).data)
    out.flush()
    return Encoded(out.chunks, sum(len(c) for c in out.chunks), out.digest.hexdigest())


def decode(chunks: Iterable[bytes], sha256: str | None = None) -> dict[str, np.ndarray]:
    """The named arrays of a checkpoint; CheckpointDamaged if it is corrupt."""
    digest = hashlib.sha256()
    parts: list[bytes] = []
    for chunk in chunks:
        digest.update(chunk)
        parts.append(chunk)
    if sha256 is not None and digest.hexdigest() != sha256:
        raise CheckpointDamaged("checkpoint checksum mismatch")
    stream = io.BytesIO(b"".join(parts))
    del parts
    end = stream.getbuffer().nbytes
    arrays: dict[str, np.ndarray] = {}
    try:
        while stream.tell() < end:
            (length,) = NAME_LENGTH.unpack(stream.read(NAME_LENGTH.size))
            name = stream.read(length).decode()
            arrays[name] = np.lib.format.read_array(stream, allow_pickle=False)
    except (ValueError, struct.error, UnicodeDecodeError) as exc:
        raise CheckpointDamaged(f"checkpoint stream is corrupt: {exc}") from exc
    return arrays
