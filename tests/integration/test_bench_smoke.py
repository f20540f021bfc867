"""The benchmarks keep working: each runs at a tiny size and prints its figure line.

These check that the scripts run and report, not how fast anything is: the figures
belong in docs/benchmarks.md, measured at full size.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    ("script", "args", "figure"),
    [
        ("ingest.py", ["--messages", "300", "--batched", "5", "--repeat", "1"], "ratio to bare"),
        ("checkpoint.py", ["--items", "500", "--sessions", "2000", "--repeat", "1"], "P6 mongodb"),
        ("restart.py", ["--before", "500", "--replay", "500", "--repeat", "1"], "P7 kill -9"),
        ("sse.py", ["--subscribers", "10", "--seconds", "1"], "P4 10 subscribers"),
    ],
)
def test_benchmark_runs_and_reports(script: str, args: list[str], figure: str) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert figure in done.stdout, done.stdout
