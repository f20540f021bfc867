"""The REST API end to end, in embedded mode and against the real RabbitMQ.

Writes go through the event log and come back through the consumer, so every test
here exercises publish → stream → decode → state → REST.
"""

from __future__ import annotations

import gc
import io
import os
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from recsrv.app import build_app
from recsrv.broker import Delivery
from recsrv.broker.memory import MemoryEventLog
from recsrv.config import Config, ModelConfig, StoreConfig
from recsrv.http.api import RUNTIME
from recsrv.scoring.components import COMPONENTS
from tests.conftest import JSON, item_seen, marker, post_events, wait_for_events, wait_until

Client = TestClient[Any, Any]


def browse(session: str, items: list[str], ts: float = 1_700_000_000.0, kind: str = "view"):
    return [
        {"type": kind, "session_id": session, "item_id": item, "ts": ts + i}
        for i, item in enumerate(items)
    ]


async def get_json(client: Client, path: str, status: int = 200, **params: str) -> Any:
    response = await client.get(path, params=params)
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    return await response.json()


async def test_posted_events_change_recommendations(client: Client) -> None:
    before = await get_json(client, "/v1/recommendations", session_id="s-new")
    assert before["items"] == []
    assert before["strategy"] == "popular"
    history = []
    for n in range(5):
        history += browse(f"old-{n}", ["shoe", "sock", "lace"], ts=1_700_000_000 + 100 * n)
    answer = await post_events(client, history)
    assert answer == {"accepted": 15}
    await post_events(
        client, {"type": "view", "session_id": "s-new", "item_id": "shoe", "ts": 1_700_001_000}
    )
    model = await wait_for_events(client, 16)
    recs = await get_json(client, "/v1/recommendations", session_id="s-new", k="2")
    assert recs["strategy"] == "session"
    assert [i["item_id"] for i in recs["items"]] == ["sock", "lace"]
    # Led there by what sessions like this one went on to see.
    assert recs["items"][0]["reason"] in {
        "similar_to:shoe",
        "often_next_after:shoe",
        "similar_sessions",
    }
    assert recs["model"]["events"] == 16
    assert recs["model"]["offset"] == model["offset"] >= 1
    similar = await get_json(client, "/v1/items/shoe/similar", k="1")
    assert [i["item_id"] for i in similar["items"]] == ["sock"]


async def test_catalog_writes_and_item_endpoint(client: Client) -> None:
    response = await client.put(
        "/v1/items/lamp",
        data=orjson.dumps({"title": "Desk lamp", "category": "home", "price": 25.5}),
        headers=JSON,
    )
    assert response.status == 202, await response.text()
    assert await response.json() == {"accepted": 1}
    await post_events(client, browse("s1", ["lamp", "lamp"]))
    await wait_for_events(client, 3)
    item = await get_json(client, "/v1/items/lamp")
    assert item["title"] == "Desk lamp"
    assert item["category"] == "home"
    assert item["price"] == 25.5
    assert item["in_stock"] is True
    assert item["counters"]["view"] == 2
    popular = await get_json(client, "/v1/popular", category="home")
    assert [i["item_id"] for i in popular["items"]] == ["lamp"]
    assert (await get_json(client, "/v1/popular", category="garden"))["items"] == []

    response = await client.delete("/v1/items/lamp")
    assert response.status == 202
    await wait_for_events(client, 4)
    await get_json(client, "/v1/items/lamp", status=404)
    assert (await get_json(client, "/v1/popular"))["items"] == []


async def test_out_of_stock_items_are_not_recommended(client: Client) -> None:
    # Catalog writes over REST are stamped with the current time, and the model's
    # clock is event time: the sessions must live in the same present.
    now = time.time()
    await post_events(
        client, browse("s1", ["a", "b", "c"], now) + browse("s2", ["a", "b", "c"], now)
    )
    response = await client.put("/v1/items/b", data=orjson.dumps({"in_stock": False}), headers=JSON)
    assert response.status == 202
    await post_events(client, browse("s3", ["a"], ts=now + 100))
    await wait_for_events(client, 8)
    recs = await get_json(client, "/v1/recommendations", session_id="s3")
    ids = [i["item_id"] for i in recs["items"]]
    assert "b" not in ids
    # a was seen in the session: listed only because nothing else is left.
    assert ids == ["c", "a"]


