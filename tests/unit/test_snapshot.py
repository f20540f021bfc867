import io
import math
import random
import re
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import orjson
import pytest

from recsrv import recommend
from recsrv.config import ModelConfig, SessionsConfig
from recsrv.events import (
    CatalogDelete,
    CatalogItem,
    CatalogUpsert,
    Event,
    Interaction,
    LineItem,
    UserForget,
)
from recsrv.model import Model
from recsrv.state import snapshot
from recsrv.state.catalog import Catalog
from recsrv.state.popularity import LEADERS
from recsrv.state.sessions import Sessions
from recsrv.state.snapshot import STATE_FORMAT, SnapshotMismatch, dump_state, load_state

T0 = 1_700_000_000.0
DAY = 86400.0
CATEGORIES = [f"cat{i}" for i in range(12)]

# Small bounds so that a few thousand events reach every corner: full neighbour rows,
# more popular items than LEADERS, evictions, sweeps, a dedup window that forgets.
MODEL = ModelConfig(
    neighbors=8,
    popularity_half_life_s=3600.0,
    similarity_half_life_s=DAY,
    dedup_window=300,
)
SESSIONS = SessionsConfig(ttl_s=1800.0, max_sessions=20, max_events=6, max_user_items=5)


# -- synthetic traffic ---------------------------------------------------------------


class Shop:
    """Random but reproducible traffic: catalog changes, browsing, carts, purchases,
    users who come back and users who are forgotten, event ids that repeat."""

    def __init__(self, seed: int, prefix: str, items: int, start: float) -> None:
        self.rng = random.Random(seed)
        self.prefix = prefix
        self.items = [f"{prefix}item{i:04d}" for i in range(items)]
        # Skewed demand, so that some items are far more popular than others.
        self.demand = [1.0 / (i + 1) ** 0.8 for i in range(items)]
        self.t = start
        self.sessions: list[str] = []
        self.user_of: dict[str, str | None] = {}
        self.event_ids: list[str] = []

    def events(self, count: int, jump_at: int | None = None) -> list[Event]:
        out: list[Event] = []
        for i in range(count):
            self.t += self.rng.expovariate(1 / 20)
            if i == jump_at:
                self.t += 60 * DAY  # far apart: popularity and neighbours rebase
            out.append(self._event(i))
        return out

    def _event(self, i: int) -> Event:
        rng = self.rng
        ts = self.t - rng.uniform(0, 300) if rng.random() < 0.05 else self.t  # late ones
        event_id = self._event_id(i)
        r = rng.random()
        if r < 0.07:
            return CatalogUpsert(self._catalog_item(), ts=ts, event_id=event_id)
        if r < 0.09:
            return CatalogDelete(self._item(), ts=ts, event_id=event_id)
        if r < 0.095:
            user = rng.choice([u for u in self.user_of.values() if u] or ["nobody"])
            return UserForget(user, ts=ts, event_id=event_id)
        return self._interaction(ts, event_id)

    def _event_id(self, i: int) -> str | None:
        rng = self.rng
        if self.event_ids and rng.random() < 0.03:
            return rng.choice(self.event_ids)  # a duplicate, in the window or not
        if rng.random() < 0.4:
            self.event_ids.append(f"{self.prefix}e{i}")
            return self.event_ids[-1]
        return None

    def _item(self) -> str:
        return self.rng.choices(self.items, self.demand)[0]

    def _catalog_item(self) -> CatalogItem:
        rng = self.rng
        item = rng.choice(self.items)
        return CatalogItem(
            item,
            title=f"Title of {item} ü",
            category=rng.choice([*CATEGORIES, None]),
            price=rng.choice([None, round(rng.uniform(1, 200), 2), 0.1 + 0.2]),
            in_stock=rng.random() < 0.85,
            url=f"/p/{item}",
            image_url=rng.choice([None, f"/img/{item}.jpg"]),
            tags=tuple(rng.sample(["red", "blue", "sale", "new", "eco"], rng.randint(0, 3))),
            properties=rng.choice(
                [None, {}, {"brand": "x", "sizes": [38, 39.5], "deep": {"a": None, "b": True}}]
            ),
        )

    def _session(self) -> str:
        rng = self.rng
        if not self.sessions or rng.random() < 0.3:
            session = f"{self.prefix}s{len(self.sessions)}"
            self.sessions.append(session)
            self.user_of[session] = (
                f"{self.prefix}u{rng.randrange(60)}" if rng.random() < 0.4 else None
            )
            return session
        return rng.choice(self.sessions[-25:])

    def _interaction(self, ts: float, event_id: str | None) -> Interaction:
        rng = self.rng
        session = self._session()
        user = self.user_of[session] if rng.random() < 0.7 else None
        kind = rng.choices(
            ["view", "click", "add_to_cart", "remove_from_cart", "purchase", "search"],
            [45, 15, 15, 7, 10, 8],
        )[0]
        if kind == "search":
            return Interaction(kind, session, ts, user, query="shoes", event_id=event_id)
        if kind == "purchase" and rng.random() < 0.5:
            lines = tuple(
                LineItem(self._item(), rng.randint(1, 3), 9.5) for _ in range(rng.randint(1, 4))
            )
            return Interaction(kind, session, ts, user, items=lines, event_id=event_id)
        quantity = rng.randint(1, 3)
        return Interaction(
            kind, session, ts, user, self._item(), quantity=quantity, event_id=event_id
        )


