"""API keys, rate limits and security headers (filled in by issue 7)."""

from __future__ import annotations

from aiohttp import web


def install_security(app: web.Application) -> None:
    """Add authentication, rate limiting and security headers to `app` (before it starts)."""
