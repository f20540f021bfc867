"""Metrics without a broker: histograms, rendering, the HTTP middleware and the probes."""

from __future__ import annotations

import asyncio
import random
import re
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from recsrv.broker.memory import MemoryEventLog
from recsrv.config import Config
from recsrv.errors import BrokerError
from recsrv.http.observe import (
    REQUEST_ID_HEADER,
    _on_prepare,
    observe_middleware,
    probe_loop_lag,
    probe_stream_end,
    request_id_from,
    sample_stream_end,
)
from recsrv.metrics import Buckets, Metrics
from recsrv.runtime import Runtime
from recsrv.scoring.components import COMPONENTS
from recsrv.store.files import FileStore

# A process prefix and a counter, in hex.
GENERATED_ID = re.compile(r"[0-9a-f]{12}-[0-9a-f]+")
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples_of(metrics: Metrics) -> Samples:
    found: Samples = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            found[sample.name, frozenset(sample.labels.items())] = sample.value
    return found


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def test_buckets_are_inclusive_upper_bounds_and_cumulative() -> None:
    buckets = Buckets((0.1, 1.0, 0.5))
    for observation in (0.05, 0.1, 0.3, 1.0, 7.0):
        buckets.observe(observation)
    assert buckets.cumulative() == [("0.1", 2), ("0.5", 3), ("1.0", 4), ("+Inf", 5)]
    assert buckets.count == 5
    assert buckets.sum == 0.05 + 0.1 + 0.3 + 1.0 + 7.0


def test_plain_numbers_render_as_prometheus_families() -> None:
    metrics = Metrics()
    metrics.consumer.messages = 4
    metrics.consumer.applied.update(view=7, purchase=1)
    metrics.consumer.invalid["malformed"] = 2
    metrics.consumer.apply_seconds.observe(0.0003)
    metrics.http.finished("/v1/items/{item_id}", "GET", 404, 0.002)
    metrics.http.finished("/v1/items/{item_id}", "GET", 404, 0.004)
    metrics.http.finished("unmatched", "BREW", 405, 0.001)
    metrics.http.finished("/v1/sessions/{session_id}/stream", "GET", 200, None)
    samples = samples_of(metrics)
    assert value(samples, "recsrv_messages_consumed_total") == 4
    assert value(samples, "recsrv_events_applied_total", type="view") == 7
    assert value(samples, "recsrv_events_applied_total", type="purchase") == 1
    assert value(samples, "recsrv_events_invalid_total", code="malformed") == 2
    assert value(samples, "recsrv_apply_duration_seconds_bucket", le="0.00025") == 0
    assert value(samples, "recsrv_apply_duration_seconds_bucket", le="0.0005") == 1
    route = "/v1/items/{item_id}"
    counted = value(samples, "recsrv_http_requests_total", route=route, method="GET", status="404")
    assert counted == 2
    assert (
        value(samples, "recsrv_http_request_duration_seconds_count", route=route, method="GET") == 2
    )
    assert value(
        samples, "recsrv_http_request_duration_seconds_sum", route=route, method="GET"
    ) == (0.002 + 0.004)
    # A method string is the client's choice: anything unusual shares one label value.
    labels = {"route": "unmatched", "method": "other", "status": "405"}
    assert value(samples, "recsrv_http_requests_total", **labels) == 1
    stream = "/v1/sessions/{session_id}/stream"
    assert value(samples, "recsrv_http_requests_total", route=stream, method="GET", status="200")
    assert not [key for key in samples if ("route", stream) in key[1] and "duration" in key[0]]
    # No model or hub watched: those figures are absent rather than invented.
    assert value(samples, "recsrv_sessions") is None
    assert value(samples, "recsrv_prequential_predictions_total") is None
    assert value(samples, "recsrv_sse_subscribers") is None
    assert value(samples, "recsrv_checkpoint_age_seconds") is None
    assert (value(samples, "recsrv_process_resident_memory_bytes") or 0) > 1_000_000


def test_checkpoint_age_counts_from_the_newest_checkpoint_known() -> None:
    metrics = Metrics()
    metrics.checkpoint_restored(time.time() - 100)
    age = value(samples_of(metrics), "recsrv_checkpoint_age_seconds")
    assert age is not None and 100 <= age < 110
    metrics.checkpoint_written(size=10, seconds=0.5, created_at=time.time() - 3)
    samples = samples_of(metrics)
    age = value(samples, "recsrv_checkpoint_age_seconds")
    assert age is not None and 3 <= age < 13
    assert value(samples, "recsrv_checkpoint_size_bytes") == 10


