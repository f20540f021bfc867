"""Checkpoint bytes: named numpy arrays ↔ chunks.

The logical stream is a sequence of records: a 2-byte name length, the UTF-8 name,
then the array in the .npy format (np.lib.format, allow_pickle=False, so dtype and
shape travel with the raw bytes and nothing is ever unpickled). The stream is cut
into chunks of CHUNK_BYTES. Chunks are not compressed: zlib at its fastest level ran
at under 20 MB/s here on the mostly random weights and indices, slower than writing
the bytes. Pure code: no I/O besides in-memory buffers.

A checkpoint is taken in two steps, each meant for a worker thread beside an event
loop. `detach` copies the arrays of a state (while no event may change them), and
`Encoder.chunks` cuts the copies into chunks, one at a time, while a store writes the
chunks already made (recsrv.checkpointer ties the two to a store). A `Deferred` array
is not copied: the encoder reads it block by block when it gets to it.

A thread that holds the GIL makes the loop's thread wait for it, each time the loop
wakes, until the interpreter's switch interval (5 ms) runs out; so both steps also
sleep PAUSE_S every PAUSE_EVERY_S of work (`Pacer`), which hands the GIL over at once.
"""

from __future__ import annotations

import hashlib
import io
import math
import mmap
import struct
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from recsrv.errors import CheckpointDamaged, StoreError

CODEC_FORMAT: Final = 1
# Well under MongoDB's 16 MiB document limit; PyMongo encodes each document on the
# event loop, so a smaller chunk is a shorter stall.
CHUNK_BYTES: Final = 4 * 1024 * 1024
# About 5% more time for the encoder; the loop's longest wait for the GIL goes from the
# switch interval (5 ms) to PAUSE_EVERY_S plus one step (a slice, an orjson piece).
PAUSE_EVERY_S: Final = 0.002
# Copies of at least this size get anonymous memory of their own (see _copy).
MMAP_AT_LEAST: Final = 1024 * 1024
PAUSE_S: Final = 0.0001
NAME_LENGTH = struct.Struct("<H")

Array = npt.NDArray[Any]
Named = tuple[str, Array]


@dataclass(frozen=True, slots=True)
class Deferred:
    """An array whose bytes are read only when the encoder reaches it, block by block,
    rows in order: what a checkpoint does not copy under the consumer's lock
    (recsrv.checkpointer). `detach` passes it on as it is."""

    dtype: np.dtype[Any]
    shape: tuple[int, ...]
    blocks: Callable[[], Iterator[Array]]


# What detach yields and the encoder takes.
Part = tuple[str, Array | Deferred]


@dataclass(frozen=True, slots=True)
class Encoded:
    chunks: list[bytes]
    size: int
    sha256: str


class Pacer:
    """Lets the GIL go for PAUSE_S once this thread has held it for PAUSE_EVERY_S."""

    def __init__(self) -> None:
        self._since = time.perf_counter()

    def pause(self) -> None:
        if time.perf_counter() - self._since >= PAUSE_EVERY_S:
            time.sleep(PAUSE_S)
            self._since = time.perf_counter()


def detach(arrays: Iterable[Part]) -> Iterator[Part]:
    """The named arrays, each copied unless its memory is an immutable bytes object:
    what `arrays` holds when each is taken, whatever later happens to the arrays they
    view. An array is copied in one numpy call, which lets the GIL go while it copies
    (in slices, each slice had to win the GIL back from the event loop's thread and the
    encoder's, which made the copy, and so the consumer's lock, last several times as
    long); the pauses between arrays cover producing `arrays` (orjson pieces)."""
    pacer = Pacer()
    for name, array in arrays:
        pacer.pause()
        if isinstance(array, Deferred) or isinstance(array.base, bytes):
            yield name, array
        else:
            yield name, _copy(array)