def feed(model: Model, events: Sequence[Event], first_offset: int, seed: int) -> None:
    """Apply events as stream messages of a few events each, with gaps in the offsets."""
    rng = random.Random(seed)
    offset = first_offset
    at = 0
    while at < len(events):
        size = rng.randint(1, 12)
        model.apply_message(offset, events[at : at + size])
        at += size
        offset += rng.randint(1, 3)


def build() -> tuple[Model, Shop]:
    shop = Shop(seed=7, prefix="", items=900, start=T0)
    model = Model(MODEL, SESSIONS, initial_capacity=64)
    feed(model, shop.events(4000, jump_at=2500), first_offset=10, seed=1)
    model.apply(Interaction("view", "late", float("nan"), item_id="item0001"))  # no ts
    # Forget a recent shopper, so that the snapshot holds free session slots, a while
    # later, so that it holds sessions expired but not swept yet.
    sessions = model.sessions
    used = len(sessions.session_ids)
    linked = sessions.users[:used][sessions.active[:used] & (sessions.users[:used] >= 0)]
    model.apply(UserForget(model.users.user_ids[int(linked[-1])], ts=shop.t + 1500))
    return model, shop


def later_events(shop: Shop) -> list[Event]:
    """More traffic: old event ids again (some still remembered, some forgotten), new
    sessions that evict and sweep, new items that grow the index, a jump in time."""
    old_ids = [*shop.event_ids[:20], *shop.event_ids[-20:]]
    again = [
        Interaction("view", "again", shop.t + i, item_id="item0003", event_id=e)
        for i, e in enumerate(old_ids)
    ]
    shop.items.extend(f"new{i:04d}" for i in range(400))
    shop.demand.extend([0.5] * 400)
    return [*again, *shop.events(1500, jump_at=700)]


# -- comparisons ---------------------------------------------------------------------


def answers(model: Model, shop: Shop) -> dict[str, Any]:
    """Everything a client can ask, for every id the traffic used."""
    items = [*model.items.ids, "never-seen"]
    out: dict[str, Any] = {
        "position": (model.offset, model.events, model.clock),
        "stats": model.stats(),
        "info": [model.item_info(i) for i in items],
        "similar": [recommend.similar(model, i, k=6) for i in items],
        "bought_together": [recommend.bought_together(model, i, k=6) for i in items],
        "popular": [recommend.popular(model, k=25, category=c) for c in [None, *CATEGORIES]],
    }
    lists = []
    for n, session in enumerate([*shop.sessions, "no-such-session"]):
        lists.append(recommend.recommend(model, session_id=session, k=8))
        if n % 3 == 0:
            item = items[n % len(items)]
            category = CATEGORIES[n % len(CATEGORIES)]
            lists.append(recommend.recommend(model, session_id=session, item_id=item, k=5))
            lists.append(
                recommend.recommend(
                    model, session_id=session, category=category, exclude=items[:50:3], k=5
                )
            )
    users = sorted({u for u in shop.user_of.values() if u})
    for user in [*users, "no-such-user"]:
        lists.append(recommend.recommend(model, user_id=user, k=8))
        lists.append(recommend.recommend(model, user_id=user, item_id=items[7], k=4))
    out["recommend"] = lists
    return out


