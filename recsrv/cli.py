"""Command line: `recsrv run [--config PATH]`, `recsrv demo [--config PATH]`."""

from __future__ import annotations

import argparse
import sys

from recsrv import __version__
from recsrv.errors import ConfigError, RecsrvError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="recsrv", description=__doc__)
    parser.add_argument("--version", action="version", version=f"recsrv {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="serve recommendations (embedded mode by default)")
    demo = commands.add_parser(
        "demo", help="run, and load the demo shop's catalog and history (open /demo)"
    )
    for command in (run, demo):
        command.add_argument(
            "--config", metavar="PATH", help="config file (default: ./config.toml if present)"
        )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Imported late so `recsrv --help` stays fast.
    from recsrv.app import run
    from recsrv.config import Config
    from recsrv.logs import configure_logging

    try:
        config = Config.load(args.config)
    except ConfigError as exc:
        print(f"recsrv: invalid configuration: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.log)
    try:
        return run(config, demo=args.command == "demo")
    except RecsrvError as exc:
        print(f"recsrv: {exc}", file=sys.stderr)
        return 1