async def test_user_history_and_forget(client: Client) -> None:
    await post_events(
        client,
        [
            {
                "type": "purchase",
                "session_id": "old",
                "user_id": "u1",
                "items": [{"item_id": "milk"}, {"item_id": "eggs"}],
                "ts": 1_700_000_000,
            },
            {"type": "view", "session_id": "other", "item_id": "bread", "ts": 1_700_000_001},
        ],
    )
    await wait_for_events(client, 2)
    recs = await get_json(client, "/v1/recommendations", user_id="u1")
    assert recs["strategy"] == "user"
    reasons = {i["item_id"]: i["reason"] for i in recs["items"]}
    assert reasons["milk"] == reasons["eggs"] == "bought_before"
    response = await client.delete("/v1/users/u1")
    assert response.status == 202
    await wait_for_events(client, 3)
    recs = await get_json(client, "/v1/recommendations", user_id="u1")
    assert recs["strategy"] == "popular"
    assert all(i["reason"] == "popular" for i in recs["items"])


async def test_model_reports_the_blend_and_its_prequential_quality(client: Client) -> None:
    before = await get_json(client, "/v1/model")
    assert set(before) == {"weights", "prequential", "model"}
    assert list(before["weights"]) == list(COMPONENTS)
    assert sum(before["weights"].values()) == pytest.approx(1, abs=1e-9)
    assert before["prequential"] == {
        "k": 20,
        "hr": 0.0,
        "mrr": 0.0,
        "recent_hr": 0.0,
        "recent_mrr": 0.0,
        "predictions": 0,
        "every": ModelConfig().blend_every,
    }
    assert before["model"] == {"offset": -1, "events": 0}
    # Ten shoppers walk the same aisle: from each one's second view on, the blend is
    # asked to rank the next item before it learns it.
    history = []
    for n in range(10):
        history += browse(f"s{n}", ["tent", "stove", "mat", "lamp"], ts=1_700_000_000 + 100 * n)
    await post_events(client, history)
    model = await wait_for_events(client, 40)
    after = await get_json(client, "/v1/model")
    assert after["model"] == model
    assert list(after["weights"]) == list(COMPONENTS)
    assert sum(after["weights"].values()) == pytest.approx(1, abs=1e-9)
    quality = after["prequential"]
    assert quality["predictions"] > before["prequential"]["predictions"]
    assert 0 < quality["mrr"] <= quality["hr"] <= 1
    assert 0 < quality["recent_mrr"] <= quality["recent_hr"] <= 1


async def test_invalid_requests_get_clear_errors_and_publish_nothing(client: Client) -> None:
    good = {"type": "view", "session_id": "s", "item_id": "x"}
    bad = {"type": "view", "item_id": "x"}
    response = await client.post("/v1/events", data=orjson.dumps([good, bad]), headers=JSON)
    assert response.status == 400
    body = await response.json()
    assert body["error"] == "invalid_events"
    assert body["details"] == [{"index": 1, "field": "session_id", "reason": "missing"}]
    response = await client.post("/v1/events", data=b"{not json", headers=JSON)
    assert response.status == 400
    assert (await response.json())["error"] == "malformed_body"
    response = await client.post("/v1/events", data=b"\xff\xfe", headers=JSON)
    assert response.status == 400
    response = await client.post(
        "/v1/events", data=orjson.dumps(good), headers={"Content-Type": "application/xml"}
    )
    assert response.status == 415
    response = await client.post("/v1/events", data=orjson.dumps([good] * 1001), headers=JSON)
    assert response.status == 413
    response = await client.post(
        "/v1/events", data=io.BytesIO(b"[" + b" " * (5 << 20) + b"]"), headers=JSON
    )
    assert response.status == 413
    assert (await response.json())["error"] == "payload_too_large"
    # Nothing of the above reached the state: counted once a marker posted last is in.
    await post_events(client, good)
    await post_events(client, marker("marker"))
    await wait_until(lambda: item_seen(client, "marker"), 10, "the marker applied")
    assert (await get_json(client, "/v1/model"))["model"]["events"] == 2


async def test_parameter_and_routing_errors(client: Client) -> None:
    # "²" and "٣" are digits to str.isdigit but not to int(): a clear 400, never a 500.
    for k in ("0", "101", "x", "-1", "²", "٣", "1" * 200):
        body = await get_json(client, "/v1/popular", status=400, k=k)
        assert body["error"] == "invalid_parameter"
        assert body["details"][0]["field"] == "k"
    await get_json(client, "/v1/recommendations", status=400, session_id="s" * 129)
    body = await get_json(client, "/v1/items/nope", status=404)
    assert body["error"] == "item_not_found"
    await get_json(client, "/v1/items/nope/similar", status=404)
    await get_json(client, "/v1/items/nope/bought-together", status=404)
    await get_json(client, "/v1/no-such-path", status=404)
    response = await client.post("/v1/popular")
    assert response.status == 405
    assert (await response.json())["error"] == "method_not_allowed"
    response = await client.put("/v1/items/x", data=b"[1]", headers=JSON)
    assert response.status == 400
    response = await client.put("/v1/items/x", data=orjson.dumps({"price": -1}), headers=JSON)
    assert response.status == 400
    assert (await response.json())["details"][0]["field"] == "item.price"