def state_of(model: Model) -> dict[str, Any]:
    """The model's whole state, whole arrays included, in comparable form."""
    arrays = {f"catalog.{name}": getattr(model.catalog, name) for name in Catalog.ARRAYS}
    arrays |= {f"sessions.{name}": getattr(model.sessions, name) for name in Sessions.ARRAYS}
    arrays["popularity.scores"] = model.popularity.scores
    arrays["popularity.leaders"] = model.popularity.leaders
    for name in ("similar", "bought_together"):
        for part in ("ids", "weights", "sizes"):
            arrays[f"{name}.{part}"] = getattr(getattr(model, name), part)
    sessions, users, popularity = model.sessions, model.users, model.popularity
    return {
        "arrays": {k: (a.dtype.str, a.shape, a.tobytes()) for k, a in arrays.items()},
        "scalars": (model.offset, model.events, model.clock, model.items.capacity),
        "item_ids": model.items.ids,
        "item_index": {i: model.items.get(i) for i in model.items.ids},
        "categories": model.catalog.categories,
        "category_codes": [model.catalog.category_code(c) for c in model.catalog.categories],
        "meta": list(model.catalog.meta.items()),
        "popularity": (
            popularity.scale.t_ref,
            popularity.leader_count,
            popularity.floor,
            popularity._leader_set,
        ),
        "t_refs": (model.similar.scale.t_ref, model.bought_together.scale.t_ref),
        "sessions": (
            sessions.session_ids,
            sessions.free_slots,
            sessions.slot_of,
            sessions.next_sweep,
            [(slot, list(cart.items())) for slot, cart in sessions.carts.items()],
            [(slot, list(bought.items())) for slot, bought in sessions.purchased.items()],
        ),
        "users": (
            users.user_ids,
            users.free,
            users.index,
            [(user, list(profile.items())) for user, profile in users.profiles.items()],
            (users.credits, users.repeat_credits),
        ),
        "recent_ids": (list(model.recent_ids), model.recent_ids._seen),
    }


def through_bytes(pairs: Iterator[tuple[str, np.ndarray]]) -> dict[str, np.ndarray]:
    arrays = {}
    for name, array in pairs:
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        buffer.seek(0)
        arrays[name] = np.load(buffer, allow_pickle=False)
    return arrays


@pytest.fixture(scope="module")
def built() -> tuple[Model, Shop]:
    return build()


# -- tests ---------------------------------------------------------------------------


def test_traffic_reaches_every_corner(monkeypatch: pytest.MonkeyPatch) -> None:
    """Guards the other tests: the synthetic history exercises what they claim."""
    evictions = []
    evict = Sessions._evict_least_recent

    def counted(self: Sessions) -> None:
        evictions.append(len(self))
        evict(self)

    monkeypatch.setattr(Sessions, "_evict_least_recent", counted)
    model, _ = build()
    assert len(evictions) > 20
    assert model.items.capacity > 64 and len(model.items) > 600
    assert model.popularity.leader_count == LEADERS
    assert model.popularity.scale.t_ref > T0 and model.similar.scale.t_ref > T0  # rebased
    assert (model.similar.sizes == MODEL.neighbors).sum() > 50
    assert model.catalog.deleted.any() and model.catalog.meta and model.catalog.categories
    sessions = model.sessions
    assert sessions.free_slots and sessions.carts and sessions.purchased
    assert len(sessions) > sessions.live_count(model.clock) > 0  # expired, not swept yet
    assert model.users.free and model.users.profiles
    assert len(model.recent_ids) == MODEL.dedup_window
    assert any(len(p) == SESSIONS.max_user_items for p in model.users.profiles.values())


