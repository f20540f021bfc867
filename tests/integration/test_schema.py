"""schemathesis against a live `recsrv run` (with API keys), in embedded mode and
against the real RabbitMQ.

It generates requests for every operation of the OpenAPI document, valid ones and
invalid ones, with the keys its security schemes name (a secret key, a public key in
the header or in ?key=), and also without a key and with a wrong one. Every check
schemathesis has runs on each answer: never a 5xx; a status, content type, headers
and body the document lists for that operation; invalid input refused (4xx); a
missing or wrong key refused (401); an undeclared method answered 405 with Allow.

One check is left out: positive_data_acceptance (a request valid by the schema is
accepted). Four limits cannot be written in JSON Schema: the 8190 bytes of a request
line (aiohttp's), which a valid query of multi-byte characters can exceed once
URL-encoded; server.max_query_chars (4096) over all parameters together; the 4 KiB
of an event's `properties` once encoded; and the equality of a PUT body's item_id
with the path's. Each is refused with a documented 400. (Turned on in November 2026,
it also found that the document let an event's `ts` be any string of 19 to 64
characters, where the server takes only RFC 3339 date-times: the string now has
`format: date-time`.) Hypothesis' health checks all run.

The schema is built from recsrv.http.openapi at import time, since schemathesis'
lazy loader (from_fixture) does not run under pytest 9.2 (it sets Node._nodeid);
test_the_served_document_is_the_one_tested checks /openapi.json serves exactly it.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from recsrv.app import build_app
from recsrv.config import Config
from recsrv.errors import EventError
from recsrv.events import parse_ts
from recsrv.http.openapi import TS, openapi_document
from tests.conftest import (
    AMQP_URL,
    delete_broker_names,
    free_port,
    new_broker_names,
    spawn_recsrv,
)

SECRET = "sk_schema_5d1f0b7e3a9c"
PUBLIC = "pk_schema_8b2e6a4c0d7f"


def _request(url: str, method: str = "GET", data: bytes | None = None) -> int:
    headers = {"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json"}
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    with urllib.request.urlopen(request, timeout=5) as response:
        status: int = response.status
        return status


@pytest.fixture(scope="module", params=["memory", "amqp"])
def live_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """`recsrv run` with keys from the environment, in embedded mode and against the
    real RabbitMQ; a few items so that item routes can answer 200 as well as 404."""
    tmp_path = tmp_path_factory.mktemp("schema")
    port = free_port()
    env = {
        "RECSRV_AUTH__SECRET_KEYS": SECRET,
        "RECSRV_AUTH__PUBLIC_KEYS": PUBLIC,
        # Requests refused with 401 spend tokens: without this, the many cases sent
        # without a key would soon turn every answer into 429 (tested in test_security).
        "RECSRV_AUTH__PUBLIC_RATE_PER_S": "0",
        # Generated after= ids never come: each such case would wait the whole timeout.
        "RECSRV_SERVER__AFTER_TIMEOUT_MS": "20",
    }
    names = new_broker_names()
    if request.param == "amqp":
        env["RECSRV_BROKER__URL"] = AMQP_URL
        env.update({f"RECSRV_BROKER__{key.upper()}": value for key, value in names.items()})
    try:
        yield from _serve(tmp_path, port, env)
    finally:
        if request.param == "amqp":
            asyncio.run(delete_broker_names(names))


def _serve(tmp_path: Path, port: int, env: dict[str, str]) -> Iterator[str]:
    server, log = spawn_recsrv(tmp_path, port, env)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base, server, log)
        views = b",".join(
            b'{"type": "view", "session_id": "s%d", "item_id": "%s"}' % (n, item)
            for n in range(3)
            for item in (b"sku-123", b"sku-456", b"sku-789")  # sku-123: the document's example
        )
        assert _request(base + "/v1/events", "POST", b"[" + views + b"]") == 202
        yield base
    finally:
        server.terminate()
        server.wait(timeout=20)
    text = log.read_text()
    assert "request_failed" not in text, text


def _wait_ready(base: str, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        assert server.poll() is None, log.read_text()
        try:
            if _request(base + "/readyz") == 200:
                return
        except (urllib.error.URLError, ConnectionError):
            pass
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)


schema = schemathesis.openapi.from_dict(
    openapi_document(),
    config=schemathesis.Config.from_dict(
        {
            # An event stream never ends: read its first message, then judge the answer.
            "max-stream-events": 1,
            "request-timeout": 5,
            "auth": {
                "openapi": {
                    "secretKey": {"bearer": SECRET},
                    "publicKey": {"bearer": PUBLIC},
                    "publicKeyInQuery": {"api_key": PUBLIC},
                }
            },
            "checks": {
                # 413: an array of more than 1000 events is refused as too large.
                "negative_data_rejection": {
                    "expected-statuses": ["400", "401", "403", "404", "405", "413", "415", "429"]
                }
            },
        }
    ),
)


def test_the_served_document_is_the_one_tested(live_server: str) -> None:
    with urllib.request.urlopen(live_server + "/openapi.json", timeout=5) as response:
        served = json.load(response)
    assert served == json.loads(json.dumps(openapi_document()))
    # Every route of the app is described, and nothing else.
    app = build_app(Config())
    routes = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    }
    documented = {
        (method.upper(), path)
        for path, operations in served["paths"].items()
        for method in operations
    }
    assert documented == routes


def test_a_string_ts_is_documented_as_the_date_time_the_server_takes() -> None:
    # What the positive-data check found: a string of the right length is not enough.
    assert parse_ts("2024-05-01T12:00:00.5+02:00") == pytest.approx(1714557600.5)
    with pytest.raises(EventError):
        parse_ts("not a date, but long enough")
    strings = [variant for variant in TS["anyOf"] if variant.get("type") == "string"]
    assert strings and all(variant.get("format") == "date-time" for variant in strings)


# One test per operation; RECSRV_SCHEMA_EXAMPLES raises the count for a longer hunt.
@pytest.mark.timeout(120)
@schema.parametrize()
@settings(
    max_examples=int(os.environ.get("RECSRV_SCHEMA_EXAMPLES", "25")),
    deadline=None,
    database=None,
)
def test_every_operation_answers_as_documented(live_server: str, case: Any) -> None:
    case.call_and_validate(base_url=live_server, excluded_checks=[positive_data_acceptance])
