"""REST API v1 (design section 4): thin handlers over the model and the event log.

Reads answer from the in-memory model. Writes never touch the model: they publish
events to the log and answer 202 once the broker confirmed them; the consumer
applies them like any other event, so state stays a function of the stream.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from recsrv import prequential, recommend
from recsrv.checkpointer import Checkpointer
from recsrv.errors import BrokerError, EventError, NotCheckpointWriter, StoreError
from recsrv.events import (
    CATALOG_DELETE,
    CATALOG_UPSERT,
    USER_FORGET,
    Decoded,
    Event,
    decode_body,
    encode_events,
    parse_element,
)
from recsrv.http.openapi import openapi_document
from recsrv.runtime import Runtime
from recsrv.worker_metrics import WorkerMetrics

logger = structlog.get_logger("recsrv.http")

RUNTIME = web.AppKey("runtime", Runtime)
CHECKPOINTER = web.AppKey("checkpointer", Checkpointer)
# In a worker of `recsrv run --workers N`: every worker's figures, for /metrics.
ALL_WORKERS = web.AppKey("all_workers", WorkerMetrics)

MAX_ID_CHARS = 128
MAX_K = 100
MAX_EXCLUDE = 1000
JSON_TYPES = ("application/json", "text/plain")  # text/plain: what sendBeacon can send
# What a public key (a storefront) may post: the shopper's own browsing. Purchases,
# catalog changes and forgetting a user come from the shop's backend, with a secret key.
PUBLIC_EVENT_TYPES = frozenset({"view", "click", "add_to_cart", "remove_from_cart", "search"})
# The kind of key a request was authenticated with ("public" or "secret"); absent when
# the server runs open or the route is open (set by recsrv.http.security).
KEY_KIND = web.RequestKey("key_kind", str)
PUBLIC_KEY = "public"
SECRET_KEY = "secret"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
    503: "unavailable",
}


class ApiError(Exception):
    """An error answer: status, a stable code, a message, optional details and headers."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: list[dict[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def error_response(error: ApiError) -> web.Response:
    body: dict[str, Any] = {"error": error.code, "message": error.message}
    if error.details is not None:
        body["details"] = error.details
    response = json_response(body, error.status)
    if error.headers:
        response.headers.update(error.headers)
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves as the JSON error object; never as a stack trace."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = ERROR_CODES.get(exc.status, "error")
        response = error_response(ApiError(exc.status, code, exc.reason))
        if exc.status == 405 and "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:
        logger.exception("request_failed", method=request.method, path=request.path)
        return error_response(ApiError(500, "internal_error", "internal error"))


# ---- parameters -------------------------------------------------------------


def param_k(request: web.Request) -> int:
    raw = request.query.get("k", "10")
    # isdigit() alone takes "²" and digit strings too long for int().
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 10) or not 1 <= int(raw) <= MAX_K:
        raise _bad_parameter("k", f"must be an integer from 1 to {MAX_K}")
    return int(raw)


def optional_id(request: web.Request, name: str) -> str | None:
    value = request.query.get(name)
    if value is None or value == "":
        return None
    if len(value) > MAX_ID_CHARS:
        raise _bad_parameter(name, f"must be at most {MAX_ID_CHARS} characters")
    return value


def _exclude(request: web.Request) -> frozenset[str]:
    ids = [part for part in request.query.get("exclude", "").split(",") if part]
    if len(ids) > MAX_EXCLUDE:
        raise _bad_parameter("exclude", f"must list at most {MAX_EXCLUDE} item ids")
    return frozenset(ids)


def path_id(request: web.Request, name: str) -> str:
    value = request.match_info[name]
    if len(value) > MAX_ID_CHARS:
        raise _bad_parameter(name, f"must be at most {MAX_ID_CHARS} characters")
    return value


def _bad_parameter(name: str, reason: str) -> ApiError:
    return ApiError(
        400,
        "invalid_parameter",
        f"{name} {reason}",
        [{"field": name, "reason": reason}],
    )


def list_body(
    runtime: Runtime, recs: recommend.RecList, after: bool | None = None
) -> dict[str, Any]:
    """The JSON of every list endpoint (and of each SSE message); `after`: whether the
    event of after=EVENT_ID was applied (None: no such parameter)."""
    model: dict[str, Any] = runtime.model_info()
    if after is not None:
        model["after"] = after
    return {
        "items": [
            {"item_id": item_id, "score": score, "reason": reason}
            for item_id, score, reason in zip(recs.item_ids, recs.scores, recs.reasons, strict=True)
        ],
        "strategy": recs.strategy,
        "model": model,
    }


