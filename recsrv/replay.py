"""`recsrv replay FILE`: publish historical events from a JSONL or CSV file to RabbitMQ.

    recsrv replay events.jsonl
    recsrv replay orders.csv --column item_id=product_id --column session_id=order_id \\
        --column ts=timestamp --default type=add_to_cart

Reading and validation are in recsrv/history.py (pure); this module is the I/O: the
file, the broker, the state file, signals and the progress output.

Publishing: events are sent in file order as JSON arrays of up to --batch events per
message (never more than broker.max_message_events, and about 1 MiB at most) to
broker.exchange with routing key "replay", through AmqpEventLog (the same
declarations as the server), with publisher confirms. Up to --window messages are in
flight at once on one channel, so the stream still holds them in publish order.
--rate limits the events per second (batches then shrink to a tenth of a second's
worth, so progress stays smooth).

Order: events are published in the file's order, whatever their `ts`; files are
often grouped by session or by user, and the server learns events that come after a
newer one. Before publishing, a first pass over the lines to publish counts the events
whose ts is below the newest before them, and those more than sessions.ttl_s +
sessions.allowed_lateness_s below it (their session may be gone from the server), and
warns with both counts when there are any (JSONL lines are validated in that pass,
not encoded, so it costs about half a publishing parse).

Resume: after confirmed batches (at most ten times a second, and always when
stopping) the last line whose message is confirmed, and every line before it, is
saved in a state file (FILE.replay-state, or --state) with the byte offset after it.
Running the same command again resumes after that line; --restart starts over. The
state also records a hash of the file's first 64 KiB and the format and column
options, and a resume refuses a file or options that changed (--restart is then the
way). A file that was replayed to its end and has grown since publishes only the new
lines. SIGINT or SIGTERM stops reading, waits for the messages in flight to be
confirmed, saves, prints how to resume and exits with 130 (SIGINT) or 143 (SIGTERM); a
second signal stops without waiting. The resume may publish again the messages that
were in flight when a run was cut short (after a kill or a crash, also those confirmed
in its last tenth of a second): every event carries an event_id (history.py derives
one for a line without it), so the server ignores the copies as long as they are
within its de-duplication window (model.dedup_window, 100,000 ids by default, against
at most --window times --batch events in flight).

Output, on stderr: a tqdm progress bar (lines done, rate, ETA, events published,
invalid lines) on a terminal, else one progress line every --progress-interval
seconds; `line N: reason` for each invalid line (the first --max-errors of them, then
a count); always a final summary line. Invalid lines are skipped, never fatal.

Exit status: 0 when the file was processed to its end; 3 when it was but some lines
were invalid and --strict was given, or no line at all was valid; 2 for a usage error
(bad options, a CSV header without the mapped columns, broker.url memory://); 1 for
a missing file, an unusable state file or a broker failure; 130/143 when interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import math
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final

import orjson

from recsrv import history
from recsrv.config import Config, redact_url
from recsrv.errors import BrokerError, EventError, RecsrvError
from recsrv.evaluation.metrics import Disorder
from recsrv.events import parse_element

if TYPE_CHECKING:
    from recsrv.broker.amqp import AmqpEventLog

ROUTING_KEY: Final = "replay"
MAX_MESSAGE_BYTES: Final = 1 << 20
HEAD_BYTES: Final = 65_536
"""How much of the start of the file a resume checks is unchanged."""
STATE_VERSION: Final = 1
SAVE_EVERY_S: Final = 0.1
EXIT_INVALID: Final = 3
EXIT_USAGE: Final = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Publish the events of FILE (JSONL or CSV) to broker.url, in order."
    parser.add_argument("file", metavar="FILE", help="JSONL (one event per line) or CSV file")
    parser.add_argument(
        "--format", choices=history.FORMATS, help="default: csv for .csv/.tsv files, else jsonl"
    )
    parser.add_argument(
        "--column",
        action="append",
        default=[],
        metavar="FIELD=COLUMN",
        help="CSV: take event FIELD from header COLUMN (repeatable)",
    )
    parser.add_argument(
        "--default",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="CSV: constant VALUE for FIELD where it has no column or an empty cell",
    )
    parser.add_argument("--delimiter", help="CSV field delimiter (default ',', tab for .tsv)")
    parser.add_argument(
        "--batch", type=int, default=500, metavar="N", help="events per message (default 500)"
    )
    parser.add_argument(
        "--window", type=int, default=16, metavar="N", help="messages awaiting confirms (16)"
    )
    parser.add_argument("--rate", type=float, metavar="N", help="at most N events per second")
    parser.add_argument("--state", metavar="PATH", help="progress file (default FILE.replay-state)")
    parser.add_argument("--restart", action="store_true", help="ignore saved progress, start over")
    parser.add_argument(
        "--strict", action="store_true", help="exit with status 3 if any line is invalid"
    )
    parser.add_argument(
        "--max-errors",
        type=int,
        default=100,
        metavar="N",
        help="print at most N invalid lines (default 100; all are counted)",
    )
    parser.add_argument(
        "--progress-interval",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds between progress lines when stderr is not a terminal (default 10)",
    )


def main(args: argparse.Namespace, config: Config) -> int:
    try:
        options = Options.from_args(
            args, config.broker.max_message_events, config.model.dedup_window
        )
    except ValueError as exc:
        return _usage(str(exc))
    if config.broker.url == "memory://":
        return _usage(
            "broker.url is memory://, an in-process log that no other process can reach: "
            "replay needs RabbitMQ; set broker.url (or RECSRV_BROKER__URL) to amqp://…"
        )
    try:
        source = InputFile.open(options)
    except ValueError as exc:  # the CSV header does not fit the mapping
        return _usage(str(exc))
    with source:
        try:
            return Replay(options, config, source).run()
        except KeyboardInterrupt:  # before the signal handlers were in place
            print("recsrv replay: interrupted", file=sys.stderr)
            return 128 + signal.SIGINT


def _usage(message: str) -> int:
    print(f"recsrv replay: {message}", file=sys.stderr)
    return EXIT_USAGE


# ----------------------------------------------------------------------- options


@dataclass(frozen=True)
class Options:
    path: Path
    format: str
    mapping: history.CsvMapping | None
    batch: int
    window: int
    rate: float | None
    state_path: Path
    restart: bool
    strict: bool
    max_errors: int
    progress_interval: float

    @classmethod
    def from_args(
        cls, args: argparse.Namespace, max_message_events: int, dedup_window: int
    ) -> Options:
        """Checked options; ValueError names the bad one."""
        path = Path(args.file)
        fmt = history.detect_format(args.file, args.format)
        mapping = None
        if fmt == history.CSV:
            tab = args.delimiter is None and args.file.lower().endswith(".tsv")
            delimiter = "\t" if tab else (args.delimiter or ",")
            mapping = history.CsvMapping.from_options(args.column, args.default, delimiter)
        elif args.column or args.default or args.delimiter:
            raise ValueError("--column, --default and --delimiter apply to CSV input only")
        if not 1 <= args.batch <= max_message_events:
            raise ValueError(
                f"--batch must be from 1 to {max_message_events} (broker.max_message_events)"
            )
        if not 1 <= args.window <= 1000:
            raise ValueError("--window must be from 1 to 1000")
        if args.window * args.batch > dedup_window:
            # more events in doubt after a crash than the server remembers ids for
            raise ValueError(
                f"--window times --batch must stay within model.dedup_window ({dedup_window})"
            )
        if args.rate is not None and not 0 < args.rate < math.inf:
            raise ValueError("--rate must be a positive number of events per second")
        if args.max_errors < 0 or not 0 < args.progress_interval < math.inf:
            raise ValueError("--max-errors must be >= 0 and --progress-interval > 0")
        batch = args.batch
        if args.rate is not None:  # a tenth of a second's worth per message, for smooth pacing
            batch = min(batch, max(1, math.ceil(args.rate / 10)))
        state_path = Path(args.state) if args.state else Path(f"{args.file}.replay-state")
        return cls(
            path=path,
            format=fmt,
            mapping=mapping,
            batch=batch,
            window=args.window,
            rate=args.rate,
            state_path=state_path,
            restart=args.restart,
            strict=args.strict,
            max_errors=args.max_errors,
            progress_interval=args.progress_interval,
        )

    def fingerprint(self) -> dict[str, Any]:
        """What must stay the same for a resume to give the same events and ids."""
        mapping = self.mapping.describe() if self.mapping is not None else None
        return {"format": self.format, "mapping": mapping}


# ----------------------------------------------------------------------- the file


class InputFile:
    """The input, read in binary so that byte offsets can be saved and sought."""

    def __init__(self, options: Options, handle: IO[bytes]) -> None:
        self.options = options
        self.handle = handle
        self.parse: history.LineParser = history.parse_jsonl
        self.data_start = (0, 0)  # (last line before the data, its end offset)
        if options.mapping is not None:
            header = next(history.split_lines(handle, quoted=True), None)
            if header is None:
                raise RecsrvError(f"{options.path} is empty: a CSV file needs a header line")
            self.parse = options.mapping.parser(header)
            self.data_start = (header.last, header.end)

    @classmethod
    def open(cls, options: Options) -> InputFile:
        try:
            handle = options.path.open("rb")
        except OSError as exc:
            raise RecsrvError(f"cannot read {options.path}: {exc.strerror}") from exc
        try:
            return cls(options, handle)
        except BaseException:
            handle.close()
            raise

    def __enter__(self) -> InputFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.close()

    def size(self) -> int:
        return os.fstat(self.handle.fileno()).st_size

    def head_digest(self, length: int) -> str:
        self.handle.seek(0)
        return hashlib.blake2b(self.handle.read(length), digest_size=16).hexdigest()

    def byte_at(self, offset: int) -> bytes:
        self.handle.seek(offset)
        return self.handle.read(1)

    def count_lines(self, offset: int) -> int:
        """Physical lines from offset to the end (for the progress bar's total)."""
        self.handle.seek(offset)
        count, last = 0, b"\n"
        while chunk := self.handle.read(1 << 20):
            count += chunk.count(b"\n")
            last = chunk[-1:]
        return count + (last != b"\n")

    def lines(self, after: Position) -> Iterator[history.Line]:
        self.handle.seek(after.offset)
        return history.split_lines(
            self.handle,
            number=after.line + 1,
            offset=after.offset,
            quoted=self.options.format == history.CSV,
        )

    def times(self, after: Position) -> Iterator[float | None]:
        """The ts of each valid event after `after`, None for one without (the server
        stamps it), as the events to publish would carry it."""
        if self.options.mapping is not None:
            for line in self.lines(after):
                parsed = self.parse(line)
                if isinstance(parsed, history.Valid):
                    yield parsed.event.get("ts")
            return
        for line in self.lines(after):  # JSONL: validated as history.parse_jsonl does
            if not line.text.strip():
                continue
            try:
                obj = orjson.loads(line.text)
                event = parse_element(obj, default_ts=0.0)
            except (orjson.JSONDecodeError, EventError):
                continue
            yield None if obj.get("ts") is None else event.ts

    def batches(self, after: Position) -> Iterator[history.Batch]:
        lines = self.lines(after)
        max_events = self.options.batch
        return history.batches(
            lines, self.parse, max_events=max_events, max_bytes=MAX_MESSAGE_BYTES
        )


# ----------------------------------------------------------------------- state


@dataclass(frozen=True)
class Position:
    """How far the file is done: every line up to `line` (ending at byte `offset`)."""

    line: int
    offset: int
    published: int = 0
    invalid: int = 0

    def after(self, batch: history.Batch) -> Position:
        return Position(
            batch.last_line,
            batch.end,
            self.published + len(batch.events),
            self.invalid + len(batch.bad),
        )


class StateFile:
    """The saved Position of one input file, written atomically."""

    def __init__(self, options: Options, source: InputFile) -> None:
        self.path = options.state_path
        self.options = options
        self.source = source
        self.head_bytes = min(source.size(), HEAD_BYTES)
        self.head = source.head_digest(self.head_bytes)
        self._saved_at = 0.0

    def load(self) -> Position | None:
        """The saved position, if any; RecsrvError if it belongs to another file."""
        try:
            data = orjson.loads(self.path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, orjson.JSONDecodeError) as exc:
            raise self._refusal(f"cannot be read ({exc})") from exc
        try:
            position = Position(
                int(data["line"]), int(data["offset"]), int(data["published"]), int(data["invalid"])
            )
            head_bytes, head, options = int(data["head_bytes"]), data["head"], data["options"]
        except (KeyError, TypeError, ValueError) as exc:
            raise self._refusal(f"is not a replay state file ({exc!r})") from exc
        self._check(position, head_bytes, head, options)
        return position

    def _check(self, position: Position, head_bytes: int, head: str, options: object) -> None:
        if options != self.options.fingerprint():
            raise self._refusal(f"was saved with other format or column options: {options}")
        size = self.source.size()
        if (
            size < max(position.offset, head_bytes)
            or self.source.head_digest(head_bytes) != head
            or (0 < position.offset < size and self.source.byte_at(position.offset - 1) != b"\n")
        ):
            raise self._refusal(f"does not match {self.options.path}: the file changed")

    def _refusal(self, problem: str) -> RecsrvError:
        return RecsrvError(
            f"state file {self.path} {problem}; use --restart to publish the whole file again"
        )

    def save(self, position: Position, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._saved_at < SAVE_EVERY_S:
            return
        self._saved_at = now
        data = {
            "version": STATE_VERSION,
            "file": str(self.options.path.resolve()),
            "options": self.options.fingerprint(),
            "head_bytes": self.head_bytes,
            "head": self.head,
            "line": position.line,
            "offset": position.offset,
            "published": position.published,
            "invalid": position.invalid,
            "saved_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        temporary = self.path.with_name(self.path.name + ".tmp")
        try:
            temporary.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
            os.replace(temporary, self.path)
        except OSError as exc:
            raise RecsrvError(f"cannot write the state file {self.path}: {exc.strerror}") from exc


# ----------------------------------------------------------------------- output


class Reporter:
    """Progress, invalid lines and the summary, on stderr."""

    def __init__(self, options: Options, total_lines: int, stream: IO[str] = sys.stderr) -> None:
        self.options = options
        self.stream = stream
        self.total = total_lines
        self.done_lines = 0
        self.published = 0
        self.invalid = 0
        self.shown_errors = 0
        self.started = time.monotonic()
        self._last_line_at = self.started
        self._bar: Any = None  # a tqdm bar on a terminal (tqdm ships no type stubs)
        if stream.isatty():
            from tqdm import tqdm  # type: ignore[import-untyped]

            self._bar = tqdm(
                total=total_lines, unit=" lines", desc="replay", file=stream, dynamic_ncols=True
            )

    def say(self, text: str) -> None:
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def report_bad(self, bad: Sequence[history.Bad]) -> None:
        for record in bad:
            if self.shown_errors < self.options.max_errors:
                self.say(f"line {record.number}: {record.reason}")
            self.shown_errors += 1

    def advance(self, batch: history.Batch, lines: int) -> None:
        """A batch is confirmed: `lines` more lines are done."""
        self.done_lines += lines
        self.published += len(batch.events)
        self.invalid += len(batch.bad)
        if self._bar is not None:
            postfix = f"published={self.published}, invalid={self.invalid}"
            self._bar.set_postfix_str(postfix, refresh=False)
            self._bar.update(lines)
            return
        now = time.monotonic()
        if now - self._last_line_at >= self.options.progress_interval:
            self._last_line_at = now
            self.say(self._meter(now))

    def _meter(self, now: float) -> str:
        from tqdm import tqdm

        postfix = f"published={self.published}, invalid={self.invalid}"
        return str(
            tqdm.format_meter(
                self.done_lines,
                self.total,
                now - self.started,
                unit=" lines",
                prefix="replay",
                ncols=0,
                postfix=postfix,
            )
        )

    def close(self, outcome: str | None, position: Position) -> None:
        """Finish the progress bar and print the summary (none when outcome is None)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if outcome is None:
            return
        if self.shown_errors > self.options.max_errors:
            hidden = self.shown_errors - self.options.max_errors
            self.say(f"replay: {hidden} more invalid lines not shown (--max-errors)")
        elapsed = time.monotonic() - self.started
        rate = self.published / elapsed if elapsed > 0 else 0.0
        self.say(
            f"replay: {outcome}: published {self.published} events, {self.invalid} invalid "
            f"lines, up to line {position.line} of {self.options.path}, "
            f"{elapsed:.1f} s, {rate:.0f} events/s"
        )


# ----------------------------------------------------------------------- the run


def order_warning(disorder: Disorder) -> str | None:
    """The warning for events out of ts order, with their counts; None when there are none."""
    if not disorder.out_of_order:
        return None
    return (
        f"replay: warning: {disorder.out_of_order:,} of {disorder.events:,} events are out "
        f"of ts order ({disorder.beyond_lateness:,} later than sessions.ttl_s + "
        "sessions.allowed_lateness_s behind the newest); the server learns them, "
        'see README "Late and out-of-order events"'
    )


class Replay:
    def __init__(self, options: Options, config: Config, source: InputFile) -> None:
        self.options = options
        self.config = config
        self.source = source
        self.state = StateFile(options, source)
        self.signal: int | None = None

    def run(self) -> int:
        start_line, start_offset = self.source.data_start
        start = Position(start_line, start_offset)
        saved = None if self.options.restart else self.state.load()
        if saved is not None and saved.offset >= start.offset:
            start = saved
        self.state.save(start, force=True)  # fails early if the state cannot be written
        remaining = self.source.count_lines(start.offset)
        reporter = Reporter(self.options, remaining)
        if saved is not None:
            reporter.say(
                f"replay: resuming {self.options.path} after line {saved.line} "
                f"(state in {self.options.state_path}; --restart starts over)"
            )
        if remaining == 0:
            reporter.close("nothing new to publish", start)
            return 0
        warning = order_warning(self._disorder(start))
        if warning is not None:
            reporter.say(warning)
        broker = self.config.broker
        reporter.say(
            f"replay: publishing {remaining} lines of {self.options.path} to exchange "
            f"{broker.exchange!r} at {redact_url(broker.url)}"
        )
        pump = Pump(self, reporter, start)
        try:
            asyncio.run(pump.run())
        except BrokerError:
            if not pump.connected:
                reporter.close(None, start)
                raise
            reporter.close("stopped by a broker error", pump.position)
            self._say_how_to_resume(reporter, pump.position)
            raise
        if self.signal is not None:
            reporter.close("interrupted", pump.position)
            self._say_how_to_resume(reporter, pump.position)
            return 128 + self.signal
        reporter.close("done", pump.position)
        everything_invalid = reporter.invalid > 0 and reporter.published == 0
        return (
            EXIT_INVALID if reporter.invalid and (self.options.strict or everything_invalid) else 0
        )

    def _disorder(self, start: Position) -> Disorder:
        sessions = self.config.sessions
        disorder = Disorder(sessions.ttl_s + sessions.allowed_lateness_s)
        for ts in self.source.times(start):
            disorder.see(ts)
        return disorder

    def _say_how_to_resume(self, reporter: Reporter, position: Position) -> None:
        reporter.say(
            f"replay: progress saved in {self.options.state_path}: run the same command again "
            f"to resume after line {position.line} (--restart starts over)"
        )


class Pump:
    """Reads batches, publishes them with a window of confirms, records what is confirmed."""

    def __init__(self, replay: Replay, reporter: Reporter, start: Position) -> None:
        self.replay = replay
        self.options = replay.options
        self.reporter = reporter
        self.position = start
        self.stop = asyncio.Event()
        self.connected = False
        self._sent_events = 0

    async def run(self) -> None:
        from recsrv.broker.amqp import AmqpEventLog

        log = AmqpEventLog(self.replay.config.broker)
        await log.start()
        self.connected = True
        loop = asyncio.get_running_loop()
        main_task = asyncio.current_task()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self._on_signal, signum, main_task)
        try:
            await self._publish_all(log)
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
            await log.close()

    def _on_signal(self, signum: int, main_task: asyncio.Task[Any] | None) -> None:
        if self.stop.is_set() and main_task is not None:
            main_task.cancel()  # a second signal: stop waiting for confirms
        self.stop.set()
        self.replay.signal = self.replay.signal or signum

    async def _publish_all(self, log: AmqpEventLog) -> None:
        in_flight: deque[tuple[history.Batch, asyncio.Future[None]]] = deque()
        batches = self.replay.source.batches(self.position)
        started = time.monotonic()
        try:
            while not self.stop.is_set():
                batch = next(batches, None)
                if batch is None:
                    break
                self.reporter.report_bad(batch.bad)
                if batch.events and not await self._paced(started):
                    break  # interrupted while waiting for the rate limit
                in_flight.append((batch, self._publish(log, batch)))
                while in_flight and (
                    len(in_flight) >= self.options.window or in_flight[0][1].done()
                ):
                    await self._confirmed(*in_flight.popleft())
            while in_flight:
                await self._confirmed(*in_flight.popleft())
        except asyncio.CancelledError:
            if self.replay.signal is None:
                raise
        finally:
            for _, publishing in in_flight:
                publishing.cancel()
            await asyncio.gather(
                *(publishing for _, publishing in in_flight), return_exceptions=True
            )
            self.replay.state.save(self.position, force=True)

    def _publish(self, log: AmqpEventLog, batch: history.Batch) -> asyncio.Future[None]:
        if not batch.events:
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
        self._sent_events += len(batch.events)
        return asyncio.ensure_future(log.publish(batch.body(), ROUTING_KEY))

    async def _confirmed(self, batch: history.Batch, publishing: asyncio.Future[None]) -> None:
        await publishing
        lines = batch.last_line - self.position.line
        self.position = self.position.after(batch)
        self.reporter.advance(batch, lines)
        self.replay.state.save(self.position)

    async def _paced(self, started: float) -> bool:
        """Wait until the events sent so far keep within --rate; False if stopped meanwhile."""
        if self.options.rate is None:
            return True
        due = started + self._sent_events / self.options.rate
        delay = due - time.monotonic()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), delay)
        return not self.stop.is_set()
