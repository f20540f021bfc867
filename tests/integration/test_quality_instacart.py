"""Design Q1 end to end: the Instacart sample, converted and evaluated by `recsrv evaluate`.

It lives with the integration tests because it takes one to three minutes (the pure tests
under `tests/unit/` run in well under one); it needs no service.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(600)
def test_recsrv_beats_every_baseline_on_the_instacart_sample(tmp_path: Path) -> None:
    """Design Q1, end to end: the package's sample, converted and evaluated."""
    events = tmp_path / "instacart.jsonl"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts/instacart_events.py"), "-o", str(events)],
        check=True,
        timeout=120,
    )
    lines = events.read_bytes().splitlines()
    orders = [orjson.loads(line) for line in lines if b'"purchase"' in line]
    assert len(lines) - len(orders) == 150_000  # order lines of the sample
    assert len({order["user_id"] for order in orders}) == 593
    done = subprocess.run(
        [sys.executable, "-m", "recsrv", "evaluate", str(events), "--json"],
        capture_output=True,
        check=True,
        timeout=540,
        cwd=tmp_path,
    )
    report = orjson.loads(done.stdout)
    results = report["results"]
    baselines = set(results) - {"recsrv"}
    # Every baseline `recsrv evaluate` runs by default; one dropped would go unnoticed.
    assert baselines == {"pop", "itemknn", "sr", "sknn", "vsknn", "stan", "vstan", "topfreq"}
    for metric in ("hr", "mrr"):
        best_baseline = max(results[name][metric] for name in baselines)
        assert results["recsrv"][metric] > best_baseline, (metric, results)
