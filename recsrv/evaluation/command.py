"""`recsrv evaluate FILE`: next-item prediction on a JSONL event file, with baselines.

    recsrv evaluate events.jsonl                       # each user's last session is the test
    recsrv evaluate events.jsonl --split time:0.8      # sessions after the 0.8 quantile
    recsrv evaluate events.jsonl --json --plot out.png
    recsrv evaluate events.jsonl --order time --baselines sr,sknn

The model is configured as the server would be (`--config`, RECSRV_MODEL__* …). Events
are replayed in the file's order, as `recsrv replay` would publish them, or with
`--order time` sorted by ts; either way each test session is predicted in its own ts
order (recsrv/evaluation/runner.py). The report counts the events that came after a
newer one, and those later than sessions.ttl_s + sessions.allowed_lateness_s behind
it, and shows the blend's learnt weights and its own live HR/MRR.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson

from recsrv.config import Config
from recsrv.errors import RecsrvError
from recsrv.evaluation.dataset import LAST_SESSION_PER_USER, read_events, select_test_sessions
from recsrv.evaluation.runner import FILE_ORDER, ORDERS, Outcome, evaluate

MAX_INVALID_SHOWN = 20
MAX_K = 100
BLEND_K = 20  # the length of the lists Model.blend_report measures


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="JSONL file of events (design section 3)")
    parser.add_argument(
        "--split",
        default=LAST_SESSION_PER_USER,
        help=f"{LAST_SESSION_PER_USER} (default) or time:F, e.g. time:0.8",
    )
    parser.add_argument("-k", "--k", type=int, default=20, help="list length K (default 20)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--plot", type=Path, metavar="FILE.png", help="draw HR@k and MRR@k")
    parser.add_argument(
        "--order",
        choices=ORDERS,
        default=FILE_ORDER,
        help="replay in the file's order, as recsrv replay publishes it (default), or sorted by ts",
    )
    parser.add_argument(
        "--baselines",
        metavar="A,B,…",
        type=_names,
        help="run only these baselines (default all; pop always runs, the others top up "
        "their lists with it)",
    )


def main(args: argparse.Namespace, config: Config) -> int:
    if not 1 <= args.k <= MAX_K:
        raise RecsrvError(f"--k must be between 1 and {MAX_K}, not {args.k}")
    if args.plot is not None:
        _check_plotting()
    data = read_events(args.file)
    for number, reason in data.invalid[:MAX_INVALID_SHOWN]:
        print(f"line {number}: {reason}", file=sys.stderr)
    if len(data.invalid) > MAX_INVALID_SHOWN:
        print(f"… {len(data.invalid)} invalid lines in all, left out", file=sys.stderr)
    test = select_test_sessions(data, args.split)
    outcome = evaluate(
        data,
        test,
        args.k,
        config.model,
        config.sessions,
        order=args.order,
        baselines=args.baselines,
    )
    if outcome.n == 0:
        raise RecsrvError("the test sessions gave nothing to predict (no second distinct item)")
    if args.json:
        sys.stdout.write(orjson.dumps(_json(outcome, args.split)).decode() + "\n")
    else:
        print(_table(outcome, args.file, args.split))
    if args.plot is not None:
        _plot(outcome, args.plot)
        if not args.json:
            print(f"plot written to {args.plot}")
    return 0


def _names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("name at least one baseline, e.g. sr,sknn")
    return names


def _json(outcome: Outcome, split: str) -> dict[str, Any]:
    return {
        "k": outcome.k,
        "n": outcome.n,
        "split": split,
        "order": outcome.order,
        "test_sessions": outcome.test_sessions,
        "skipped": outcome.skipped,
        "events": outcome.events,
        "out_of_order": outcome.out_of_order,
        "beyond_lateness": outcome.beyond_lateness,
        "catalog_size": outcome.catalog_size,
        "seconds": round(outcome.seconds, 2),
        "results": outcome.results,
        "blend": outcome.blend,
    }


def _table(outcome: Outcome, path: Path, split: str) -> str:
    k = outcome.k
    lines = [
        f"{path}: {outcome.events:,} events in {outcome.order} order, split {split}, "
        f"{outcome.test_sessions:,} test sessions",
        f"{outcome.out_of_order:,} events out of ts order ({outcome.beyond_lateness:,} later "
        "than sessions.ttl_s + sessions.allowed_lateness_s behind the newest)",
        f"{outcome.n:,} predictions ({outcome.skipped:,} skipped: next item already in the "
        f"session), {outcome.catalog_size:,} items, {outcome.seconds:.1f} s",
        "",
        f"{'':10}{'HR@' + str(k):>9}{'MRR@' + str(k):>9}{'coverage':>10}"
        f"{'pop. rank':>11}{'ms/list':>9}{'seconds':>9}",
    ]
    for name, result in outcome.results.items():
        lines.append(
            f"{name:10}{result['hr']:>9.3f}{result['mrr']:>9.3f}{result['coverage']:>10.3f}"
            f"{result['popularity_rank']:>11,.0f}{result['ms_per_list']:>9.2f}"
            f"{result['seconds']:>9.2f}"
        )
    blend = blend_line(outcome.blend)
    if blend:
        lines += ["", blend]
    return "\n".join(lines)


def blend_line(report: dict[str, Any]) -> str:
    """The blend's weights, largest first, and its live HR/MRR; "" without weights."""
    weights: dict[str, float] = report.get("weights") or {}
    if not weights:
        return ""
    ordered = sorted(weights.items(), key=lambda pair: (-pair[1], pair[0]))
    return (
        "blend weights: "
        + ", ".join(f"{component} {weight:.2f}" for component, weight in ordered)
        + f" (prequential HR@{BLEND_K} {report['hr']:.3f}, MRR@{BLEND_K} {report['mrr']:.3f}"
        f" over {report['predictions']:,} predictions)"
    )


def _check_plotting() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise RecsrvError(
            "--plot needs matplotlib: pip install 'recsrv[plot]' (or matplotlib)"
        ) from exc


def _plot(outcome: Outcome, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    ks = list(range(1, outcome.k + 1))
    figure, (hr_axes, mrr_axes) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, result in outcome.results.items():
        style = {"linewidth": 2.6} if name == "recsrv" else {"linewidth": 1.4}
        hr_axes.plot(ks, result["hr_at"], label=name, **style)
        mrr_axes.plot(ks, result["mrr_at"], label=name, **style)
    for axes, title in ((hr_axes, "HR@k"), (mrr_axes, "MRR@k")):
        axes.set_title(title)
        axes.set_xlabel("k")
        axes.set_xlim(1, outcome.k)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_ylim(bottom=0)
        axes.grid(alpha=0.3)
    hr_axes.legend(loc="upper left")
    figure.suptitle(f"next-item prediction, {outcome.n:,} predictions")
    figure.tight_layout()
    try:
        figure.savefig(path, dpi=110)
    except OSError as exc:
        raise RecsrvError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        plt.close(figure)
