"""One /metrics for all the workers of `recsrv run --workers N`.

A scrape reaches whichever worker the kernel hands the connection to, and each worker
counts only what it did itself (recsrv.metrics keeps plain numbers in the process,
which prometheus-client's multiprocess mode cannot read). So each worker also serves
its own exposition on a unix socket in the supervisor's private directory, and the
worker that receives `GET /metrics` fetches its siblings' over those sockets (all at
once, each within SIBLING_TIMEOUT_S), parses them, labels every sample with
`worker="<index>"`, merges the families by name and renders one exposition. Totals
are a `sum without (worker)` away in PromQL; per-worker figures (RSS, offset, loop
lag) stay apart.

The merge runs in a worker thread (about 4 ms per worker on these machines), so a
scrape does not stall the requests the worker serves meanwhile.

A sibling that does not answer in time (busy with a long request, restarting, being
stopped) is left out of that scrape and the scrape goes on: `recsrv_workers` and
`recsrv_workers_scraped` say how many there are and how many this exposition holds,
and the log names the missing one. Its counters come back whole at the next scrape;
only a restart starts them afresh, which Prometheus' rate() reads as a reset.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from pathlib import Path

import aiohttp
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from recsrv.metrics import Metrics

logger = structlog.get_logger("recsrv.metrics")

SIBLING_TIMEOUT_S = 1.0
WORKER_LABEL = "worker"


def merge(expositions: Mapping[str, str]) -> list[Metric]:
    """The families of several expositions (text format, by worker label), one per
    name, every sample labelled with the worker it came from."""
    merged: dict[str, Metric] = {}
    for worker, text in expositions.items():
        for family in text_string_to_metric_families(text):
            into = merged.get(family.name)
            if into is None:
                into = merged[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
            into.samples.extend(
                sample._replace(labels={**sample.labels, WORKER_LABEL: worker})
                for sample in family.samples
            )
    return list(merged.values())


class _Families:
    """A collector of families already made."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def render(families: Iterable[Metric]) -> bytes:
    registry = CollectorRegistry()
    registry.register(_Families(families))
    return generate_latest(registry)


class WorkerMetrics:
    """The exposition of every worker that answers, for this worker's /metrics."""

    def __init__(
        self,
        own: Metrics,
        worker: str,
        siblings: Mapping[str, Path],
        timeout_s: float = SIBLING_TIMEOUT_S,
    ) -> None:
        self.own = own
        self.worker = worker
        self.siblings = dict(siblings)
        self.timeout_s = timeout_s

    async def render(self) -> bytes:
        fetched = await asyncio.gather(
            *(self._fetch(worker, path) for worker, path in self.siblings.items())
        )
        texts = {self.worker: self.own.render().decode()}
        texts |= {worker: text for worker, text in fetched if text is not None}
        counts = (
            GaugeMetricFamily(
                "recsrv_workers",
                "Workers of `recsrv run --workers N`: N.",
                value=len(self.siblings) + 1,
            ),
            GaugeMetricFamily(
                "recsrv_workers_scraped",
                "Workers whose figures this exposition holds: the others did not answer "
                f"within {self.timeout_s:g} s (the log names them).",
                value=len(texts),
            ),
        )
        # Parsing and rendering take about 4 ms per worker: off the event loop.
        return await asyncio.to_thread(lambda: render([*counts, *merge(texts)]))

    async def _fetch(self, worker: str, path: Path) -> tuple[str, str | None]:
        try:
            async with asyncio.timeout(self.timeout_s):
                connector = aiohttp.UnixConnector(path=str(path))
                async with (
                    aiohttp.ClientSession(connector=connector) as http,
                    http.get("http://worker/metrics") as response,
                ):
                    response.raise_for_status()
                    return worker, await response.text()
        except (TimeoutError, OSError, aiohttp.ClientError) as exc:
            reason = "no answer in time" if isinstance(exc, TimeoutError) else repr(exc)
            logger.warning("worker_metrics_missing", worker=worker, reason=reason)
            return worker, None


@contextlib.asynccontextmanager
async def serve_own_metrics(metrics: Metrics, path: Path) -> AsyncIterator[None]:
    """Serve this worker's own exposition, and nothing else, on the unix socket `path`."""

    async def own(request: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", own)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.UnixSite(runner, str(path)).start()
        yield
    finally:
        await runner.cleanup()
