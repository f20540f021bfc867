"""The CI soak: bench/soak.py for 60 s against the real RabbitMQ and a real `recsrv run`.

Ingest, REST and SSE run together; the soak's JSON result must show no error of any
kind, every confirmed event applied exactly once, and RSS levelling off. The verdict
functions of the script are checked first on made-up samples, so a broken verdict
cannot pass the soak by accident.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
DURATION_S = 60
RATE = 200
SSE_CLIENTS = 5
SAMPLE_EVERY_S = 5


@pytest.fixture
def soak(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCH))  # the script imports its sibling `services`
    import soak as module

    return module


def test_rss_verdict_accepts_a_plateau_and_refuses_steady_growth(soak: ModuleType) -> None:
    plateau = [(t, 80.0 + (3.0 if t > 10 else 0.0) + (t % 3) * 0.5) for t in range(0, 901, 5)]
    assert soak.rss_verdict(plateau, 900)["ok"] is True
    # 4 MiB a minute: 30 MiB over the second half of a 15-minute run, beyond 24 MiB.
    leak = [(t, 80.0 + t * 4 / 60) for t in range(0, 901, 5)]
    verdict = soak.rss_verdict(leak, 900)
    assert verdict["ok"] is False
    assert verdict["growth_mib"] == pytest.approx(30, abs=1.5)
    assert verdict["second_half_slope_mib_per_h"] == pytest.approx(240, abs=1)
    assert soak.rss_verdict([(0, 80.0)], 900)["ok"] is False


def test_failures_name_every_broken_promise(soak: ModuleType) -> None:
    good: dict[str, Any] = {
        "errors": {},
        "events": {
            "published": 100,
            "applied": 100,
            "applied_metric": 100.0,
            "messages_published": 60,
            "messages_consumed": 60.0,
            "duplicates": 0.0,
            "invalid": 0.0,
            "item_counter_mismatches": 0,
            "broker_restarts": 0,
            "retried_messages": 0,
            "retried_events": 0,
        },
        "rss": {"ok": True},
        "server": {"exit_code": 0, "log_errors": []},
        "rest": {"requests": 10},
        "sse": {"clients": 1, "pushes": 3},
    }
    assert soak.failures_of(good) == []
    bad = json.loads(json.dumps(good))
    bad["errors"] = {"rest:recommendations:500": 2}
    bad["events"].update(applied=99, messages_consumed=61.0, duplicates=1.0)
    bad["rss"]["ok"] = False
    bad["server"]["exit_code"] = 1
    failures = soak.failures_of(bad)
    assert len(failures) == 6, failures
    assert any("rest:recommendations:500" in f for f in failures)
    # After a broker restart, a message published again may be consumed twice and its
    # events counted as duplicates, but no more often than it was retried; and the
    # client library's connection errors in the server log are expected.
    restarted = json.loads(json.dumps(good))
    restarted["events"].update(broker_restarts=1, retried_messages=2, retried_events=3)
    restarted["events"].update(messages_consumed=62.0, duplicates=3.0)
    restarted["server"]["log_errors"] = ["ERROR:aiormq.connection:Unexpected connection close"]
    assert soak.failures_of(restarted) == []
    restarted["events"].update(messages_consumed=63.0, duplicates=4.0)
    assert len(soak.failures_of(restarted)) == 2
    restarted["server"]["log_errors"].append('{"event":"apply_failed","level":"error"}')
    assert len(soak.failures_of(restarted)) == 3


@pytest.mark.timeout(180)
def test_one_minute_soak_has_no_errors_and_applies_every_event_once() -> None:
    soak_run = subprocess.Popen(
        [
            sys.executable,
            str(BENCH / "soak.py"),
            "--duration",
            str(DURATION_S),
            "--rate",
            str(RATE),
            "--sse-clients",
            str(SSE_CLIENTS),
            "--rest-concurrency",
            "4",
            "--rest-rate",
            "50",
            "--sample-every",
            str(SAMPLE_EVERY_S),
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = soak_run.communicate(timeout=150)
    except subprocess.TimeoutExpired:
        # SIGTERM, not a kill: the soak then stops its server, deletes its RabbitMQ
        # objects and still prints a (failed) result.
        soak_run.send_signal(signal.SIGTERM)
        stdout, stderr = soak_run.communicate(timeout=25)
    assert stdout.strip(), stderr[-3000:]
    result = json.loads(stdout)
    assert result["failures"] == [], json.dumps(result, indent=1)[-4000:]
    assert soak_run.returncode == 0

    assert result["error_total"] == 0
    events = result["events"]
    # Most of the load was published (a loaded machine may fall a little behind)...
    assert events["published"] - events["seeded"] >= 0.8 * RATE * DURATION_S
    # ...and the server holds each confirmed event exactly once.
    assert events["applied"] == events["published"]
    assert events["applied_metric"] == events["published"]
    assert events["messages_consumed"] == events["messages_published"]
    assert events["duplicates"] == 0
    assert events["invalid"] == 0
    assert events["items_checked"] > 100
    assert events["item_counter_mismatches"] == 0

    rest = result["rest"]
    assert rest["requests"] >= 0.5 * 50 * DURATION_S
    assert set(rest["by_endpoint"]) == {
        "recommendations",
        "popular",
        "similar",
        "bought_together",
        "item",
    }
    assert rest["p99_ms"] > 0
    sse = result["sse"]
    assert sse["connections"] >= SSE_CLIENTS
    assert sse["pushes"] > 0
    assert sse["push_latency"]["samples"] > 0

    rss = result["rss"]
    assert rss["ok"] is True
    assert rss["growth_mib"] <= rss["bound_mib"]
    assert len(rss["samples"]) >= DURATION_S / SAMPLE_EVERY_S
    assert all(mib > 10 for _, mib in rss["samples"])
    assert result["server"]["exit_code"] == 0
    assert result["server"]["log_errors"] == []