async def test_operational_endpoints(client: Client) -> None:
    assert (await get_json(client, "/healthz"))["status"] == "ok"
    await post_events(client, browse("s", ["a", "b"]))
    await wait_for_events(client, 2)
    ready = await get_json(client, "/readyz")
    assert ready["status"] == "ready"
    assert ready["lag"] == 0
    assert ready["instance"] == f"{socket.gethostname()}-{os.getpid()}"  # in this process
    document = await get_json(client, "/openapi.json")
    assert document["openapi"].startswith("3.")
    for path in (
        "/v1/recommendations",
        "/v1/items/{item_id}/similar",
        "/v1/items/{item_id}/bought-together",
        "/v1/popular",
        "/v1/items/{item_id}",
        "/v1/users/{user_id}",
        "/v1/events",
        "/v1/model",
        "/healthz",
        "/readyz",
        "/metrics",
    ):
        assert path in document["paths"], path
    response = await client.get("/metrics")
    assert response.status == 200
    text = await response.text()
    assert 'recsrv_events_applied_total{type="view"} 2.0' in text
    assert "recsrv_events_published_total 2.0" in text
    assert f'recsrv_instance_info{{instance="{ready["instance"]}"}} 1.0' in text


async def test_exclude_and_category_narrow_the_recommendations(client: Client) -> None:
    # Catalog writes are stamped with the current time: the sessions live in it too.
    now = time.time()
    shelves = {"kitchen": ["pan", "pot", "lid", "cup"], "garden": ["hoe", "rake"]}
    for category, items in shelves.items():
        for item in items:
            body = orjson.dumps({"title": item, "category": category})
            response = await client.put(f"/v1/items/{item}", data=body, headers=JSON)
            assert response.status == 202, await response.text()
    everything = [*shelves["kitchen"], *shelves["garden"]]
    for n in range(6):
        await post_events(client, browse(f"s{n}", everything[n:] + everything[:n], now + n))
    await post_events(client, browse("me", ["pan"], now + 10))
    await post_events(client, marker("m", now))
    await wait_until(lambda: item_seen(client, "m"), 10, "the marker applied")

    def ids(body: Any) -> list[str]:
        return [item["item_id"] for item in body["items"]]

    everyone = ids(await get_json(client, "/v1/recommendations", session_id="me", k="10"))
    assert {"pot", "lid", "hoe", "rake"} <= set(everyone)
    narrowed = await get_json(
        client, "/v1/recommendations", session_id="me", k="10", exclude="pot,hoe"
    )
    assert ids(narrowed) == [item for item in everyone if item not in {"pot", "hoe"}]
    garden = await get_json(client, "/v1/recommendations", session_id="me", category="garden")
    assert sorted(ids(garden)) == ["hoe", "rake"]
    both = await get_json(
        client, "/v1/recommendations", session_id="me", category="kitchen", exclude="lid"
    )
    assert ids(both) and set(ids(both)) <= {"pan", "pot", "cup"}
    assert (await get_json(client, "/v1/recommendations", session_id="me", category="x"))[
        "items"
    ] == []


