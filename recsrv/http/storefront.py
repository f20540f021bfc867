"""What the storefront talks to: the live stream, the SDK and the demo shop."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from recsrv import recommend
from recsrv.http.api import (
    RUNTIME,
    ApiError,
    json_response,
    list_body,
    optional_id,
    param_k,
    path_id,
)
from recsrv.http.security import client_address
from recsrv.http.sse import Computed, ListRequest, SseHub, TooManySubscribers, stream
from recsrv.runtime import Runtime

STATIC = Path(__file__).parent / "static"
SSE_HUB = web.AppKey("sse_hub", SseHub)


def make_hub(runtime: Runtime) -> SseHub:
    server = runtime.config.server

    def compute(request: ListRequest) -> Computed:
        recs = recommend.recommend(
            runtime.model,
            session_id=request.session_id,
            user_id=request.user_id,
            k=request.k,
            category=request.category,
        )
        body = list_body(runtime, recs)
        return Computed(
            content=orjson.dumps([body["items"], body["strategy"]]), payload=orjson.dumps(body)
        )

    return SseHub(
        compute,
        coalesce_s=server.sse_coalesce_s,
        max_subscribers=server.sse_max_subscribers,
        max_per_session=server.sse_max_per_session,
        max_per_client=server.sse_max_per_client,
    )


async def get_session_stream(request: web.Request) -> web.StreamResponse:
    runtime = request.app[RUNTIME]
    hub = request.app[SSE_HUB]
    if hub.closed:
        raise ApiError(503, "shutting_down", "the server is shutting down")
    list_request = ListRequest(
        session_id=path_id(request, "session_id"),
        k=param_k(request),
        category=optional_id(request, "category"),
        user_id=optional_id(request, "user_id"),
    )
    server = runtime.config.server
    try:
        return await stream(
            request,
            hub,
            list_request,
            client_address(request),
            server.sse_heartbeat_s,
            server.sse_send_timeout_s,
        )
    except TooManySubscribers as exc:
        raise ApiError(exc.status, "too_many_streams", str(exc)) from None


async def get_sdk(request: web.Request) -> web.StreamResponse:
    return _static_file("sdk.js", "application/javascript")


async def get_demo(request: web.Request) -> web.StreamResponse:
    return _static_file("demo.html", "text/html")


async def get_static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    types = {".js": "application/javascript", ".css": "text/css", ".png": "image/png"}
    path = STATIC / name
    if "/" in name or name.startswith(".") or path.suffix not in types or not path.is_file():
        raise ApiError(404, "not_found", f"no static file {name!r}")
    return _static_file(name, types[path.suffix])


async def get_demo_catalog(request: web.Request) -> web.Response:
    return json_response(_demo_catalog())


@cache
def _demo_catalog() -> list[dict[str, Any]]:
    from recsrv.demo import catalog

    return catalog()


def _static_file(name: str, content_type: str) -> web.FileResponse:
    # Security headers (nosniff, CSP, framing) come from recsrv.http.security.
    response = web.FileResponse(STATIC / name)
    response.content_type = content_type
    return response


def add_storefront_routes(app: web.Application) -> None:
    app.router.add_get("/v1/sessions/{session_id}/stream", get_session_stream)
    app.router.add_get("/sdk.js", get_sdk)
    app.router.add_get("/demo", get_demo)
    app.router.add_get("/demo/catalog.json", get_demo_catalog)
    app.router.add_get("/static/{name}", get_static)