async def test_lag_in_messages_is_the_sampled_end_minus_the_model_offset(tmp_path: Path) -> None:
    log = MemoryEventLog()
    runtime = Runtime.build(Config(), log, FileStore(str(tmp_path)))
    for n in range(4):
        body = orjson.dumps({"type": "view", "session_id": "s", "item_id": f"i{n}"})
        await log.publish(body, "x")
    await sample_stream_end(runtime)
    samples = samples_of(runtime.metrics)
    assert value(samples, "recsrv_stream_end_offset") == 3
    assert value(samples, "recsrv_consumer_lag_messages") == 4  # nothing applied: offset -1
    await runtime.consumer.apply(log.messages[0])
    await runtime.consumer.apply(log.messages[1])
    samples = samples_of(runtime.metrics)
    assert value(samples, "recsrv_consumer_lag_messages") == 2
    assert value(samples, "recsrv_model_offset") == 1
    assert value(samples, "recsrv_sessions") == 1
    assert value(samples, "recsrv_items") == 2


def browsing_sessions(sessions: int, seed: int = 3) -> list[bytes]:
    """One message per session: five views that mostly step through a ring of 40 items,
    with jumps, so that the components disagree and the blend has something to learn."""
    rng = random.Random(seed)
    messages = []
    for n in range(sessions):
        start = rng.randrange(40)
        items = [f"i{(start + step * rng.choice((1, 1, 2, 7))) % 40}" for step in range(5)]
        ts = 1_700_000_000 + 100 * n
        views = [
            {"type": "view", "session_id": f"s{n}", "item_id": item, "ts": ts + position}
            for position, item in enumerate(items)
        ]
        messages.append(orjson.dumps(views))
    return messages


def blend_samples(samples: Samples) -> dict[str, Any]:
    """The blend's figures on /metrics, in the shape of Model.blend_report."""
    return {
        "weights": {c: value(samples, "recsrv_blend_weight", component=c) for c in COMPONENTS},
        **{
            f"{prefix}{measure}": value(
                samples, f"recsrv_prequential_{measure}", k="20", window=window
            )
            for measure in ("hr", "mrr")
            for prefix, window in (("", "all"), ("recent_", "recent"))
        },
        "predictions": value(samples, "recsrv_prequential_predictions_total"),
    }


async def test_blend_weights_and_prequential_quality_are_read_at_scrape(tmp_path: Path) -> None:
    log = MemoryEventLog()
    runtime = Runtime.build(Config(), log, FileStore(str(tmp_path)))
    before = blend_samples(samples_of(runtime.metrics))
    report = runtime.model.blend_report()
    del report["every"]
    assert before == report
    assert before["predictions"] == 0
    for body in browsing_sessions(30):
        await log.publish(body, "view")
    for message in log.messages:
        await runtime.consumer.apply(message)
    report = runtime.model.blend_report()
    del report["every"]
    # Enough measured events for the blend to have moved off its prior.
    assert report["predictions"] > 64
    assert report["weights"] != before["weights"]
    assert 0 < report["hr"] < 1 and 0 < report["mrr"] < report["hr"]
    after = blend_samples(samples_of(runtime.metrics))
    assert after == report
    assert sum(after["weights"].values()) == pytest.approx(1, abs=1e-9)
    # Past about RECENT measured events the two windows part: each has its own label.
    quality = runtime.model.prequential
    quality.predictions, quality.hits, quality.reciprocal_sum = 4000, 2000, 600.0
    quality.recent_hr, quality.recent_mrr = 0.7, 0.25
    samples = samples_of(runtime.metrics)
    assert value(samples, "recsrv_prequential_hr", k="20", window="all") == 0.5
    assert value(samples, "recsrv_prequential_hr", k="20", window="recent") == 0.7
    assert value(samples, "recsrv_prequential_mrr", k="20", window="all") == 0.15
    assert value(samples, "recsrv_prequential_mrr", k="20", window="recent") == 0.25
    assert value(samples, "recsrv_prequential_predictions_total") == 4000
    # The scrape follows a model swapped in by a restore.
    fresh = Runtime.build(Config(), MemoryEventLog(), FileStore(str(tmp_path))).model
    runtime.replace_model(fresh)
    assert value(samples_of(runtime.metrics), "recsrv_prequential_predictions_total") == 0


@pytest.mark.parametrize("error", [BrokerError("down"), RuntimeError("a bug")])
async def test_lag_is_left_out_while_the_end_cannot_be_read(
    tmp_path: Path, error: Exception
) -> None:
    class Unreachable(MemoryEventLog):
        async def end_offset(self) -> int:
            raise error

    runtime = Runtime.build(Config(), Unreachable(), FileStore(str(tmp_path)))
    runtime.metrics.stream_end = 10
    await sample_stream_end(runtime)
    samples = samples_of(runtime.metrics)
    assert value(samples, "recsrv_consumer_lag_messages") is None
    assert value(samples, "recsrv_stream_end_offset") is None


