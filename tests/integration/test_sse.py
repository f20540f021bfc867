"""Live streams over real HTTP: updates in order, reconnects, slow clients, shutdown."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import aiohttp
import orjson
from aiohttp.test_utils import TestClient

from recsrv.config import AuthConfig, ServerConfig
from recsrv.http.storefront import SSE_HUB
from tests.conftest import JSON, ServerFactory, next_message, post_events, wait_for_events

Client = TestClient[Any, Any]
TS = 1_700_000_000


def history(count: int = 10) -> list[dict[str, Any]]:
    """Shoppers who viewed a then b (and c), so b follows a."""
    events = []
    for n in range(count):
        for i, item in enumerate(("a", "b", "c")):
            events.append(
                {"type": "view", "session_id": f"h{n}", "item_id": item, "ts": TS + 10 * n + i}
            )
    for n in range(count // 2):
        events.append({"type": "view", "session_id": f"g{n}", "item_id": "x", "ts": TS + n})
        events.append({"type": "view", "session_id": f"g{n}", "item_id": "y", "ts": TS + n})
    return events


def view(session: str, item: str, n: int = 0) -> dict[str, Any]:
    return {"type": "view", "session_id": session, "item_id": item, "ts": TS + 1000 + n}


async def open_stream(client: Client, session: str, **headers: str) -> aiohttp.ClientResponse:
    response = await client.get(f"/v1/sessions/{session}/stream", headers=headers)
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"].startswith("text/event-stream")
    return response


async def test_current_list_at_once_then_each_change_in_order(client: Client) -> None:
    await post_events(client, history())
    stream = await open_stream(client, "live")
    first = await next_message(stream)
    assert first.event == "recommendations"
    assert first.data["strategy"] == "popular"
    assert set(first.data) == {"items", "strategy", "model"}

    await post_events(client, view("live", "a"))
    second = await next_message(stream)
    assert second.data["strategy"] == "session"
    top = second.data["items"][0]
    assert (top["item_id"], top["reason"]) in {
        ("b", "similar_to:a"),
        ("b", "often_next_after:a"),
        ("b", "similar_sessions"),
    }
    await asyncio.sleep(0.1)
    await post_events(client, view("live", "x", 1))
    third = await next_message(stream)
    assert third.data["items"][0]["item_id"] == "y"
    assert int(first.id or 0) < int(second.id or 0) < int(third.id or 0)
    assert third.data["model"]["events"] == len(history()) + 2
    # The same answer as the REST endpoint.
    rest = await (await client.get("/v1/recommendations", params={"session_id": "live"})).json()
    assert rest == third.data
    stream.close()


async def test_a_burst_is_coalesced_and_other_sessions_stay_quiet(
    make_server: ServerFactory,
) -> None:
    client = await make_server(server=ServerConfig(sse_coalesce_s=0.05))
    await post_events(client, history())
    mine = await open_stream(client, "burst")
    other = await open_stream(client, "quiet")
    await next_message(mine)
    await next_message(other)
    burst = [view("burst", item, n) for n, item in enumerate("abcabcxyxy")]
    for event in burst:
        await post_events(client, event)
    received = [await next_message(mine)]
    try:
        while True:
            received.append(await next_message(mine, within_s=0.5))
    except TimeoutError:
        pass
    assert 1 <= len(received) <= 4  # ten events, a few lists
    assert received[-1].data["model"]["events"] == len(history()) + len(burst)
    try:
        message = await next_message(other, within_s=0.3)
        raise AssertionError(f"a quiet session got {message}")
    except TimeoutError:
        pass


async def test_reconnect_with_last_event_id_gets_the_current_list(client: Client) -> None:
    await post_events(client, history())
    stream = await open_stream(client, "again")
    first = await next_message(stream)
    stream.close()
    await post_events(client, view("again", "a"))
    await wait_for_events(client, len(history()) + 1)  # the list has changed
    again = await open_stream(client, "again", **{"Last-Event-ID": str(first.id)})
    current = await next_message(again, within_s=1)
    assert current.data["strategy"] == "session"
    assert current.data["items"][0]["item_id"] == "b"
    assert int(current.id or 0) > int(first.id or 0)
    again.close()


async def test_a_client_that_never_reads_does_not_delay_others(
    make_server: ServerFactory,
) -> None:
    client = await make_server(server=ServerConfig(sse_send_timeout_s=1.0))
    await post_events(client, history())
    # A raw socket that asks for a stream with big lists, then never reads.
    host, port = client.server.host, client.server.port
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect((host, port))
    stalled.sendall(b"GET /v1/sessions/stalled/stream?k=100 HTTP/1.1\r\nHost: x\r\n\r\n")
    fast = await open_stream(client, "fast")
    await next_message(fast)
    hub = client.server.app[SSE_HUB]
    for _ in range(100):
        if hub.count == 2:
            break
        await asyncio.sleep(0.02)
    assert hub.count == 2
    delays = []
    for n in range(30):
        # Many new items keep changing the stalled session's long list.
        await post_events(client, [view("stalled", f"n{n}-{i}", n) for i in range(50)])
        await post_events(client, view("stalled", "a", n))
        started = time.monotonic()
        await post_events(client, view("fast", "a" if n % 2 else "x", n))
        await next_message(fast, within_s=2)
        delays.append(time.monotonic() - started)
    assert max(delays) < 0.5, delays
    # The stalled client is dropped once its sends time out; the fast one stays.
    deadline = time.monotonic() + 10
    while hub.count > 1 and time.monotonic() < deadline:
        await post_events(client, view("stalled", "x", 99))
        await asyncio.sleep(0.3)
    assert hub.count == 1
    stalled.close()
    fast.close()


async def test_shutdown_ends_streams_promptly(make_server: ServerFactory) -> None:
    client = await make_server(server=ServerConfig(shutdown_timeout_s=30))
    stream = await open_stream(client, "s")
    await next_message(stream)
    started = time.monotonic()
    closing = asyncio.create_task(client.server.close())
    try:
        while True:
            await next_message(stream, within_s=5)
    except (EOFError, aiohttp.ClientPayloadError):
        pass
    await closing
    assert time.monotonic() - started < 5  # not the 30 s grace period


async def test_stream_limits_per_session_and_parameters(make_server: ServerFactory) -> None:
    client = await make_server(server=ServerConfig(sse_max_per_session=2))
    first = await open_stream(client, "s")
    second = await open_stream(client, "s")
    response = await client.get("/v1/sessions/s/stream")
    assert response.status == 429
    assert (await response.json())["error"] == "too_many_streams"
    response = await client.get("/v1/sessions/s/stream", params={"k": "0"})
    assert response.status == 400
    first.close()
    second.close()


async def test_cors_only_for_configured_origins(make_server: ServerFactory) -> None:
    client = await make_server(auth=AuthConfig(cors_origins=("https://shop.example",)))
    preflight = {
        "Origin": "https://shop.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    response = await client.options("/v1/events", headers=preflight)
    assert response.status == 204
    assert response.headers["Access-Control-Allow-Origin"] == "https://shop.example"
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    evil = {**preflight, "Origin": "https://evil.example"}
    response = await client.options("/v1/events", headers=evil)
    assert "Access-Control-Allow-Origin" not in response.headers
    response = await client.post(
        "/v1/events",
        data=orjson.dumps(view("s", "a")),
        headers={**JSON, "Origin": "https://shop.example"},
    )
    assert response.status == 202
    assert response.headers["Access-Control-Allow-Origin"] == "https://shop.example"
    stream = await open_stream(client, "s", Origin="https://shop.example")
    assert stream.headers["Access-Control-Allow-Origin"] == "https://shop.example"
    stream.close()
    stream = await open_stream(client, "s", Origin="https://evil.example")
    assert "Access-Control-Allow-Origin" not in stream.headers
    stream.close()


async def test_catalog_delete_and_forget_push_new_lists(client: Client) -> None:
    await post_events(client, history())
    bought = {"type": "purchase", "session_id": "buyer", "user_id": "u1", "item_id": "x"}
    await post_events(client, {**bought, "ts": TS + 2000})
    await wait_for_events(client, len(history()) + 1)
    stream = await open_stream(client, "live")
    await next_message(stream)
    await post_events(client, view("live", "a"))
    listed = await next_message(stream)
    assert listed.data["items"][0]["item_id"] == "b"
    # Out of stock: pushed without it, though the session did nothing.
    response = await client.put("/v1/items/b", data=orjson.dumps({"in_stock": False}), headers=JSON)
    assert response.status == 202
    restocked = await next_message(stream)
    assert "b" not in [item["item_id"] for item in restocked.data["items"]]
    assert "c" in [item["item_id"] for item in restocked.data["items"]]
    # Deleted: pushed without it.
    assert (await client.delete("/v1/items/c")).status == 202
    deleted = await next_message(stream)
    assert "c" not in [item["item_id"] for item in deleted.data["items"]]
    stream.close()
    # Forgotten: a stream that asked for the user's list gets one without the user.
    mine = await client.get("/v1/sessions/new/stream", params={"user_id": "u1"})
    assert mine.status == 200
    before = await next_message(mine)
    assert before.data["strategy"] != "popular"
    assert (await client.delete("/v1/users/u1")).status == 202
    after = await next_message(mine)
    assert after.data["strategy"] == "popular"
    mine.close()


async def test_category_and_user_id_shape_the_streamed_list(client: Client) -> None:
    for item, category in (("a", "one"), ("b", "one"), ("x", "two"), ("y", "two")):
        body = orjson.dumps({"title": item, "category": category})
        assert (await client.put(f"/v1/items/{item}", data=body, headers=JSON)).status == 202
    now = time.time()
    events = [{**event, "ts": now} for event in history()]
    bought = {"type": "purchase", "session_id": "buyer", "user_id": "u1", "item_id": "x"}
    await post_events(client, [*events, {**bought, "ts": now}])
    await wait_for_events(client, len(events) + 5)
    plain = await (await client.get("/v1/recommendations", params={"session_id": "me"})).json()
    for params in ({"category": "two"}, {"user_id": "u1"}):
        stream = await client.get("/v1/sessions/me/stream", params=params)
        assert stream.status == 200, await stream.text()
        streamed = await next_message(stream)
        stream.close()
        query = {"session_id": "me", **params}
        rest = await (await client.get("/v1/recommendations", params=query)).json()
        assert streamed.data == rest, params
        assert streamed.data["items"] != plain["items"], params  # the parameter mattered
        if "category" in params:
            assert sorted(i["item_id"] for i in streamed.data["items"]) == ["x", "y"]


async def test_heartbeats_are_ping_comments(make_server: ServerFactory) -> None:
    client = await make_server(server=ServerConfig(sse_heartbeat_s=0.2))
    stream = await open_stream(client, "s")
    await next_message(stream)
    async with asyncio.timeout(3):
        while (line := await stream.content.readline()) in (b"\r\n", b"\n"):
            pass
    assert line.rstrip() == b": ping"
    stream.close()


async def test_a_stream_asked_for_during_shutdown_gets_503(make_server: ServerFactory) -> None:
    client = await make_server()
    await client.server.app[SSE_HUB].close()  # what the server's shutdown does first
    response = await client.get("/v1/sessions/s/stream")
    assert response.status == 503
    assert (await response.json())["error"] == "shutting_down"
