"""CORS for the storefront origins in auth.cors_origins, and no other.

Headers are added in on_response_prepare, so streamed responses (SSE) get them too;
preflight requests are answered before routing, and before any key is asked for (a
browser never sends one on a preflight). An origin not listed gets no CORS header at
all, so the browser keeps the answer from the page. No credentials (cookies) are ever
allowed: keys travel in the Authorization header or, for a public key, in ?key=.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

ALLOW_METHODS = "GET, POST, PUT, DELETE, OPTIONS"
ALLOW_HEADERS = "Authorization, Content-Type, Last-Event-ID"
EXPOSE_HEADERS = "Retry-After"
PREFLIGHT_MAX_AGE_S = "600"


def install_cors(app: web.Application, origins: tuple[str, ...]) -> None:
    allowed = frozenset(origins)
    if not allowed:
        # No origin to allow: neither a preflight nor a header to answer with, and a
        # middleware and a hook less on every request.
        return

    @web.middleware
    async def preflight(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if (
            request.method == "OPTIONS"
            and origin in allowed
            and "Access-Control-Request-Method" in request.headers
        ):
            return web.Response(
                status=204,
                headers={
                    "Access-Control-Allow-Methods": ALLOW_METHODS,
                    "Access-Control-Allow-Headers": ALLOW_HEADERS,
                    "Access-Control-Max-Age": PREFLIGHT_MAX_AGE_S,
                },
            )
        return await handler(request)

    async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
        # Every answer depends on the Origin, allowed or not: caches must keep them apart.
        vary = response.headers.get("Vary")
        response.headers["Vary"] = "Origin" if not vary else f"{vary}, Origin"
        origin = request.headers.get("Origin")
        if origin in allowed:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS

    app.middlewares.insert(0, preflight)
    app.on_response_prepare.append(add_headers)
