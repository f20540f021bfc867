"""GET /metrics after known traffic, against the real RabbitMQ: exact counts."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from recsrv.config import BrokerConfig, ServerConfig, StoreConfig
from recsrv.scoring.components import COMPONENTS
from tests.conftest import ServerFactory, broker_env, free_port, post_events, spawn_recsrv

Client = TestClient[Any, Any]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
STREAM_ROUTE = "/v1/sessions/{session_id}/stream"


async def scrape(client: Client | aiohttp.ClientSession) -> Samples:
    response = await client.get("/metrics")
    assert response.status == 200
    return parse(await response.text())


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name, frozenset(sample.labels.items())] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def scrape_until(
    client: Client, done: Callable[[Samples], bool], what: str, within_s: float = 20.0
) -> Samples:
    deadline = time.monotonic() + within_s
    while True:
        samples = await scrape(client)
        if done(samples):
            return samples
        if time.monotonic() > deadline:
            raise AssertionError(f"never saw {what}")
        await asyncio.sleep(0.1)


def view(session: str, item: str, **extra: Any) -> dict[str, Any]:
    return {"type": "view", "session_id": session, "item_id": item, "ts": time.time(), **extra}


def requests(samples: Samples, route: str, method: str, status: int) -> float | None:
    return value(
        samples, "recsrv_http_requests_total", route=route, method=method, status=str(status)
    )


@pytest.mark.timeout(90)
async def test_metrics_count_known_traffic(
    make_server: ServerFactory, amqp_config: BrokerConfig, amqp_publish: Any, tmp_path: Path
) -> None:
    client = await make_server(
        broker=amqp_config,
        # A short heartbeat, so a stream the client left ends quickly; no periodic
        # checkpoint, so the only one is the one asked for.
        server=ServerConfig(sse_heartbeat_s=0.2),
        store=StoreConfig(url=f"file://{tmp_path / 'checkpoints'}", checkpoint_interval_s=3600),
    )
    assert value(await scrape(client), "recsrv_checkpoint_age_seconds") is None

    # Over AMQP (no timestamp property): 5 views and 2 invalid elements, a malformed
    # body, a cart and a purchase, and a view already applied (same event_id).
    now = time.time()
    await amqp_publish(
        [
            view("s1", "a", event_id="e1"),
            view("s1", "b"),
            view("s2", "a"),
            view("s2", "c"),
            view("s1", "d"),
            {"type": "teleport", "session_id": "s1"},
            {"type": "view", "session_id": "s2"},
        ]
    )
    await amqp_publish(b"\xff not json")
    await amqp_publish(
        [
            {"type": "add_to_cart", "session_id": "s3", "user_id": "u1", "item_id": "e", "ts": now},
            {"type": "purchase", "session_id": "s3", "user_id": "u1", "item_id": "e", "ts": now},
        ]
    )
    await amqp_publish(view("s1", "a", event_id="e1"))
    # Over REST (recsrv stamps the AMQP timestamp): 2 messages, 2 views and a cart.
    await post_events(
        client,
        [
            view("s4", "f", user_id="u2"),
            {"type": "add_to_cart", "session_id": "s4", "user_id": "u2", "item_id": "f"},
        ],
    )
    await post_events(client, view("s4", "a", user_id="u2"))
    samples = await scrape_until(
        client, lambda s: value(s, "recsrv_messages_consumed_total") == 6, "6 messages applied"
    )

    # Known HTTP requests: 5 lists, 2 unknown items, 1 unknown path.
    for _ in range(5):
        response = await client.get("/v1/recommendations", params={"session_id": "s1"})
        assert response.status == 200
    for item in ("nope", "nada"):
        assert (await client.get(f"/v1/items/{item}")).status == 404
    assert (await client.get("/no/such/path")).status == 404
    echoed = await client.get("/healthz", headers={"X-Request-Id": "test-request-1"})
    assert echoed.headers["X-Request-Id"] == "test-request-1"

    # One live subscriber.
    stream = await client.get("/v1/sessions/s1/stream", headers={"X-Request-Id": "sse-1"})
    assert stream.status == 200
    assert stream.headers["X-Request-Id"] == "sse-1"
    assert (await stream.content.readline()).startswith(b"id:")  # the first list is sent

    # The event loop (shared with this test) blocked for 0.6 s: a probe timer (every
    # 0.25 s) falls due early in the block and fires more than 0.25 s late.
    time.sleep(0.6)  # noqa: ASYNC251 - blocking on purpose
    checkpoint = await client.post("/v1/admin/checkpoint")
    assert checkpoint.status == 200, await checkpoint.text()
    created_at = (await checkpoint.json())["created_at"]

    # The stream's end is sampled every few seconds: wait for a sample after the last
    # message, then the lag behind it must be 0.
    offset = (await (await client.get("/v1/popular")).json())["model"]["offset"]
    samples = await scrape_until(
        client, lambda s: value(s, "recsrv_stream_end_offset") == offset, "the end sampled"
    )
    assert value(samples, "recsrv_model_offset") == offset
    assert value(samples, "recsrv_consumer_lag_messages") == 0

    # Events: received by type before de-duplication, applied, invalid by kind.
    assert value(samples, "recsrv_events_received_total", type="view") == 8
    assert value(samples, "recsrv_events_applied_total", type="view") == 7
    assert value(samples, "recsrv_events_applied_total", type="add_to_cart") == 2
    assert value(samples, "recsrv_events_applied_total", type="purchase") == 1
    assert value(samples, "recsrv_events_duplicate_total") == 1
    assert value(samples, "recsrv_events_invalid_total", code="invalid") == 2
    assert value(samples, "recsrv_events_invalid_total", code="malformed") == 1
    assert value(samples, "recsrv_events_published_total") == 3
    assert value(samples, "recsrv_model_events") == 10
    assert value(samples, "recsrv_apply_duration_seconds_count") == 6
    # Only the 2 REST messages carry a timestamp; whole seconds, so under 2 s.
    assert value(samples, "recsrv_consumer_lag_seconds_count") == 2
    assert value(samples, "recsrv_consumer_lag_seconds_bucket", le="2.0") == 2

    # State: sessions s1-s4, users u1 and u2, items a-f; one subscriber.
    assert value(samples, "recsrv_sessions") == 4
    assert value(samples, "recsrv_users") == 2
    assert value(samples, "recsrv_items") == 6
    assert value(samples, "recsrv_sse_subscribers") == 1

    # HTTP: by route template and status, never by a path as requested (one time series
    # per item would grow without bound).
    routes = {dict(labels).get("route") for _, labels in samples} - {None}
    requested = {"/v1/items/nope", "/v1/items/nada", "/no/such/path", "/v1/sessions/s1/stream"}
    assert not routes & requested, routes
    assert requests(samples, "/v1/recommendations", "GET", 200) == 5
    assert requests(samples, "/v1/items/{item_id}", "GET", 404) == 2
    assert requests(samples, "unmatched", "GET", 404) == 1
    assert requests(samples, "/v1/events", "POST", 202) == 2
    assert requests(samples, "/healthz", "GET", 200) == 1
    assert requests(samples, "/v1/admin/checkpoint", "POST", 200) == 1
    durations = "recsrv_http_request_duration_seconds_count"
    assert value(samples, durations, route="/v1/recommendations", method="GET") == 5
    assert value(samples, durations, route="/v1/items/{item_id}", method="GET") == 2

    # Event-loop lag: sampled, and the block is in a bucket above 0.25 s.
    loop_lag = value(samples, "recsrv_event_loop_lag_seconds_count") or 0
    assert loop_lag >= 1
    assert loop_lag - (value(samples, "recsrv_event_loop_lag_seconds_bucket", le="0.25") or 0) >= 1

    # Checkpoint: age since the one just written; process memory.
    age = value(samples, "recsrv_checkpoint_age_seconds")
    assert age is not None and 0 <= age < 30
    assert value(samples, "recsrv_checkpoint_last_success_timestamp_seconds") == pytest.approx(
        created_at
    )
    assert (value(samples, "recsrv_checkpoint_size_bytes") or 0) > 0
    assert (value(samples, "recsrv_process_resident_memory_bytes") or 0) > 10_000_000

    # The subscriber leaves: the stream is counted once, and not as a latency.
    stream.close()
    samples = await scrape_until(
        client,
        lambda s: requests(s, STREAM_ROUTE, "GET", 200) == 1,
        "the stream counted",
        within_s=10,
    )
    assert value(samples, "recsrv_sse_subscribers") == 0
    assert value(samples, durations, route=STREAM_ROUTE, method="GET") is None


async def test_metrics_body_is_prometheus_text(make_server: ServerFactory) -> None:
    client = await make_server()
    response = await client.get("/metrics")
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    names = {family.name for family in text_string_to_metric_families(await response.text())}
    # Every family of recsrv's own carries the prefix and, where it has one, its unit.
    assert names >= {
        "recsrv_events_applied",
        "recsrv_events_received",
        "recsrv_events_invalid",
        "recsrv_apply_duration_seconds",
        "recsrv_consumer_lag_seconds",
        "recsrv_event_loop_lag_seconds",
        "recsrv_http_requests",
        "recsrv_http_request_duration_seconds",
        "recsrv_sse_subscribers",
        "recsrv_sessions",
        "recsrv_users",
        "recsrv_items",
        "recsrv_process_resident_memory_bytes",
        "recsrv_blend_weight",
        "recsrv_prequential_hr",
        "recsrv_prequential_mrr",
        "recsrv_prequential_predictions",
    }
    assert all(name.startswith("recsrv_") for name in names)


# ---- the blend and its prequential quality, in a real `recsrv run` -----------------

SECRET = "sk_metrics_3c7a9e1f5b2d"
PUBLIC = "pk_metrics_6e0b4d8a2f1c"


def aisle_sessions(first: int, count: int) -> list[dict[str, Any]]:
    """Shoppers who mostly walk one aisle in order, some skipping a shelf: from each
    one's second view on, the blend ranks the next item before it learns it."""
    aisle = ["tent", "stove", "mat", "lamp", "pan", "mug", "rope"]
    events = []
    for n in range(first, first + count):
        walk = aisle[n % 3 :: 1 + n % 2][:4]
        ts = 1_700_000_000 + 100 * n
        events += [
            {"type": "view", "session_id": f"s{n}", "item_id": item, "ts": ts + position}
            for position, item in enumerate(walk)
        ]
    return events


