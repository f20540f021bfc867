"""Command line: `recsrv run [--workers N]`, `recsrv demo`, `recsrv replay FILE`,
`recsrv evaluate FILE`.

Every command takes `--config PATH` (default: ./config.toml if present, else the
built-in defaults); environment variables override the file as usual.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from recsrv import __version__
from recsrv.errors import ConfigError, RecsrvError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    # Imported late so `recsrv --help` stays fast.
    from recsrv import replay
    from recsrv.evaluation import command as evaluate

    parser = argparse.ArgumentParser(prog="recsrv", description=__doc__)
    parser.add_argument("--version", action="version", version=f"recsrv {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="serve recommendations (embedded mode by default)")
    run.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="N processes, each a whole replica, sharing the port (SO_REUSEPORT); N > 1 "
        "needs an amqp:// broker (default: 1, this process alone)",
    )
    # A worker's place, given by the supervisor of `run --workers N` (recsrv.workers).
    run.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    run.add_argument("--worker-dir", type=Path, help=argparse.SUPPRESS)
    demo = commands.add_parser(
        "demo", help="run, and load the demo shop's catalog and history (open /demo)"
    )
    demo.set_defaults(workers=1, worker_index=None, worker_dir=None)
    replay_parser = commands.add_parser(
        "replay", help="publish historical events from a JSONL or CSV file to the broker"
    )
    replay.add_arguments(replay_parser)
    evaluate_parser = commands.add_parser(
        "evaluate", help="measure next-item prediction on a JSONL event file, with baselines"
    )
    evaluate.add_arguments(evaluate_parser)
    for command in (run, demo, replay_parser, evaluate_parser):
        command.add_argument(
            "--config", metavar="PATH", help="config file (default: ./config.toml if present)"
        )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from recsrv.config import Config
    from recsrv.logs import configure_logging

    try:
        config = Config.load(args.config)
    except ConfigError as exc:
        print(f"recsrv: invalid configuration: {exc}", file=sys.stderr)
        return 2
    place = None
    if args.command in ("run", "demo"):
        from recsrv import workers

        refusal = workers.refusal(args.workers, config)
        if refusal is not None:
            print(f"recsrv: {refusal}", file=sys.stderr)
            return 2
        if args.worker_index is not None:
            if args.worker_dir is None:
                print("recsrv: --worker-index needs --worker-dir", file=sys.stderr)
                return 2
            place = workers.WorkerPlace(args.worker_index, args.workers, args.worker_dir)
            config = place.configure(config)
    # `recsrv evaluate --json` and `recsrv replay` print their results; logs must not mix in.
    serving = args.command in ("run", "demo")
    if serving:
        configure_logging(config.log, instance=config.server.instance_name())
    else:
        configure_logging(config.log, sys.stderr)
    try:
        if args.command == "replay":
            from recsrv import replay

            return replay.main(args, config)
        if args.command == "evaluate":
            from recsrv.evaluation import command as evaluate

            return evaluate.main(args, config)
        if args.workers > 1 and place is None:
            return workers.supervise(config, args.workers, args.config)
        from recsrv.app import run

        return run(config, demo=args.command == "demo", worker=place)
    except RecsrvError as exc:
        print(f"recsrv: {exc}", file=sys.stderr)
        return 1
