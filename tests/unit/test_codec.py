"""Checkpoint bytes: arrays survive the round trip exactly; damage is detected."""

from __future__ import annotations

import numpy as np
import pytest

from recsrv.errors import StoreError
from recsrv.store import codec
from recsrv.store.codec import CHUNK_BYTES, Encoder, decode, detach, encode

ARRAYS = [
    ("ints", np.arange(3_000_000, dtype=np.int32)),
    ("floats", np.random.default_rng(1).random(1_500_000)),
    ("bytes", np.frombuffer(b"hello", dtype=np.uint8)),
    ("empty", np.zeros((0, 5))),
    ("strided", np.arange(12, dtype=np.int8).reshape(3, 4)[:, ::2]),
    ("scalar", np.array(3.5)),
    ("bools", np.array([True, False, True])),
    ("matrix", np.arange(20_000, dtype=np.int64).reshape(1000, 20)),
]


def test_round_trip_keeps_names_dtypes_shapes_and_values() -> None:
    encoded = encode(iter(ARRAYS))
    decoded = decode(encoded.chunks, encoded.sha256)
    assert list(decoded) == [name for name, _ in ARRAYS]
    for name, array in ARRAYS:
        assert decoded[name].dtype == array.dtype, name
        assert decoded[name].shape == array.shape, name
        assert np.array_equal(decoded[name], array), name


def test_chunks_are_full_size_but_the_last_and_sizes_add_up() -> None:
    encoded = encode(iter(ARRAYS))
    assert len(encoded.chunks) >= 3
    assert all(len(chunk) == CHUNK_BYTES for chunk in encoded.chunks[:-1])
    assert 0 < len(encoded.chunks[-1]) <= CHUNK_BYTES
    assert encoded.size == sum(len(chunk) for chunk in encoded.chunks)


def test_damage_and_object_arrays_are_refused() -> None:
    encoded = encode(iter(ARRAYS))
    damaged = [encoded.chunks[0][:-1] + b"x", *encoded.chunks[1:]]
    with pytest.raises(StoreError, match="checksum"):
        decode(damaged, encoded.sha256)
    with pytest.raises(StoreError, match="corrupt"):
        decode([encoded.chunks[0][:1000]])
    with pytest.raises(StoreError, match="object dtype"):
        encode(iter([("objects", np.array([{"a": 1}], dtype=object))]))


def test_empty_checkpoint() -> None:
    encoded = encode(iter([]))
    assert encoded.chunks == []
    assert decode([], encoded.sha256) == {}


def test_the_encoder_lets_the_gil_go_between_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker thread encoding a checkpoint pauses between steps (an array, a piece of
    a chunk), so the event loop's thread gets the GIL at once; the bytes are
    the same either way."""
    plain = encode(iter(ARRAYS))
    pauses: list[float] = []
    monkeypatch.setattr(codec, "PAUSE_EVERY_S", 0.0)
    monkeypatch.setattr(codec.time, "sleep", pauses.append)
    paused = encode(iter(ARRAYS))
    assert paused.chunks == plain.chunks
    assert paused.sha256 == plain.sha256
    assert len(pauses) >= len(ARRAYS) + len(plain.chunks)
    assert set(pauses) == {codec.PAUSE_S}


def test_chunks_come_one_at_a_time_with_the_totals_at_the_end() -> None:
    whole = encode(iter(ARRAYS))
    encoder = Encoder()
    chunks = encoder.chunks(iter(ARRAYS))
    first = next(chunks)
    assert first == whole.chunks[0]
    assert (encoder.count, encoder.size) == (1, len(first))
    rest = list(chunks)
    assert [first, *rest] == whole.chunks
    assert (encoder.count, encoder.size, encoder.sha256) == (
        len(whole.chunks),
        whole.size,
        whole.sha256,
    )


def test_detached_arrays_do_not_change_with_the_originals() -> None:
    live = {name: array.copy() for name, array in ARRAYS}
    before = encode(iter(live.items()))
    views = []
    for name, array in live.items():
        view = array.view()
        view.flags.writeable = False
        views.append((name, view))
    detached = list(detach(iter(views)))
    for array in live.values():
        if array.size:
            array.reshape(-1)[0] = 1  # an event changes the live state afterwards
    assert encode(iter(detached)) == before
    for (_, copy), original in zip(detached, live.values(), strict=True):
        assert copy.flags.c_contiguous
        assert not np.shares_memory(copy, original)


def test_a_large_copy_is_in_private_memory() -> None:
    """Shared anonymous memory (Python's mmap default) costs more per first touch."""
    large = np.arange(codec.MMAP_AT_LEAST // 8 + 1, dtype=np.int64)
    ((_, copy),) = detach(iter([("large", large)]))
    assert np.array_equal(copy, large)
    address = copy.ctypes.data
    with open("/proc/self/maps") as maps:
        for line in maps:
            span, permissions = line.split()[:2]
            start, end = (int(bound, 16) for bound in span.split("-"))
            if start <= address < end:
                break
        else:
            raise AssertionError("the copy's mapping is not in /proc/self/maps")
    assert permissions == "rw-p", line  # p: private, s: shared


def test_arrays_over_bytes_are_not_copied() -> None:
    """orjson pieces are arrays over an immutable bytes object: nothing can change them."""
    piece = np.frombuffer(b'{"a": 1}', dtype=np.uint8)
    ((name, kept),) = detach(iter([("meta", piece)]))
    assert name == "meta"
    assert kept is piece


def test_detach_pauses_between_arrays(monkeypatch: pytest.MonkeyPatch) -> None:
    """Producing the arrays (orjson pieces) holds the GIL, so the copier pauses between
    them; each copy lets the GIL go inside numpy."""
    pauses: list[float] = []
    monkeypatch.setattr(codec, "PAUSE_EVERY_S", 0.0)
    monkeypatch.setattr(codec.time, "sleep", pauses.append)
    detached = list(detach(iter(ARRAYS)))
    assert len(pauses) == len(ARRAYS)
    for (name, copy), (original_name, original) in zip(detached, ARRAYS, strict=True):
        assert name == original_name
        assert np.array_equal(copy, original)
