"""The benchmarks keep working: each runs at a tiny size and prints its figure line.

These check that the scripts run and report, not how fast anything is: the figures
belong in docs/benchmarks.md, measured at full size by bench/run_all.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    ("script", "args", "figure"),
    [
        ("ingest.py", ["--messages", "300", "--batched", "5", "--repeat", "1"], "ratio to bare"),
        ("checkpoint.py", ["--items", "500", "--sessions", "2000", "--repeat", "1"], "P6 mongodb"),
        ("restart.py", ["--before", "500", "--replay", "500", "--repeat", "1"], "P7 kill -9"),
        ("sse.py", ["--subscribers", "10", "--seconds", "1"], "P4 10 subscribers"),
        (
            "rest.py",
            ["--items", "500", "--sessions", "300", "--seconds", "1", "--repeat", "1"],
            "P3 GET /v1/recommendations, 32 connections",
        ),
        (
            "rest.py",
            [
                *("--items", "500", "--sessions", "300", "--seconds", "1", "--repeat", "1"),
                "--workers",
                "2",
            ],
            "P3w recsrv --workers 2:",
        ),
    ],
)
def test_benchmark_runs_and_reports(script: str, args: list[str], figure: str) -> None:
    done = run(script, *args)
    assert done.returncode == 0, done.stderr[-3000:]
    assert figure in done.stdout, done.stdout


@pytest.mark.timeout(180)
def test_rest_benchmark_answers_every_request_and_ingests_meanwhile(tmp_path: Path) -> None:
    figures_file = tmp_path / "p3.json"
    done = run(
        "rest.py",
        *("--items", "500", "--sessions", "300", "--seconds", "2", "--repeat", "1"),
        *("--rate", "500", "--json", str(figures_file)),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = orjson.loads(figures_file.read_bytes())
    assert figures["non_2xx"] == 0 and figures["socket_errors"] == 0, figures
    assert figures["recsrv_rps"] > 0 and figures["bare_rps"] > 0
    # The ingest ran while wrk did: the server applied events at about the rate asked.
    assert 200 < figures["applied_events_s"] < 1000, figures


@pytest.mark.timeout(300)
def test_run_all_writes_the_report_of_the_benchmarks_it_ran(tmp_path: Path) -> None:
    done = run("run_all.py", "--quick", "--only", "P7,sse", "--docs", str(tmp_path))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = (tmp_path / "benchmarks.md").read_text()
    assert "| P7 | restart to ready after kill -9: restore + replay 500 events |" in report
    assert "| P4 | SSE, 10 subscribers" in report
    assert "| P1 | not measured yet |" in report
    assert "`python bench/restart.py --before 500 --replay 500 --repeat 1`" in report
    assert "cores (" in report  # the machine
    saved = orjson.loads((tmp_path / "benchmarks.json").read_bytes())
    assert set(saved["benchmarks"]) == {"restart", "sse"}
    assert saved["benchmarks"]["restart"]["figures"]["ready_s"] > 0


@pytest.mark.timeout(90)
def test_quality_writes_its_table_between_the_markers_and_draws_the_bars(tmp_path: Path) -> None:
    report = tmp_path / "quality.md"
    report.write_text(
        "# Quality\n\nWritten by hand, before.\n\n"
        "<!-- quality-table:begin -->\nan old table\n<!-- quality-table:end -->\n\n"
        "Written by hand, after.\n"
    )
    picture = tmp_path / "quality.png"
    done = run(
        "quality.py",
        *("--quick", "--out-dir", str(tmp_path / "data")),
        *("--report", str(report), "--plot", str(picture)),
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = report.read_text()
    assert text.startswith("# Quality\n\nWritten by hand, before.\n\n<!-- quality-table:begin -->")
    assert text.endswith("<!-- quality-table:end -->\n\nWritten by hand, after.\n")
    assert "an old table" not in text
    assert "`python bench/quality.py --quick --out-dir" in text
    assert "cores (`nproc`" in text
    for kind in ("sequential", "co-occurrence"):
        for order in ("file (session after session)", "time"):
            # one row in the HR table, one in the MRR table, one in the table of the runs
            assert text.count(f"| synthetic {kind} | {order} | ") == 3, text
    assert "| recsrv | pop |" in text and "recsrv ≥ all" in text
    assert "HR@20" in done.stdout and "MRR@20" in done.stdout  # the tables, printed
    assert picture.read_bytes().startswith(b"\x89PNG")
    figures = orjson.loads((tmp_path / "data" / "sequential-file.json").read_bytes())
    assert figures["order"] == "file" and figures["results"]["recsrv"]["hr"] > 0