def test_round_trip_is_exact(built: tuple[Model, Shop]) -> None:
    model, shop = built
    before = state_of(model)
    restored = load_state(dict(dump_state(model)), MODEL, SESSIONS)
    assert state_of(model) == before  # dumping wrote nothing
    assert state_of(restored) == before
    assert answers(restored, shop) == answers(model, shop)


def test_restored_model_goes_on_exactly_like_the_original() -> None:
    model, shop = build()
    restored = load_state(through_bytes(dump_state(model)), MODEL, SESSIONS)
    events = later_events(shop)
    capacity, offset = model.items.capacity, model.offset + 1
    for target in (model, restored):
        feed(target, events, first_offset=offset, seed=2)
    assert model.items.capacity > capacity  # the batch grew the index
    assert state_of(restored) == state_of(model)
    assert answers(restored, shop) == answers(model, shop)
    # ... and once more from a snapshot of the continued model.
    again = load_state(dict(dump_state(restored)), MODEL, SESSIONS)
    assert answers(again, shop) == answers(model, shop)


def test_reads_do_not_change_the_state(built: tuple[Model, Shop]) -> None:
    model, shop = built
    before = state_of(model)
    answers(model, shop)
    assert state_of(model) == before


def test_every_array_is_plain_and_every_name_unique(built: tuple[Model, Shop]) -> None:
    model, _ = built
    pairs = list(dump_state(model))
    names = [name for name, _ in pairs]
    assert len(set(names)) == len(names)
    for name, array in pairs:
        assert isinstance(array, np.ndarray), name
        assert not array.dtype.hasobject, name
        assert array.dtype.kind in "biuf", (name, array.dtype)
        assert not array.flags.writeable, name  # no writing through into the model
    n = len(model.items)
    shapes = dict((name, array.shape) for name, array in pairs)
    assert shapes["catalog.price"] == (n,)  # only the used rows
    assert shapes["similar.ids"] == (n, MODEL.neighbors)
    assert shapes["sessions.times"] == (len(model.sessions.session_ids), SESSIONS.max_events)
    meta = orjson.loads(dict(pairs)["meta"].tobytes())
    assert (meta["format"], meta["offset"], meta["events"]) == (
        STATE_FORMAT,
        model.offset,
        model.events,
    )
    assert meta["clock"] == model.clock
    assert meta["stats"] == model.stats()
    assert meta["shape"] == {
        "model.neighbors": 8,
        "sessions.max_events": 6,
        "model.index_sessions": MODEL.index_sessions,
        "model.knn_per_item": MODEL.knn_per_item,
    }
    used = min(model.session_index.next_serial, MODEL.index_sessions)
    assert shapes["session_index.items"] == (used, SESSIONS.max_events)  # only the used records


def test_series_are_cut_into_pieces(
    built: tuple[Model, Shop], monkeypatch: pytest.MonkeyPatch
) -> None:
    model, _ = built
    monkeypatch.setattr(snapshot, "BATCH", 7)
    arrays = dict(dump_state(model))
    lengths = orjson.loads(arrays["meta"].tobytes())["lengths"]
    for name in ("items.ids", "sessions.ids", "users.ids", "recent_ids"):
        pieces = [orjson.loads(a.tobytes()) for k, a in arrays.items() if k.startswith(name + ".")]
        assert [len(piece) for piece in pieces[:-1]] == [7] * (len(pieces) - 1)
        assert sum(len(piece) for piece in pieces) == lengths[name] > 7
    # A catalog entry weighs more than BATCH: one per piece.
    assert f"catalog.meta.{lengths['catalog.meta'] - 1}" in arrays
    # Profiles of up to 5 items: one per piece, so that a piece holds at most 7 entries.
    assert f"users.profiles.{lengths['users.profiles'] - 1}" in arrays
    restored = load_state(arrays, MODEL, SESSIONS)
    assert state_of(restored) == state_of(model)


