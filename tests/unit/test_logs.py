"""Log output as an operator sees it: JSON lines off a terminal, readable lines on one.

Each case runs a small program in a child process with stdout on a pipe or on a
pseudo-terminal, so the terminal detection is the real one and no logging
configuration leaks into the test process.
"""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from datetime import datetime, timedelta
from typing import Any

import orjson
import pytest

# Logs what a request handler would, with the context the HTTP middleware binds.
PROGRAM = r"""
import logging, sys
import structlog
from recsrv.config import LogConfig
from recsrv.logs import configure_logging

configure_logging(LogConfig(level=sys.argv[1], format=sys.argv[2]))
log = structlog.get_logger("recsrv.test")
structlog.contextvars.bind_contextvars(request_id="r-1", session_id="s-1")
log.info("request_done", status=200, path="/v1/popular")
log.debug("debug_detail", n=1)
try:
    key = "secret-in-a-local"
    1 / 0
except ZeroDivisionError:
    log.exception("handler_failed")
logging.getLogger("aiohttp.server").warning("library says %s", "careful")
logging.getLogger("aio_pika").info("library chatter")
structlog.contextvars.clear_contextvars()
log.warning("after_request", item="a")
"""

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def run_on_pipe(level: str, log_format: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, level, log_format],
        capture_output=True,
        timeout=30,
        check=True,
    )
    assert done.stderr == b""  # nothing goes around the configured stream
    return done.stdout.decode()


def run_on_terminal(level: str, log_format: str) -> str:
    """stdout on a pseudo-terminal, as in an interactive shell."""
    controller, terminal = pty.openpty()
    try:
        process = subprocess.Popen(
            [sys.executable, "-c", PROGRAM, level, log_format],
            stdout=terminal,
            stderr=subprocess.PIPE,
        )
        os.close(terminal)
        output = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
        _, stderr = process.communicate(timeout=30)
    finally:
        os.close(controller)
    assert process.returncode == 0, stderr
    return output.decode().replace("\r\n", "\n")


def json_lines(output: str) -> list[dict[str, Any]]:
    lines = output.splitlines()
    assert lines, "no output"
    return [orjson.loads(line) for line in lines]


def by_event(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {line["event"]: line for line in lines}


def test_json_lines_off_a_terminal_carry_level_time_and_bound_context() -> None:
    before = datetime.now().astimezone()
    lines = json_lines(run_on_pipe("info", "auto"))
    events = by_event(lines)
    assert list(events) == [
        "request_done",
        "handler_failed",
        "library says careful",
        "after_request",
    ]
    done = events["request_done"]
    assert done["level"] == "info"
    assert (done["status"], done["path"]) == (200, "/v1/popular")
    assert (done["request_id"], done["session_id"]) == ("r-1", "s-1")
    stamp = datetime.fromisoformat(done["timestamp"])
    assert stamp.utcoffset() == timedelta(0)
    assert before - timedelta(seconds=1) <= stamp <= datetime.now().astimezone()
    # The exception is structured, not a multi-line text in the middle of the stream.
    failed = events["handler_failed"]
    assert failed["level"] == "error"
    assert failed["request_id"] == "r-1"
    [exception] = failed["exception"]
    assert exception["exc_type"] == "ZeroDivisionError"
    assert exception["frames"]
    # Without local variables: they would leak request bodies and keys into the logs.
    assert all("locals" not in frame for frame in exception["frames"])
    assert b"secret-in-a-local" not in orjson.dumps(failed)
    # Libraries' records: same format, same context, warnings kept and chatter dropped.
    library = events["library says careful"]
    assert (library["level"], library["logger"]) == ("warning", "aiohttp.server")
    assert library["request_id"] == "r-1"
    assert "timestamp" in library
    # Context unbound at the end of a request is gone from later lines.
    after = events["after_request"]
    assert (after["level"], after["item"]) == ("warning", "a")
    assert "request_id" not in after and "session_id" not in after


def test_log_level_debug_shows_debug_lines() -> None:
    events = by_event(json_lines(run_on_pipe("debug", "json")))
    assert events["debug_detail"]["level"] == "debug"
    assert events["debug_detail"]["request_id"] == "r-1"
    assert "library chatter" not in events  # libraries stay at warning and above


def test_format_json_is_kept_on_a_terminal() -> None:
    events = by_event(json_lines(run_on_terminal("info", "json")))
    assert events["request_done"]["request_id"] == "r-1"


def test_console_on_a_terminal_is_readable_and_coloured() -> None:
    output = run_on_terminal("info", "auto")
    assert ANSI.search(output)
    text = ANSI.sub("", output)
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(text.splitlines()[0])
    [line] = [line for line in text.splitlines() if "request_done" in line]
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z \[info\s*\] request_done", line)
    for pair in ("request_id=r-1", "session_id=s-1", "status=200", "path=/v1/popular"):
        assert pair in line
    assert "ZeroDivisionError" in text  # the traceback, printed for a person
    assert "library says careful" in text
    [after] = [line for line in text.splitlines() if "after_request" in line]
    assert "request_id" not in after


def test_console_format_on_a_pipe_has_no_colour_codes() -> None:
    output = run_on_pipe("info", "console")
    assert not ANSI.search(output)
    [line] = [line for line in output.splitlines() if "request_done" in line]
    assert "[info" in line and "request_id=r-1" in line
    assert "debug_detail" not in output