def _list_response(
    runtime: Runtime, recs: recommend.RecList, after: bool | None = None
) -> web.Response:
    return json_response(list_body(runtime, recs, after))


async def _read_after(request: web.Request) -> bool | None:
    """after=EVENT_ID: wait, up to server.after_timeout_ms, until that event is applied;
    whether it was (None without the parameter). Called once the other parameters are
    checked, so that a bad request is refused without waiting."""
    event_id = optional_id(request, "after")
    if event_id is None:
        return None
    runtime = request.app[RUNTIME]
    timeout_s = runtime.config.server.after_timeout_ms / 1000
    return await runtime.read_after_write.wait(event_id, timeout_s)


# ---- reads ------------------------------------------------------------------


async def get_recommendations(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    session_id = optional_id(request, "session_id")
    user_id = optional_id(request, "user_id")
    item_id = optional_id(request, "item_id")
    k = param_k(request)
    category = optional_id(request, "category")
    exclude = _exclude(request)
    after = await _read_after(request)
    recs = recommend.recommend(
        runtime.model,
        session_id=session_id,
        user_id=user_id,
        item_id=item_id,
        k=k,
        category=category,
        exclude=exclude,
    )
    return _list_response(runtime, recs, after)


async def get_similar(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    item_id = path_id(request, "item_id")
    k = param_k(request)
    after = await _read_after(request)
    recs = recommend.similar(runtime.model, item_id, k=k)
    if recs is None:
        raise _item_not_found(item_id)
    return _list_response(runtime, recs, after)


async def get_bought_together(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    item_id = path_id(request, "item_id")
    k = param_k(request)
    after = await _read_after(request)
    recs = recommend.bought_together(runtime.model, item_id, k=k)
    if recs is None:
        raise _item_not_found(item_id)
    return _list_response(runtime, recs, after)


async def get_popular(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    k = param_k(request)
    category = optional_id(request, "category")
    after = await _read_after(request)
    recs = recommend.popular(runtime.model, k=k, category=category)
    return _list_response(runtime, recs, after)


async def get_item(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    item_id = path_id(request, "item_id")
    info = runtime.model.item_info(item_id)
    if info is None:
        raise _item_not_found(item_id)
    return json_response({**info, "model": runtime.model_info()})


async def get_model(request: web.Request) -> web.Response:
    """The blend's learnt weights and the live prequential quality of the served lists."""
    runtime = request.app[RUNTIME]
    report = runtime.model.blend_report()
    return json_response(
        {
            "weights": report["weights"],
            "prequential": {
                "k": prequential.K,
                "hr": report["hr"],
                "mrr": report["mrr"],
                "recent_hr": report["recent_hr"],
                "recent_mrr": report["recent_mrr"],
                "predictions": report["predictions"],
                "every": report["every"],
            },
            "model": runtime.model_info(),
        }
    )


def _item_not_found(item_id: str) -> ApiError:
    return ApiError(404, "item_not_found", f"item {item_id!r} is not known")


# ---- writes: publish, then 202 ----------------------------------------------


async def put_item(request: web.Request) -> web.Response:
    item_id = path_id(request, "item_id")
    body = await _json_body(request)
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_body", "the body must be a JSON object (the catalog item)")
    if body.get("item_id", item_id) != item_id:
        raise ApiError(400, "invalid_body", "item_id in the body differs from the path")
    element = {"type": CATALOG_UPSERT, "item": {**body, "item_id": item_id}}
    return await _publish_one(request, element)


async def delete_item(request: web.Request) -> web.Response:
    item_id = path_id(request, "item_id")
    return await _publish_one(request, {"type": CATALOG_DELETE, "item_id": item_id})


async def delete_user(request: web.Request) -> web.Response:
    user_id = path_id(request, "user_id")
    return await _publish_one(request, {"type": USER_FORGET, "user_id": user_id})


async def post_events(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    _require_json(request)
    body = await request.read()
    decoded = decode_body(
        body, default_ts=time.time(), max_elements=runtime.config.server.max_request_events
    )
    _refuse_invalid(decoded)
    if request.get(KEY_KIND) == PUBLIC_KEY:
        _refuse_private_types(decoded.events)
    if decoded.events:
        await _publish(runtime, decoded.events)
    return json_response({"accepted": len(decoded.events)}, 202)


def _refuse_invalid(decoded: Decoded) -> None:
    if not decoded.invalid:
        return
    first = decoded.invalid[0]
    if first.code == "too_many":
        raise ApiError(413, "too_many_events", first.reason)
    if first.code == "malformed":
        raise ApiError(400, "malformed_body", first.reason)
    details = [{"index": i.index, "field": i.field, "reason": i.reason} for i in decoded.invalid]
    raise ApiError(
        400,
        "invalid_events",
        f"{len(details)} invalid event(s); nothing was published",
        details,
    )


def _refuse_private_types(events: list[Event]) -> None:
    """A public key posts browsing events only; one other element refuses the request."""
    reason = "a public key may post only " + ", ".join(sorted(PUBLIC_EVENT_TYPES)) + " events"
    details = [
        {"index": index, "field": "type", "reason": reason}
        for index, event in enumerate(events)
        if event.type not in PUBLIC_EVENT_TYPES
    ]
    if details:
        raise ApiError(
            403,
            "forbidden",
            f"{len(details)} event(s) need a secret key; nothing was published",
            details,
        )


async def _publish_one(request: web.Request, element: dict[str, Any]) -> web.Response:
    runtime = request.app[RUNTIME]
    try:
        event = parse_element(element, default_ts=time.time())
    except EventError as exc:
        detail = {"index": 0, "field": exc.field, "reason": exc.reason}
        raise ApiError(400, "invalid_events", str(exc), [detail]) from None
    await _publish(runtime, [event])
    return json_response({"accepted": 1}, 202)


async def _publish(runtime: Runtime, events: list[Event]) -> None:
    types = {event.type for event in events}
    routing_key = types.pop() if len(types) == 1 else "batch"
    try:
        await runtime.log.publish(encode_events(events), routing_key)
    except BrokerError as exc:
        logger.warning("publish_failed", error=str(exc))
        raise ApiError(503, "broker_unavailable", "the event log did not confirm") from None
    runtime.metrics.events_published.inc(len(events))


def _require_json(request: web.Request) -> None:
    if request.content_type not in JSON_TYPES:
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")


async def _json_body(request: web.Request) -> Any:
    _require_json(request)
    try:
        return orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "malformed_body", f"not valid UTF-8 JSON: {exc}") from None


# ---- operations -------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    reasons = list(runtime.problems.values())
    if not runtime.restored:
        reasons.append("state is being restored")
    # The position before the probe: a probe takes a moment, and readiness must not
    # credit the consumer with progress made while the end was being read.
    offset = runtime.model.offset
    end = None
    try:
        end = await runtime.log.end_offset()
    except BrokerError as exc:
        reasons.append(f"cannot read the stream's end: {exc}")
    lag = None if end is None else max(end - offset, 0)
    if lag is not None and lag > runtime.config.broker.ready_lag:
        reasons.append(
            f"consumer is {lag} messages behind (ready_lag is {runtime.config.broker.ready_lag})"
        )
    if reasons:
        details = [{"reason": reason} for reason in reasons]
        return error_response(ApiError(503, "not_ready", "; ".join(reasons), details))
    return json_response(
        {
            "status": "ready",
            "instance": runtime.instance,
            "checkpoint_writer": request.app[CHECKPOINTER].lease.held,
            "offset": offset,
            "end_offset": end,
            "lag": lag,
            "warnings": list(runtime.warnings.values()),
        }
    )


async def metrics(request: web.Request) -> web.Response:
    workers = request.app.get(ALL_WORKERS)
    body = request.app[RUNTIME].metrics.render() if workers is None else await workers.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(request: web.Request) -> web.Response:
    return json_response(openapi_document(request.app[RUNTIME].config.auth.protect_metrics))


async def post_checkpoint(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    if not runtime.restored:
        raise ApiError(503, "not_ready", "the state is still being restored")
    started = time.perf_counter()
    try:
        info = await request.app[CHECKPOINTER].checkpoint()
    except NotCheckpointWriter as exc:
        raise ApiError(409, "not_checkpoint_writer", str(exc)) from None
    except StoreError as exc:
        raise ApiError(503, "store_unavailable", str(exc)) from None
    body = {**info.to_dict(), "seconds": round(time.perf_counter() - started, 3)}
    return json_response(body)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/recommendations", get_recommendations)
    app.router.add_get("/v1/items/{item_id}/similar", get_similar)
    app.router.add_get("/v1/items/{item_id}/bought-together", get_bought_together)
    app.router.add_get("/v1/popular", get_popular)
    app.router.add_get("/v1/items/{item_id}", get_item)
    app.router.add_get("/v1/model", get_model)
    app.router.add_put("/v1/items/{item_id}", put_item)
    app.router.add_delete("/v1/items/{item_id}", delete_item)
    app.router.add_delete("/v1/users/{user_id}", delete_user)
    app.router.add_post("/v1/events", post_events)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi)
    app.router.add_post("/v1/admin/checkpoint", post_checkpoint)
