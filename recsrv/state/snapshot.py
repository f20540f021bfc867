"""The whole model state as named numpy arrays, and back: what a checkpoint holds.

dump_state yields (name, array) pairs; load_state rebuilds an equal Model from them.
No I/O here: the checkpoint store writes and reads the arrays. Every array is plain
numeric, or uint8 holding orjson; nothing is ever pickled.

Layout, STATE_FORMAT 3 (bump it when any of this changes, popularity.LEADERS and the
blend's experts included).
Numeric arrays hold only the used rows: `[:n]` for the n items, `[:s]` for the s
session slots ever used.

    meta                      orjson: format, offset, events, clock, stats, item
                              capacity, settings, and the length of every `.K` series
    catalog.<name>            in_stock deleted in_catalog available category price
                              counters                                      [:n]
    popularity.scores [:n]    .leaders (slot order) .t_ref .floor
    similar.ids .weights .sizes [:n] .t_ref    successors.…, bought_together.… likewise
    sessions.<name>           items types times heads lengths last_ts touched users
                              records active                                [:s]
    sessions.capacity         .next_sweep
    session_index.<name>      items lengths last_ts serials (every record), next_serial,
                              item_records item_heads item_sessions         [:n]
    blend.<name>              weights, quality (each expert's average) and
                              counters (measured events)
    prequential.state         countdown, predictions, hits, reciprocal sum, recent HR/MRR
    items.ids.K               item ids, in index order
    catalog.categories.K      category names, in code order
    catalog.meta.K            {item index: {title, url, image_url, tags, properties}}
                              (held in memory as orjson bytes, written as JSON)
    sessions.ids.K            slot → session id ("" for a free slot)
    sessions.free.K           free slots, in the order they are reused from the end
    sessions.carts.K          {slot: {item index: quantity}}, insertion-ordered
    sessions.purchased.K      likewise
    users.ids.K               user index → id ("" for a free index)
    users.free.K              free user indices, in reuse order
    users.profiles.K          {user: {item index: weight}}, insertion-ordered
    (meta) users.credits      [credits, repeat credits], for the repeat-purchase rate
    recent_ids.K              de-duplication event ids, oldest first

A `.K` series is a list or dict cut into orjson pieces K = 0, 1, … (at least one,
even when empty), so that no single encode holds the GIL for long.

Settings, when the config at restore differs from the one at dump:

- shape-defining, SnapshotMismatch: `model.neighbors` (width of the neighbour
  rows), `sessions.max_events` (width of the session ring buffers and index
  records), `model.index_sessions` and `model.knn_per_item` (the session index);
- scale-defining, converted: `model.popularity_half_life_s` and
  `model.similarity_half_life_s`. Stored values are decayed to the snapshot's clock
  under the old half-life, and decay under the new one from there on;
- behaviour, taken as configured: all the others. A smaller `model.dedup_window`
  keeps only the newest event ids; a smaller `sessions.max_user_items` trims profiles
  as Users.credit would; a smaller `sessions.max_sessions` evicts the surplus
  sessions a batch at a time as new sessions arrive; `sessions.ttl_s` applies to
  the restored sessions at once; weights, window and the rest affect what is learnt
  from the next event on.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping
from itertools import count, islice
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt
import orjson

from recsrv.blend import Blend
from recsrv.config import ModelConfig, SessionsConfig
from recsrv.errors import RecsrvError
from recsrv.model import Model
from recsrv.state.catalog import Catalog
from recsrv.state.decay import ExpScale
from recsrv.state.sessions import Sessions

STATE_FORMAT: Final = 3

# Most entries per orjson piece: 25,000 ids encode in about 1 ms here, a piece of
# 2,500 profiles (BATCH // 10 dicts, with their ~5,000 items) in about 2 ms.
BATCH: Final = 25_000
# A catalog entry counts as this many entries: it may hold ~12 KB of text, so a piece
# of BATCH // CATALOG_ENTRY_COST entries stays within a few MB (and is ~150 KB usually).
CATALOG_ENTRY_COST: Final = 100
NEIGHBOR_TABLES: Final = ("similar", "successors", "bought_together")

Array = npt.NDArray[Any]
Named = tuple[str, Array]


class _Series(Protocol):
    """A list, dict or deque-like part of the state: sized and iterable."""

    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[Any]: ...


class SnapshotMismatch(RecsrvError):
    """A snapshot that cannot be restored here: another format version, a different
    shape-defining setting, or a missing or inconsistent array."""

    def __init__(self, setting: str, snapshot: object, expected: object) -> None:
        super().__init__(
            f"cannot restore the snapshot: {setting} is {snapshot!r} in it, {expected!r} here"
        )
        self.setting = setting
        self.snapshot = snapshot
        self.expected = expected


# -- dump ----------------------------------------------------------------------------


def dump_state(model: Model) -> Iterator[Named]:
    """Yield the model's whole state as (name, array) pairs (the layout is above).

    Meant for a worker thread while the event loop keeps serving reads of the same
    model (reads write nothing); the caller guarantees that no event is applied until
    the iterator is exhausted, and a RuntimeError at the end says if one was. Nothing
    here writes to the model. Numeric arrays are yielded as read-only views of the
    live arrays (no copy): write or copy each before the next event is applied.
    Strings and dicts are encoded in pieces (lists: BATCH entries; dicts of dicts:
    BATCH // 10 entries, halved until their inner entries number at most BATCH;
    catalog entries: BATCH // CATALOG_ENTRY_COST), so that no step holds the GIL for
    more than a few milliseconds.
    """
    applied = model.events
    series = _series(model)
    yield "meta", _json(_meta(model, series))
    n = len(model.items)
    yield from _prefixed("catalog", model.catalog.to_arrays(n))
    yield from _prefixed("popularity", model.popularity.to_arrays(n))
    for name in NEIGHBOR_TABLES:
        yield from _prefixed(name, getattr(model, name).to_arrays(n))
    yield from _prefixed("sessions", model.sessions.to_arrays())
    yield from _prefixed("session_index", model.session_index.to_arrays(n))
    yield from _prefixed("blend", model.blend.to_arrays())
    yield from _prefixed("prequential", {"state": model.prequential.to_array()})
    for name, (container, per_piece) in series.items():
        yield from _pieces(name, container, per_piece)
    # Every change of state counts an event, so this catches a broken promise (some
    # of it would also surface as "changed size during iteration").
    if model.events != applied:
        raise RuntimeError("events were applied while the model was being dumped")


def _series(model: Model) -> dict[str, tuple[_Series, int]]:
    """The Python-side state, each with how many of its entries go in one piece."""
    sessions, users = model.sessions, model.users
    meta = max(1, BATCH // CATALOG_ENTRY_COST)
    # Dicts of dicts: a first cut that _split halves where the inner dicts are big.
    nested = max(1, BATCH // 10)
    return {
        "items.ids": (model.items.ids, BATCH),
        "catalog.categories": (model.catalog.categories, BATCH),
        "catalog.meta": (model.catalog.meta, meta),
        "sessions.ids": (sessions.session_ids, BATCH),
        "sessions.free": (sessions.free_slots, BATCH),
        "sessions.carts": (sessions.carts, nested),
        "sessions.purchased": (sessions.purchased, nested),
        "users.ids": (users.user_ids, BATCH),
        "users.free": (users.free, BATCH),
        "users.profiles": (users.profiles, nested),
        "recent_ids": (model.recent_ids, BATCH),
    }


def _meta(model: Model, series: Mapping[str, tuple[_Series, Any]]) -> dict[str, Any]:
    return {
        "format": STATE_FORMAT,
        "offset": model.offset,
        "events": model.events,
        "clock": model.clock,
        "stats": model.stats(),
        "item_capacity": model.items.capacity,
        "shape": _shape(model.config, model.sessions_config),
        "scale": _half_lives(model.config),
        "users.credits": [model.users.credits, model.users.repeat_credits],
        "lengths": {name: len(container) for name, (container, _) in series.items()},
    }


def _half_lives(config: ModelConfig) -> dict[str, float]:
    return {
        "model.popularity_half_life_s": config.popularity_half_life_s,
        "model.similarity_half_life_s": config.similarity_half_life_s,
    }


def _prefixed(prefix: str, arrays: Mapping[str, Array]) -> Iterator[Named]:
    """The arrays under `prefix.`, as read-only views: a consumer cannot write through
    them into the live model."""
    for name, array in arrays.items():
        view = array.view()
        view.flags.writeable = False
        yield f"{prefix}.{name}", view


def _pieces(name: str, container: _Series, per_piece: int) -> Iterator[Named]:
    """A list or dict as orjson pieces `name.0`, `name.1`, … (a single empty piece for
    an empty one)."""
    k = -1
    for k, piece in enumerate(_cuts(container, per_piece)):
        yield f"{name}.{k}", _json(piece)
    if k < 0:
        yield f"{name}.0", _json({} if isinstance(container, Mapping) else [])


def _cuts(container: _Series, per_piece: int) -> Iterator[Collection[Any]]:
    """Pieces of per_piece entries, cut with islice: a few C calls per piece."""
    if isinstance(container, Mapping):
        entries = iter(container.items())
        while piece := dict(islice(entries, per_piece)):
            yield from _split(piece)
    else:
        values = iter(container)
        while part := list(islice(values, per_piece)):
            yield part


def _split(piece: dict[Any, Any]) -> Iterator[dict[Any, Any]]:
    """`piece`, or halves of it, so that each holds at most BATCH entries of its inner
    collections (a single entry may hold more)."""
    if len(piece) == 1 or sum(map(len, piece.values())) <= BATCH:
        yield piece
        return
    entries = list(piece.items())
    half = len(entries) // 2
    yield from _split(dict(entries[:half]))
    yield from _split(dict(entries[half:]))


def _json(value: object) -> npt.NDArray[np.uint8]:
    encoded = orjson.dumps(value, default=_embedded, option=orjson.OPT_NON_STR_KEYS)
    return np.frombuffer(encoded, dtype=np.uint8)


def _embedded(value: object) -> orjson.Fragment:
    """Bytes in the state are JSON already (the catalog's text fields): written as they
    are, the checkpoint holds the same document as for the decoded value."""
    if isinstance(value, bytes):
        return orjson.Fragment(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


# -- load ----------------------------------------------------------------------------


def load_state(
    arrays: Mapping[str, Array], model_config: ModelConfig, sessions_config: SessionsConfig
) -> Model:
    """Rebuild the Model that dump_state dumped, under the given config.

    Raises SnapshotMismatch for another format version, a different shape-defining
    setting (model.neighbors, sessions.max_events) or a missing or inconsistent
    array; other settings may differ (see the module docstring).
    """
    snapshot = _Snapshot(arrays)
    meta = snapshot.meta()
    _check_settings(meta, model_config, sessions_config)
    model = Model(model_config, sessions_config, initial_capacity=int(meta["item_capacity"]))
    model.offset = int(meta["offset"])
    model.events = int(meta["events"])
    model.clock = float(meta["clock"])
    _restore_items(model, snapshot)
    _restore_sessions(model.sessions, snapshot)
    model.users.restore(
        snapshot.series("users.ids"),
        snapshot.series("users.free"),
        _nested_int_keys(snapshot.series("users.profiles")),
    )
    # Absent from checkpoints written before the repeat rate existed: it starts over.
    model.users.credits, model.users.repeat_credits = meta.get("users.credits", (0, 0))
    model.recent_ids.restore(snapshot.series("recent_ids"))
    model.blend.restore(snapshot.part("blend", Blend.ARRAYS))
    model.prequential.restore(snapshot.array("prequential.state"))
    _convert_scales(model, meta["scale"])
    return model


def _shape(model_config: ModelConfig, sessions_config: SessionsConfig) -> dict[str, int]:
    return {
        "model.neighbors": model_config.neighbors,
        "sessions.max_events": sessions_config.max_events,
        "model.index_sessions": model_config.index_sessions,
        "model.knn_per_item": model_config.knn_per_item,
    }


def _check_settings(
    meta: Mapping[str, Any], model_config: ModelConfig, sessions_config: SessionsConfig
) -> None:
    configured = _shape(model_config, sessions_config)
    dumped = meta["shape"]
    for setting, value in configured.items():
        if dumped.get(setting) != value:
            raise SnapshotMismatch(setting, dumped.get(setting), value)


def _restore_items(model: Model, snapshot: _Snapshot) -> None:
    ids = snapshot.series("items.ids")
    n = len(ids)
    if n > model.items.capacity:
        raise SnapshotMismatch("the item count", n, f"at most {model.items.capacity}")
    model.items.restore(ids)
    model.catalog.restore(
        snapshot.part("catalog", Catalog.ARRAYS, rows=n),
        snapshot.series("catalog.categories"),
        {int(idx): entry for idx, entry in snapshot.series("catalog.meta").items()},
    )
    model.popularity.restore(
        {
            **snapshot.part("popularity", ("scores",), rows=n),
            **snapshot.part("popularity", ("leaders", "t_ref", "floor")),
        }
    )
    for name in NEIGHBOR_TABLES:
        table = getattr(model, name)
        table.restore(
            {
                **snapshot.part(name, ("ids", "weights", "sizes"), rows=n),
                **snapshot.part(name, ("t_ref",)),
            }
        )
    per_item = ("item_records", "item_heads", "item_sessions")
    model.session_index.restore(
        {
            **snapshot.part("session_index", per_item, rows=n),
            **snapshot.part(
                "session_index", ("items", "lengths", "last_ts", "serials", "next_serial")
            ),
        }
    )


def _restore_sessions(sessions: Sessions, snapshot: _Snapshot) -> None:
    session_ids = snapshot.series("sessions.ids")
    sessions.restore(
        {
            **snapshot.part("sessions", Sessions.ARRAYS, rows=len(session_ids)),
            **snapshot.part("sessions", ("capacity", "next_sweep")),
        },
        session_ids,
        snapshot.series("sessions.free"),
        _nested_int_keys(snapshot.series("sessions.carts")),
        _nested_int_keys(snapshot.series("sessions.purchased")),
    )


def _nested_int_keys(raw: Mapping[str, Mapping[str, Any]]) -> dict[int, dict[int, Any]]:
    """{int: {int: value}} back from JSON's string keys, in the same orders."""
    return {
        int(outer): {int(inner): value for inner, value in entries.items()}
        for outer, entries in raw.items()
    }


def _convert_scales(model: Model, dumped: Mapping[str, float]) -> None:
    """Values stored under another half-life: decay them to the clock on the old rate
    (a rebase of an ExpScale with that rate), so the new rate applies from there on."""
    configured = _half_lives(model.config)
    setting = "model.popularity_half_life_s"
    if dumped[setting] != configured[setting]:
        factor = _rebase(model.popularity.scale, dumped[setting], model.clock)
        model.popularity.scores *= factor
        model.popularity.floor *= factor
    setting = "model.similarity_half_life_s"
    if dumped[setting] != configured[setting]:
        for name in NEIGHBOR_TABLES:
            table = getattr(model, name)
            table.rescale(_rebase(table.scale, dumped[setting], model.clock))


def _rebase(scale: ExpScale, old_half_life_s: float, now: float) -> float:
    old = ExpScale(old_half_life_s)
    old.t_ref = scale.t_ref
    factor = old.rebase(now)
    scale.t_ref = now
    return factor


class _Snapshot:
    """Checked access to the arrays of a snapshot."""

    def __init__(self, arrays: Mapping[str, Array]) -> None:
        self.arrays = arrays
        self.lengths: Mapping[str, int] = {}

    def meta(self) -> dict[str, Any]:
        meta: dict[str, Any] = self._json("meta")
        if meta.get("format") != STATE_FORMAT:
            raise SnapshotMismatch("format", meta.get("format"), STATE_FORMAT)
        self.lengths = meta["lengths"]
        return meta

    def array(self, name: str) -> Array:
        array = self.arrays.get(name)
        if array is None:
            raise SnapshotMismatch(f"array {name!r}", "missing", "required")
        return array

    def part(self, prefix: str, names: Iterable[str], rows: int | None = None) -> dict[str, Array]:
        """Numeric arrays `prefix.name`; with `rows`, each must have that many rows."""
        part = {name: self.array(f"{prefix}.{name}") for name in names}
        for name, array in part.items():
            if rows is not None and (array.ndim == 0 or len(array) != rows):
                raise SnapshotMismatch(f"the rows of {prefix}.{name}", array.shape, rows)
        return part

    def series(self, name: str) -> Any:
        """A list or dict from its pieces, checked against the length meta recorded."""
        value = self._json(f"{name}.0")
        for k in count(1):
            piece = self.arrays.get(f"{name}.{k}")
            if piece is None:
                break
            more = _loads(f"{name}.{k}", piece)
            if isinstance(value, list):
                value.extend(more)
            else:
                value.update(more)
        if len(value) != self.lengths.get(name):
            raise SnapshotMismatch(f"the length of {name}", len(value), self.lengths.get(name))
        return value

    def _json(self, name: str) -> Any:
        return _loads(name, self.array(name))


def _loads(name: str, array: Array) -> Any:
    try:
        return orjson.loads(array.tobytes())
    except orjson.JSONDecodeError as exc:
        raise SnapshotMismatch(f"array {name!r}", f"not JSON ({exc})", "JSON") from None
