"""structlog set-up: JSON lines in production, readable output on a terminal.

log.format "json" writes one JSON object per line to stdout (with `event`, `level`,
`timestamp` and whatever the code and the request context bound); "console" writes
aligned, readable lines, coloured on a terminal; "auto" (the default) picks console
when stdout is a terminal and JSON otherwise (a container, a pipe, a service manager).

Context bound with `structlog.contextvars.bind_contextvars` (request and session ids,
bound per request by the HTTP middleware) appears in every line logged while it is
bound. Records of the libraries that log through the standard library (aiohttp,
aio-pika, pymongo) go through the same renderer, so stdout stays one format.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Final, TextIO

import orjson
import structlog
from structlog.tracebacks import ExceptionDictTransformer

from recsrv.config import LogConfig

# Tracebacks as data, without each frame's local variables: they would put request
# bodies, keys and whole configurations into the logs.
_JSON_TRACEBACKS: Final = structlog.processors.ExceptionRenderer(
    ExceptionDictTransformer(show_locals=False)
)


def configure_logging(
    config: LogConfig, out: TextIO | None = None, instance: str | None = None
) -> None:
    """Configure structlog and the standard library's root logger to write to `out`
    (stdout by default; the offline commands log to stderr, their output is stdout).
    `instance`: the server's name (server.instance), put in every line."""
    out = sys.stdout if out is None else out
    level = logging.getLevelNamesMapping()[config.level.upper()]
    console = use_console(config.format, out)
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    if instance is not None:
        shared.append(_add_instance(instance))
    processors: list[structlog.typing.Processor] = list(shared)
    factory: Any
    if console:
        processors.append(
            structlog.dev.ConsoleRenderer(
                colors=_is_terminal(out), exception_formatter=structlog.dev.plain_traceback
            )
        )
        factory = structlog.PrintLoggerFactory(out)
    else:
        # Bytes straight from orjson to the binary buffer: no decode, no re-encode.
        processors += [
            _JSON_TRACEBACKS,
            structlog.processors.JSONRenderer(serializer=orjson.dumps),
        ]
        factory = structlog.BytesLoggerFactory(out.buffer)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    _route_standard_logging(out, level, shared, console)


def _add_instance(instance: str) -> structlog.typing.Processor:
    def add(_: Any, __: str, event_dict: structlog.typing.EventDict) -> structlog.typing.EventDict:
        event_dict.setdefault("instance", instance)
        return event_dict

    return add


def use_console(log_format: str, stream: TextIO) -> bool:
    """Whether log.format asks for the console renderer on this stream."""
    return log_format == "console" or (log_format == "auto" and _is_terminal(stream))


class _RecsrvHandler(logging.StreamHandler[TextIO]):
    """The root handler configure_logging installs (replaced when it runs again)."""


def _route_standard_logging(
    out: TextIO, level: int, shared: list[structlog.typing.Processor], console: bool
) -> None:
    """Render standard-library records like structlog's, on the same stream.

    Libraries keep their warnings and errors; their info and debug chatter is dropped.
    """
    final: list[structlog.typing.Processor] = [
        structlog.stdlib.ProcessorFormatter.remove_processors_meta
    ]
    if console:
        final.append(
            structlog.dev.ConsoleRenderer(
                colors=_is_terminal(out), exception_formatter=structlog.dev.plain_traceback
            )
        )
    else:
        final += [
            _JSON_TRACEBACKS,
            structlog.processors.JSONRenderer(serializer=_json_text),
        ]
    handler = _RecsrvHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared], processors=final
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _RecsrvHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(max(level, logging.WARNING))


def _json_text(value: Any, **kwargs: Any) -> str:
    # The standard library's formatter must return text.
    return orjson.dumps(value, **kwargs).decode()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except ValueError:  # closed
        return False
