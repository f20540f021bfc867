#!/usr/bin/env python3
"""Rewrite an event file so that its history comes first and its test period after.

`recsrv evaluate FILE --split S` predicts each test session where its events lie in the
file. In a file whose rows are shuffled in time (MovieLens' `u.data`), a test session
then comes at a random point of the replay, with on average half the history learnt,
where the same file sorted by time has learnt it all; the file order scores lower for
that reason alone, whatever the model does with events out of order. This script
separates the two effects: it writes the lines of every session outside the test set
of `--split` first, then the lines of the test sessions, each part in the file's own
order, byte for byte. `recsrv evaluate OUT --split S` (file order) then learns the
whole history in the file's disorder before it predicts, as the time order does, so
what is left between it and `--order time` is what the disorder itself costs.

    python scripts/history_first.py movielens.jsonl --split time:0.8 -o history-first.jsonl

The test set is chosen by the code `recsrv evaluate` runs, so it is the same sessions.
Lines that are not interactions of a test session (catalog events, blank lines) go
with the history.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path

import orjson

from recsrv.evaluation.dataset import parse_lines, select_test_sessions


def history_first(lines: Iterable[bytes], test: set[str]) -> tuple[list[bytes], list[bytes]]:
    """The lines outside the `test` sessions, and those inside, each in their order."""
    history: list[bytes] = []
    tested: list[bytes] = []
    for line in lines:
        session = _session_of(line)
        (tested if session in test else history).append(line)
    return history, tested


def _session_of(line: bytes) -> str | None:
    if not line.strip():
        return None
    try:
        event = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None  # recsrv evaluate reports it; it stays where the history is
    session = event.get("session_id") if isinstance(event, dict) else None
    return session if isinstance(session, str) else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path, help="JSONL file of events")
    parser.add_argument(
        "--split", default="time:0.8", help="as recsrv evaluate's (default time:0.8)"
    )
    parser.add_argument("-o", "--out", type=Path, required=True, help="file to write")
    args = parser.parse_args(argv)
    with args.file.open("rb") as source:
        lines = [line if line.endswith(b"\n") else line + b"\n" for line in source]
    test = select_test_sessions(parse_lines(lines), args.split)  # as recsrv evaluate reads it
    history, tested = history_first(lines, test)
    with args.out.open("wb") as out:
        out.writelines(history)
        out.writelines(tested)
    print(
        f"{args.out}: {len(history):,} lines of history, then {len(tested):,} of the "
        f"{len(test):,} test sessions",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