async def wait_listening(http: aiohttp.ClientSession, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while True:
        assert server.poll() is None, "recsrv exited"
        try:
            async with http.get("/readyz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        assert time.monotonic() < deadline, "recsrv never became ready"
        await asyncio.sleep(0.1)


async def blend_report(http: aiohttp.ClientSession, events: int) -> dict[str, Any]:
    """GET /v1/model once the model has applied `events` events."""
    deadline = time.monotonic() + 20
    while True:
        async with http.get("/v1/model", headers={"Authorization": f"Bearer {SECRET}"}) as response:
            assert response.status == 200, await response.text()
            report: dict[str, Any] = await response.json()
        if report["model"]["events"] >= events:
            return report
        assert time.monotonic() < deadline, f"{events} events never applied: {report}"
        await asyncio.sleep(0.05)


def blend_figures(samples: Samples) -> dict[str, Any]:
    """The blend's figures on /metrics, in the shape of GET /v1/model."""
    quality = {
        f"{prefix}{measure}": value(samples, f"recsrv_prequential_{measure}", k="20", window=window)
        for measure in ("hr", "mrr")
        for prefix, window in (("", "all"), ("recent_", "recent"))
    }
    return {
        "weights": {c: value(samples, "recsrv_blend_weight", component=c) for c in COMPONENTS},
        "prequential": {
            **quality,
            "predictions": value(samples, "recsrv_prequential_predictions_total"),
        },
        "model": {
            "offset": value(samples, "recsrv_model_offset"),
            "events": value(samples, "recsrv_model_events"),
        },
    }


def without_k_and_every(report: dict[str, Any]) -> dict[str, Any]:
    quality = {
        name: figure for name, figure in report["prequential"].items() if name not in ("k", "every")
    }
    return {**report, "prequential": quality}


@pytest.mark.timeout(90)
async def test_blend_figures_on_metrics_are_those_of_v1_model(
    tmp_path: Path, amqp_config: BrokerConfig, amqp_publish: Any
) -> None:
    port = free_port()
    env = {
        **broker_env(amqp_config),
        "RECSRV_AUTH__SECRET_KEYS": SECRET,
        "RECSRV_AUTH__PUBLIC_KEYS": PUBLIC,
    }
    server, log = spawn_recsrv(tmp_path, port, env)
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
            try:
                await _blend_figures_agree(http, server, amqp_publish)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{log.read_text()}") from None
    finally:
        server.terminate()
        server.wait(timeout=20)


async def _blend_figures_agree(
    http: aiohttp.ClientSession, server: subprocess.Popen[bytes], publish: Any
) -> None:
    await wait_listening(http, server)
    # A secret route: no key is 401, a public key 403.
    async with http.get("/v1/model") as response:
        assert response.status == 401
        assert (await response.json())["error"] == "unauthorized"
    async with http.get("/v1/model", headers={"Authorization": f"Bearer {PUBLIC}"}) as response:
        assert response.status == 403
        assert (await response.json())["error"] == "forbidden"

    start = await blend_report(http, 0)
    assert start["prequential"]["predictions"] == 0
    assert blend_figures(await scrape(http)) == without_k_and_every(start)

    # Over the stream, in two rounds: the measured predictions grow with each.
    seen = start
    for first, count in ((0, 12), (12, 30)):
        events = aisle_sessions(first, count)
        for session in range(0, len(events), 4):
            await publish(events[session : session + 4])
        report = await blend_report(http, seen["model"]["events"] + len(events))
        assert list(report["weights"]) == list(COMPONENTS)
        assert abs(sum(report["weights"].values()) - 1) <= 1e-9
        assert report["prequential"]["k"] == 20
        assert report["prequential"]["predictions"] > seen["prequential"]["predictions"]
        assert 0 <= report["prequential"]["mrr"] <= report["prequential"]["hr"] <= 1
        # Nothing else is published: the scrape sees the state /v1/model saw.
        assert blend_figures(await scrape(http)) == without_k_and_every(report)
        seen = report
