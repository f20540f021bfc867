"""API keys, rate limits, query caps and security headers (design section 8).

One middleware, in this order for each request:

1. the client's address: the peer, or the hop a trusted proxy saw, from Forwarded
   (RFC 7239) or X-Forwarded-For (`Guard.client_address` says which, when both come);
2. query caps (server.max_query_params, server.max_query_chars): 400 beyond (a path
   no route matches goes on to aiohttp's 404 or 405 untouched);
3. the key, unless the route is open (recsrv.http.access) or no key is configured:
   `Authorization: Bearer KEY`, or `?key=` on public routes (EventSource and
   sendBeacon cannot set headers; a secret key is never taken from a URL).
   No key or an unknown key: 401; a public key on a secret route: 403;
4. a token from the client address's bucket for a request made with a public key,
   and for one refused with 401 (so guessing keys is as slow as a storefront): 429
   with Retry-After when the bucket is empty.

A request aiohttp's HTTP parser refuses never reaches the middleware nor the
on_response_prepare signal that adds the headers: aiohttp answers it with a plain-text
400 of its own, and has no hook to change that (README, Security).

Keys are compared as SHA-256 digests with hmac.compare_digest, against every key
whatever matched before, so the time taken says nothing about which key is near.
No key is ever logged: messages never quote them, they stay out of repr, and the
records aiohttp logs itself (a refused request line or header, access lines) have
`key=…` and `Bearer …` redacted.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import re
import time
from collections.abc import Callable, Iterable
from typing import Final

import structlog
from aiohttp import hdrs, web

from recsrv.config import Config
from recsrv.http.access import Access, route_access
from recsrv.http.api import (
    KEY_KIND,
    PUBLIC_KEY,
    RUNTIME,
    SECRET_KEY,
    ApiError,
    Handler,
)
from recsrv.ratelimit import TokenBuckets, retry_after_s

logger = structlog.get_logger("recsrv.http")

CLIENT_ADDRESS = web.RequestKey("client_address", str)
BEARER_HINT = "send an API key as Authorization: Bearer KEY"

# The demo page loads its own script and styles and talks to this origin only. Style
# attributes are allowed: the demo colours its tiles with them.
PAGE_CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; "
    "style-src-attr 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# Everything else is data or a script: nothing to load, never framed.
OTHER_CSP: Final = "default-src 'none'; frame-ancestors 'none'"
COMMON_HEADERS: Final = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# A node's port: digits, or an obfuscated one (RFC 7239 section 6).
NODE_PORT = re.compile(r":(?:[0-9]{1,5}|_[A-Za-z0-9._-]+)")
# Where a key can sit in text aiohttp logs: a query parameter, an Authorization value.
KEY_IN_TEXT = re.compile(r"(?i)(\bkey=|\bbearer\s+)[^\s&'\"\\]+")
AIOHTTP_LOGGERS = ("aiohttp.server", "aiohttp.access", "aiohttp.web")


def redact_keys(text: str) -> str:
    return KEY_IN_TEXT.sub(r"\1[redacted]", text)


class RedactKeys(logging.Filter):
    """aiohttp logs the start of a request line or header it refused (413/400 from its
    parser, before any middleware runs), and access lines hold the query string."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if record.exc_info is not None:
            # The exception's message quotes the refused bytes: keep its text, redacted.
            text += "\n" + logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
            record.exc_text = None
        record.msg, record.args = redact_keys(text), ()
        return True


def redact_library_logs() -> None:
    for name in AIOHTTP_LOGGERS:
        library_logger = logging.getLogger(name)
        if not any(isinstance(f, RedactKeys) for f in library_logger.filters):
            library_logger.addFilter(RedactKeys())


class Keyring:
    """The configured keys, as digests; says which kind a presented key is."""

    def __init__(self, secret_keys: Iterable[str], public_keys: Iterable[str]) -> None:
        self._digests = [(SECRET_KEY, _digest(key)) for key in secret_keys] + [
            (PUBLIC_KEY, _digest(key)) for key in public_keys
        ]

    def __bool__(self) -> bool:
        return bool(self._digests)

    def kind_of(self, presented: str) -> str | None:
        """ "secret", "public" or None; every key is compared, whichever matches."""
        digest = _digest(presented)
        found = None
        for kind, key_digest in self._digests:
            if hmac.compare_digest(digest, key_digest) and found is None:
                found = kind
        return found