async def test_after_reads_a_posted_event_on_every_list_endpoint(client: Client) -> None:
    """after=EVENT_ID: the GET right after the POST already sees the event, with no
    polling; model.after says so, and an id that never comes answers 200 after the
    timeout (server.after_timeout_ms, 500 by default) with model.after false."""
    history = []
    for n in range(4):
        history += browse(f"old-{n}", ["tent", "stove", "mat"], ts=1_700_000_000 + 100 * n)
    await post_events(client, history)
    visit = {**browse("shopper", ["tent"], ts=1_700_001_000)[0], "event_id": "visit-1"}
    await post_events(client, visit)
    recs = await get_json(client, "/v1/recommendations", session_id="shopper", after="visit-1")
    assert recs["model"]["after"] is True
    assert recs["model"]["events"] == 13  # the history came first in the log
    assert recs["strategy"] == "session"
    assert {item["item_id"] for item in recs["items"][:2]} == {"stove", "mat"}
    for path in ("/v1/items/tent/similar", "/v1/items/tent/bought-together", "/v1/popular"):
        body = await get_json(client, path, after="visit-1")
        assert body["model"]["after"] is True, path
    # Without the parameter, no `after` in the model object.
    assert "after" not in (await get_json(client, "/v1/popular"))["model"]
    # A catalog write waited for: the item's list answers 200 instead of 404.
    await post_events(
        client,
        {"type": "catalog.upsert", "item": {"item_id": "lamp"}, "event_id": "lamp-in"},
    )
    lamp = await get_json(client, "/v1/items/lamp/similar", after="lamp-in")
    assert lamp["model"]["after"] is True
    started = time.monotonic()
    never = await get_json(client, "/v1/recommendations", session_id="shopper", after="nope")
    waited = time.monotonic() - started
    assert never["model"]["after"] is False
    assert never["model"]["events"] == 14
    assert 0.49 <= waited < 5.0
    # A bad request is refused at once, without the wait.
    started = time.monotonic()
    await get_json(client, "/v1/recommendations", 400, session_id="shopper", k="0", after="nope")
    assert time.monotonic() - started < 0.4


class DyingLog(MemoryEventLog):
    """An in-process log whose reader fails with a bug (not a broker error) on b"die"."""

    async def consume(self, start_offset: int | None) -> AsyncIterator[Delivery]:
        async for delivery in super().consume(start_offset):
            if delivery.body == b"die":
                raise RuntimeError("a bug in the consumer")
            yield delivery


async def test_readyz_says_so_when_the_state_task_dies(tmp_path: Path) -> None:
    log = DyingLog()
    config = replace(Config(), store=StoreConfig(url=f"file://{tmp_path / 'checkpoints'}"))
    client: Client = TestClient(TestServer(build_app(config, log)))
    await client.start_server()
    try:
        await post_events(client, marker("m"))
        await wait_until(lambda: item_seen(client, "m"), 10, "the marker applied")
        assert (await client.get("/readyz")).status == 200
        await log.publish(b"die", "test")

        async def not_ready() -> bool:
            return (await client.get("/readyz")).status == 503

        await wait_until(not_ready, 10, "/readyz turning 503 after the consumer died")
        body = await (await client.get("/readyz")).json()
        assert body["error"] == "not_ready"
        # The error itself, not the task group that carried it.
        assert body["message"] == "the consumer stopped: RuntimeError('a bug in the consumer')"
        assert (await client.get("/healthz")).status == 200  # alive, but not ready
    finally:
        await client.close()


async def test_start_up_objects_are_out_of_the_collectors_sight_until_shutdown(
    tmp_path: Path,
) -> None:
    # Frozen once the state is restored (a full collection then walks only what came
    # after), and given back at shutdown for a process that goes on.
    config = replace(Config(), store=StoreConfig(url=f"file://{tmp_path / 'checkpoints'}"))
    app = build_app(config, MemoryEventLog())
    client: Client = TestClient(TestServer(app))
    await client.start_server()
    try:
        shop = [
            {"type": kind, "session_id": "s", "user_id": "u", "item_id": item, "ts": ts}
            for kind, item, ts in [
                ("view", "a", 1_700_000_000),
                ("add_to_cart", "a", 1_700_000_001),
                ("add_to_cart", "b", 1_700_000_002),
                ("purchase", "b", 1_700_000_003),
            ]
        ]
        await post_events(client, [*shop, marker("m")])
        await wait_until(lambda: item_seen(client, "m"), 10, "the marker applied")
        assert gc.get_freeze_count() > 10_000  # the modules at least
        # The containers that grow with the state were made at start, so they are
        # frozen with it; what they gained since (ids, carts of numbers) is untracked.
        # A full collection never walks them, however many sessions they hold.
        model = app[RUNTIME].model
        sessions, users = model.sessions, model.users
        assert sessions.carts and sessions.purchased and users.profiles
        grown = [
            sessions.session_ids, sessions.slot_of, sessions.carts, sessions.purchased,
            users.profiles, users.user_ids, model.items.ids, model.catalog.meta,
        ]  # fmt: skip
        walked = {id(obj) for obj in gc.get_objects()}
        assert not [obj for obj in grown if id(obj) in walked]
        entries = [*sessions.carts.values(), *sessions.purchased.values()]
        assert not any(gc.is_tracked(entry) for entry in entries)
    finally:
        await client.close()
    assert gc.get_freeze_count() == 0