async def test_loop_lag_probe_sees_a_blocked_loop() -> None:
    metrics = Metrics()
    task = asyncio.create_task(probe_loop_lag(metrics, interval_s=0.01))
    await asyncio.sleep(0)  # the probe asks for its first timer
    time.sleep(0.2)  # noqa: ASYNC251 - blocks the loop on purpose: the timer fires late
    await asyncio.sleep(0.05)
    task.cancel()
    buckets = metrics.loop_lag_seconds
    late = buckets.count - dict(buckets.cumulative())["0.1"]
    assert late >= 1, buckets.cumulative()
    assert buckets.count >= 2


def test_request_ids_from_callers_are_kept_only_when_sane() -> None:
    assert request_id_from("req-42.a:b") == "req-42.a:b"
    generated = [
        request_id_from(insane)
        for insane in (None, "", "two words", "x" * 129, "caf\u00e9", "a\r\nSet-Cookie: x=1")
    ]
    assert all(GENERATED_ID.fullmatch(request_id) for request_id in generated), generated
    assert len(set(generated)) == len(generated)


# ---- the middleware in a small app of its own --------------------------------------


async def context(request: web.Request) -> web.Response:
    """Answers with the structlog context the request's handler sees."""
    return web.json_response(structlog.contextvars.get_contextvars())


async def redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound("/elsewhere")


async def streamed(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    await response.prepare(request)
    await response.write(b"data: x\n\n")
    return response


async def small_app(metrics: Metrics) -> TestClient[Any, Any]:
    app = web.Application()
    app.middlewares.insert(0, observe_middleware(metrics.http))
    app.on_response_prepare.append(_on_prepare)
    app.router.add_get("/things/{thing_id}", context)
    app.router.add_get("/sessions/{session_id}/stream", streamed)
    app.router.add_get("/redirect", redirect)
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    return client


async def test_middleware_binds_ids_and_counts_by_route_template() -> None:
    metrics = Metrics()
    client = await small_app(metrics)
    try:
        response = await client.get(
            "/things/1", params={"session_id": "s-9"}, headers={REQUEST_ID_HEADER: "abc-1"}
        )
        assert response.headers[REQUEST_ID_HEADER] == "abc-1"
        assert await response.json() == {"request_id": "abc-1", "session_id": "s-9"}
        response = await client.get("/things/2", headers={REQUEST_ID_HEADER: "not sane"})
        generated = response.headers[REQUEST_ID_HEADER]
        assert GENERATED_ID.fullmatch(generated), generated
        assert await response.json() == {"request_id": generated}
        stream = await client.get("/sessions/s-3/stream", headers={REQUEST_ID_HEADER: "sse-1"})
        assert stream.headers[REQUEST_ID_HEADER] == "sse-1"
        assert await stream.read() == b"data: x\n\n"
        assert (await client.get("/things/3/nothing")).status == 404
        assert (await client.get("/redirect", allow_redirects=False)).status == 302
    finally:
        await client.close()
    assert metrics.http.requests == {
        ("/things/{thing_id}", "GET", 200): 2,
        ("/sessions/{session_id}/stream", "GET", 200): 1,
        ("unmatched", "GET", 404): 1,
        ("/redirect", "GET", 302): 1,
    }
    # The stream's stay is not a latency: it has no duration series.
    assert set(metrics.http.durations) == {
        ("/things/{thing_id}", "GET"),
        ("unmatched", "GET"),
        ("/redirect", "GET"),
    }
    assert metrics.http.durations["/things/{thing_id}", "GET"].count == 2


async def test_a_cancellation_lost_in_a_broker_error_still_stops_the_probe(
    tmp_path: Path,
) -> None:
    class Swallowing(MemoryEventLog):
        """Turns a cancellation into a BrokerError, as Python 3.11's asyncio.wait_for
        does when it meets a failing read (AmqpEventLog.end_offset waits that way)."""

        async def end_offset(self) -> int:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                raise BrokerError("the consumer channel closed") from None
            return -1

    runtime = Runtime.build(Config(), Swallowing(), FileStore(str(tmp_path)))
    runtime.restored_event.set()
    task = asyncio.create_task(probe_stream_end(runtime, interval_s=0.01))
    await asyncio.sleep(0.01)
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=2)
    assert task in done and task.cancelled()