def node_address(node: str | None) -> IPAddress | None:
    """The IP address in a Forwarded `for=` node or an X-Forwarded-For hop, its port
    dropped: "192.0.2.1", "192.0.2.1:4711", "[2001:db8::1]", "[2001:db8::1]:4711".

    None for "unknown", an obfuscated identifier ("_proxy1", RFC 7239 section 6.3), a
    missing node or anything else that names no address.
    """
    if not node:
        return None
    if node.startswith("["):
        host, closed, port = node[1:].partition("]")
        if not closed:
            return None
        version: int | None = 6
    elif node.count(":") == 1:
        host, colon, port = node.partition(":")
        port, version = colon + port, 4
    else:
        host, port, version = node, "", None  # bare IPv4, or IPv6 without its brackets
    if port and not NODE_PORT.fullmatch(port):
        return None
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    return ip if version in (None, ip.version) else None


def _digest(key: str) -> bytes:
    # surrogatepass: a header or query value may hold any code point; none may raise here.
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


class Guard:
    """Per-application security state: keys, buckets, trusted proxies, caps."""

    def __init__(self, config: Config, clock: Callable[[], float] = time.monotonic) -> None:
        auth, server = config.auth, config.server
        self.keys = Keyring(auth.secret_keys, auth.public_keys)
        self.buckets = TokenBuckets(auth.public_rate_per_s, auth.public_burst)
        self.rate_text = f"{auth.public_rate_per_s:g} a second, bursts of {auth.public_burst}"
        self.protect_metrics = auth.protect_metrics
        self.max_query_params = server.max_query_params
        self.max_query_chars = server.max_query_chars
        self.trusted: tuple[Network, ...] = tuple(
            ipaddress.ip_network(proxy, strict=False) for proxy in server.trusted_proxies
        )
        self.clock = clock
        self._warned_forwarded = False

    # ---- the client's address -----------------------------------------------------

    def client_address(self, request: web.Request) -> str:
        """The peer, unless it is a trusted proxy that says whom it forwards for.

        A trusted proxy appends to Forwarded or to X-Forwarded-For, and passes the other
        on as the client sent it, so when both come either may be the client's own
        invention. Each is read; if they name the same client, that is the client,
        otherwise the peer (a client can then pick the proxy's address, never another).
        """
        peer = request.remote or "unknown"
        forwarded = request.headers.getall(hdrs.FORWARDED, [])
        x_forwarded_for = request.headers.getall(hdrs.X_FORWARDED_FOR, [])
        if not forwarded and not x_forwarded_for:
            return peer
        if not self.trusted:
            self._warn_forwarded(peer)
            return peer
        if not self._is_trusted(peer):
            return peer
        named = set()
        if forwarded:
            named.add(self._client_in([node_address(e.get("for")) for e in request.forwarded]))
        if x_forwarded_for:
            hops = [hop.strip() for value in x_forwarded_for for hop in value.split(",")]
            named.add(self._client_in([node_address(hop) for hop in hops if hop]))
        client = named.pop() if len(named) == 1 else None
        return client or peer

    def _client_in(self, hops: list[IPAddress | None]) -> str | None:
        """Proxies append the address they were reached from: from the right, the first
        hop that is not a trusted proxy is the client. None if every hop is trusted, or
        if that hop is no address ("unknown", an obfuscated "_name", unreadable): the
        hops left of it came from a party nobody vouches for."""
        for ip in reversed(hops):
            if ip is None:
                return None
            if not self._trusts(ip):
                return str(ip)
        return None

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return self._trusts(ip)

    def _trusts(self, ip: IPAddress) -> bool:
        return any(ip in network for network in self.trusted)

    def _warn_forwarded(self, peer: str) -> None:
        if not self._warned_forwarded:
            self._warned_forwarded = True
            logger.warning(
                "forwarded_headers_ignored",
                peer=peer,
                hint="list the reverse proxy in server.trusted_proxies, or every client "
                "behind it shares one rate limit and one stream cap",
            )

    # ---- caps ---------------------------------------------------------------------

    def check_query(self, request: web.Request) -> None:
        raw = request.rel_url.raw_query_string
        if not raw:
            return
        if len(raw) > self.max_query_chars:
            raise ApiError(
                400,
                "query_too_long",
                f"the query string has {len(raw)} characters, at most "
                f"{self.max_query_chars} allowed",
            )
        if len(request.query) > self.max_query_params:
            raise ApiError(
                400,
                "too_many_parameters",
                f"{len(request.query)} query parameters, at most {self.max_query_params} allowed",
            )

    # ---- keys and rate limits -----------------------------------------------------

    def access_of(self, request: web.Request) -> Access | None:
        """The route's access level; None when no route matched (aiohttp's 404 or 405,
        which reveal nothing and need no key)."""
        resource = request.match_info.route.resource
        if resource is None:
            return None
        return route_access(request.method, resource.canonical, self.protect_metrics)

    def authenticate(self, request: web.Request, access: Access, client: str) -> str:
        """The kind of the request's key, or ApiError 401/403/429."""
        try:
            kind = self._key_kind(request, access)
        except ApiError as exc:
            if exc.status == 401:
                self._spend(client)
            raise
        if kind == PUBLIC_KEY:
            self._spend(client)
        return kind

    def _key_kind(self, request: web.Request, access: Access) -> str:
        # The key lives in this frame only: nothing that can log a traceback holds it.
        header = request.headers.get(hdrs.AUTHORIZATION)
        if header is not None:
            scheme, _, token = header.strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise _unauthorized(f"malformed Authorization header: {BEARER_HINT}")
            kind = self.keys.kind_of(token.strip())
        elif access is Access.PUBLIC and "key" in request.query:
            kind = self.keys.kind_of(request.query["key"])
            if kind == SECRET_KEY:
                raise _unauthorized(
                    "a secret key is never taken from a URL (URLs end up in logs): " + BEARER_HINT
                )
        else:
            where = " (or as ?key= for a public key)" if access is Access.PUBLIC else ""
            raise _unauthorized(f"this call needs an API key: {BEARER_HINT}{where}")
        if kind is None:
            raise _unauthorized("unknown API key")
        if access is Access.SECRET and kind != SECRET_KEY:
            raise ApiError(403, "forbidden", "this call needs a secret key, not a public one")
        return kind

    def _spend(self, client: str) -> None:
        wait = self.buckets.take(client, self.clock())
        if wait > 0:
            seconds = retry_after_s(wait)
            raise ApiError(
                429,
                "too_many_requests",
                f"too many requests from this address (at most {self.rate_text}); "
                f"retry in {seconds} s",
                headers={hdrs.RETRY_AFTER: str(seconds)},
            )