def test_pieces_of_big_profiles_are_split(monkeypatch: pytest.MonkeyPatch) -> None:
    sessions = SessionsConfig(max_user_items=30)
    model = Model(ModelConfig(), sessions)
    for user in range(4):
        for item in range(30 if user != 2 else 3):
            model.apply(Interaction("purchase", f"s{user}", T0, f"u{user}", f"i{item}"))
    monkeypatch.setattr(snapshot, "BATCH", 40)  # 4 users a piece, then halved to fit
    arrays = dict(dump_state(model))
    pieces = [orjson.loads(arrays[f"users.profiles.{k}"].tobytes()) for k in range(3)]
    assert "users.profiles.3" not in arrays
    assert [sorted(piece) for piece in pieces] == [["0"], ["1"], ["2", "3"]]
    assert state_of(load_state(arrays, ModelConfig(), sessions)) == state_of(model)


def test_an_event_applied_during_a_dump_is_reported() -> None:
    model = Model(ModelConfig(), SessionsConfig())
    model.apply(Interaction("view", "s", T0, item_id="a"))
    pairs = dump_state(model)
    next(pairs)
    model.apply(Interaction("view", "s", T0, item_id="b"))
    with pytest.raises(RuntimeError, match="while the model was being dumped"):
        list(pairs)


def test_empty_model_round_trips() -> None:
    model = Model(ModelConfig(), SessionsConfig())
    arrays = through_bytes(dump_state(model))
    assert sorted(name for name in arrays if name.endswith(".0")) == [
        "catalog.categories.0",
        "catalog.meta.0",
        "items.ids.0",
        "recent_ids.0",
        "sessions.carts.0",
        "sessions.free.0",
        "sessions.ids.0",
        "sessions.purchased.0",
        "users.free.0",
        "users.ids.0",
        "users.profiles.0",
    ]
    restored = load_state(arrays, ModelConfig(), SessionsConfig())
    assert state_of(restored) == state_of(model)
    assert restored.stats() == {"items": 0, "sessions": 0, "users": 0}
    event = Interaction("add_to_cart", "s", T0, "u", "a", event_id="e")
    assert restored.apply(event) and not restored.apply(event)
    model.apply(event)
    assert state_of(restored) == state_of(model)


@pytest.mark.parametrize(
    ("model_config", "sessions_config", "setting"),
    [
        (ModelConfig(neighbors=9), SessionsConfig(), "model.neighbors"),
        (ModelConfig(), SessionsConfig(max_events=7), "sessions.max_events"),
        (ModelConfig(index_sessions=9), SessionsConfig(), "model.index_sessions"),
        (ModelConfig(knn_per_item=9), SessionsConfig(), "model.knn_per_item"),
    ],
)
def test_shape_defining_settings_must_match(
    model_config: ModelConfig, sessions_config: SessionsConfig, setting: str
) -> None:
    model = Model(ModelConfig(), SessionsConfig())
    model.apply(Interaction("view", "s", T0, item_id="a"))
    with pytest.raises(SnapshotMismatch) as caught:
        load_state(dict(dump_state(model)), model_config, sessions_config)
    assert caught.value.setting == setting
    dumped = {
        "model.neighbors": 50,
        "sessions.max_events": 50,
        "model.index_sessions": 100_000,
        "model.knn_per_item": 100,
    }[setting]
    configured = 7 if setting == "sessions.max_events" else 9
    assert (caught.value.snapshot, caught.value.expected) == (dumped, configured)
    assert setting in str(caught.value) and str(dumped) in str(caught.value)


def test_another_format_version_is_refused() -> None:
    arrays = dict(dump_state(Model(ModelConfig(), SessionsConfig())))
    meta = orjson.loads(arrays["meta"].tobytes())
    meta["format"] = STATE_FORMAT + 1
    arrays["meta"] = np.frombuffer(orjson.dumps(meta), dtype=np.uint8)
    refused = f"format is {STATE_FORMAT + 1} in it, {STATE_FORMAT} here"
    with pytest.raises(SnapshotMismatch, match=refused):
        load_state(arrays, ModelConfig(), SessionsConfig())