def _copy(array: Array) -> Array:
    """A C-contiguous copy. A large one goes into anonymous memory of its own, in 4 KiB
    pages: numpy asks for huge pages for its large arrays, and in a process whose memory
    is fragmented the kernel compacted memory to find them, which made copying 0.9 GB
    take longer than encoding it had (2.3 s against 1.5 s here). Private memory: Python's
    mmap maps anonymous memory shared by default, which the kernel backs with shared
    memory pages, each first touch dearer (256 MiB copied in 213-521 ms against 147-156
    ms private, bench/notes.md). The memory goes back to the system (munmap, without the
    GIL) once the copy is let go."""
    if array.nbytes < MMAP_AT_LEAST:
        return array.copy(order="C")
    memory = mmap.mmap(-1, array.nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    copy = np.frombuffer(memory, dtype=array.dtype).reshape(array.shape)
    np.copyto(copy, array)
    return copy


class Encoder:
    """Cuts named arrays into chunks of CHUNK_BYTES (the last one shorter), counting
    and hashing them as they go. One chunk is made per step, so a caller can hand each
    to a store before the next is made; read `count`, `size` and `sha256` after the
    last."""

    def __init__(self) -> None:
        self.count = 0
        self.size = 0
        self._digest = hashlib.sha256()
        self._pacer = Pacer()
        self._pending: list[bytes | memoryview] = []
        self._fill = 0

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    def chunks(self, arrays: Iterable[Part]) -> Iterator[bytes]:
        """The chunks of `arrays`. With an iterator that holds no array once it has
        yielded it (recsrv.checkpointer's copies), each array is let go soon after its
        last byte is in a chunk."""
        for name, array in arrays:
            self._pacer.pause()  # producing an array may have taken a while
            yield from self._record(name, array)
        if self._fill:
            yield self._flush()

    def _record(self, name: str, array: Array | Deferred) -> Iterator[bytes]:
        if array.dtype.hasobject:
            raise StoreError(f"array {name!r} has object dtype; it cannot be checkpointed")
        if isinstance(array, np.ndarray) and not array.flags.c_contiguous:
            array = array.copy(order="C")
        encoded_name = name.encode()
        header = io.BytesIO()
        header.write(NAME_LENGTH.pack(len(encoded_name)) + encoded_name)
        np.lib.format.write_array_header_2_0(
            header,
            {
                "descr": np.lib.format.dtype_to_descr(array.dtype),
                "fortran_order": False,
                "shape": array.shape,
            },
        )
        yield from self._add(header.getvalue())
        if isinstance(array, np.ndarray):
            if array.size:
                yield from self._add(array.reshape(-1).view(np.uint8).data)
            return
        expected = math.prod(array.shape) * array.dtype.itemsize
        written = 0
        for block in array.blocks():
            self._pacer.pause()
            written += block.nbytes
            if block.dtype != array.dtype or written > expected:
                raise StoreError(f"array {name!r}: its blocks do not make {array.shape}")
            if block.size:
                yield from self._add(np.ascontiguousarray(block).reshape(-1).view(np.uint8).data)
        if written != expected:
            raise StoreError(f"array {name!r}: its blocks do not make {array.shape}")

    def _add(self, data: bytes | memoryview) -> Iterator[bytes]:
        """Queue `data` for the current chunk, making every chunk it fills."""
        view = memoryview(data)
        while view.nbytes:
            take = min(CHUNK_BYTES - self._fill, view.nbytes)
            self._pending.append(view[:take])
            self._fill += take
            view = view[take:]
            if self._fill == CHUNK_BYTES:
                yield self._flush()
            self._pacer.pause()

    def _flush(self) -> bytes:
        """Join the pending pieces into one chunk: one copy of its bytes (the same single
        4 MiB step as a bytes() of a buffer; hashing lets the GIL go)."""
        chunk = b"".join(self._pending)
        self._pending.clear()
        self._fill = 0
        self._digest.update(chunk)
        self.count += 1
        self.size += len(chunk)
        return chunk


def encode(arrays: Iterable[Named]) -> Encoded:
    """Serialise named arrays into chunks, all at once."""
    encoder = Encoder()
    chunks = list(encoder.chunks(arrays))
    return Encoded(chunks, encoder.size, encoder.sha256)


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