def _unauthorized(message: str) -> ApiError:
    return ApiError(
        401, "unauthorized", message, headers={hdrs.WWW_AUTHENTICATE: 'Bearer realm="recsrv"'}
    )


GUARD = web.AppKey("guard", Guard)


@web.middleware
async def guard_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    guard = request.app[GUARD]
    client = request[CLIENT_ADDRESS] = guard.client_address(request)
    access = guard.access_of(request)
    if access is None:
        return await handler(request)
    guard.check_query(request)
    if access is not Access.OPEN and guard.keys:
        request[KEY_KIND] = guard.authenticate(request, access, client)
    return await handler(request)


def client_address(request: web.Request) -> str:
    """The address rate limits and stream caps count this request against."""
    return request.get(CLIENT_ADDRESS) or request.remote or "unknown"


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    headers = response.headers
    for name, value in COMMON_HEADERS.items():
        headers.setdefault(name, value)
    if response.content_type == "text/html":
        headers.setdefault(hdrs.CONTENT_SECURITY_POLICY, PAGE_CSP)
        headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    else:
        headers.setdefault(hdrs.CONTENT_SECURITY_POLICY, OTHER_CSP)
    headers[hdrs.SERVER] = "recsrv"  # not the aiohttp and Python versions


def install_security(app: web.Application) -> None:
    """Add authentication, rate limiting and security headers to `app` (before it starts)."""
    app[GUARD] = Guard(app[RUNTIME].config)
    redact_library_logs()
    # Appended last: inside error_middleware, so a refusal leaves as the JSON error.
    app.middlewares.append(guard_middleware)
    app.on_response_prepare.append(add_security_headers)