def test_missing_or_short_arrays_are_refused(built: tuple[Model, Shop]) -> None:
    model, _ = built
    arrays = dict(dump_state(model))
    for name in ("meta", "similar.weights", "users.profiles.0"):
        broken = {k: v for k, v in arrays.items() if k != name}
        with pytest.raises(SnapshotMismatch, match=re.escape(name)):
            load_state(broken, MODEL, SESSIONS)
    with pytest.raises(SnapshotMismatch, match=r"rows of catalog\.price"):
        load_state({**arrays, "catalog.price": arrays["catalog.price"][:-1]}, MODEL, SESSIONS)
    short = orjson.loads(arrays["sessions.ids.0"].tobytes())[:-1]
    with pytest.raises(SnapshotMismatch, match=r"length of sessions\.ids"):
        load_state(
            {**arrays, "sessions.ids.0": np.frombuffer(orjson.dumps(short), dtype=np.uint8)},
            MODEL,
            SESSIONS,
        )


def test_behaviour_settings_may_differ(built: tuple[Model, Shop]) -> None:
    model, _ = built
    arrays = dict(dump_state(model))
    smaller = SessionsConfig(ttl_s=60.0, max_sessions=40, max_events=6, max_user_items=2)
    restored = load_state(
        arrays, ModelConfig(neighbors=8, dedup_window=10, weight_view=3.0), smaller
    )
    assert list(restored.recent_ids) == list(model.recent_ids)[-10:]
    assert all(len(p) <= 2 for p in restored.users.profiles.values())
    assert restored.stats()["sessions"] <= model.stats()["sessions"]  # shorter ttl
    # Too many sessions for the new bound: new sessions evict them, a batch at a time.
    for i in range(40):
        restored.apply(Interaction("view", f"new{i}", restored.clock, item_id="item0001"))
    assert len(restored.sessions) <= 40


def test_trimmed_profile_keeps_the_heaviest_and_newest() -> None:
    model = Model(ModelConfig(), SessionsConfig(max_user_items=5))
    for item, kind in [("a", "purchase"), ("b", "add_to_cart"), ("c", "add_to_cart"),
                       ("d", "purchase"), ("e", "add_to_cart")]:  # fmt: skip
        model.apply(Interaction(kind, "s", T0, "u", item))
    restored = load_state(dict(dump_state(model)), ModelConfig(), SessionsConfig(max_user_items=3))
    items, weights = restored.users.profile(restored.users.index["u"])
    ids = [restored.items.ids[i] for i in items.tolist()]
    # b and c were the lightest and oldest: the same two that credit would drop first.
    assert (ids, weights.tolist()) == (["a", "d", "e"], [1.0, 1.0, 0.5])


def test_a_new_half_life_continues_from_the_decayed_values(built: tuple[Model, Shop]) -> None:
    model, _ = built
    slower = ModelConfig(neighbors=8, popularity_half_life_s=7200.0, similarity_half_life_s=2 * DAY)
    restored = load_state(dict(dump_state(model)), slower, SESSIONS)
    now = model.clock
    for idx in range(0, len(model.items), 37):
        before = model.popularity.current(idx, now)
        assert restored.popularity.current(idx, now) == pytest.approx(before, rel=1e-12)
        assert restored.popularity.current(idx, now + 7200) == pytest.approx(before / 2, rel=1e-12)
        ids, weights = model.similar.row(idx, now)
        new_ids, new_weights = restored.similar.row(idx, now + 2 * DAY)
        assert new_ids.tolist() == ids.tolist()
        np.testing.assert_allclose(new_weights, weights / 2, rtol=1e-12)
    assert restored.popularity.scale.t_ref == restored.similar.scale.t_ref == now
    assert math.isclose(
        restored.popularity.floor,
        model.popularity.floor
        * math.exp(-model.popularity.scale.rate * (now - model.popularity.scale.t_ref)),
        rel_tol=1e-12,
    )
