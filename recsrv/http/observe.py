"""Request metrics, event-loop lag and per-request log context (filled in by issue 6)."""

from __future__ import annotations

from aiohttp import web


def install_observability(app: web.Application) -> None:
    """Add the metrics middleware and background probes to `app` (before it starts)."""
