"""Reading a JSONL event file for evaluation, and choosing its test sessions.

Pure code apart from `read_events`, which only reads the file. Events are validated
by the same parser the server uses; a line that fails is reported with its number
and left out.

`Dataset.events` holds the events in the file's order (which may be far from `ts`
order: files are often grouped by session or by user); runner.py decides the order
of the replay.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson

from recsrv.errors import EventError, RecsrvError
from recsrv.events import Event, Interaction, parse_element

# Interactions that say "this shopper went to this item": the sequence to predict.
SEQUENCE_TYPES = frozenset({"view", "click", "add_to_cart", "purchase"})
LAST_SESSION_PER_USER = "last-session-per-user"


class SplitError(RecsrvError):
    """A split that cannot be made from the file (bad spec, or no test sessions)."""


@dataclass
class Dataset:
    events: list[Event] = field(default_factory=list)
    # (line number, reason) of each line left out.
    invalid: list[tuple[int, str]] = field(default_factory=list)
    # session id → (time of its first interaction, its user id or None)
    sessions: dict[str, tuple[float, str | None]] = field(default_factory=dict)
    # Sequence events per item over the whole file (for the popularity-rank metric).
    item_counts: Counter[str] = field(default_factory=Counter)

    def add(self, event: Event) -> None:
        self.events.append(event)
        if type(event) is not Interaction:
            return
        start, user = self.sessions.get(event.session_id, (event.ts, None))
        self.sessions[event.session_id] = (min(start, event.ts), user or event.user_id)
        if event.item_id is not None and event.type in SEQUENCE_TYPES:
            self.item_counts[event.item_id] += 1


def sequence_item(event: Event) -> str | None:
    """The item an interaction moves the session to, if it is one to predict."""
    if type(event) is Interaction and event.type in SEQUENCE_TYPES:
        return event.item_id
    return None


def parse_lines(lines: Iterable[bytes]) -> Dataset:
    """Events of JSONL lines (blank ones skipped), in the file's order, which the replay
    keeps by default: nothing here sorts. An event without `ts` takes the time of the
    event before it, so it stays next to that event when the replay sorts by time."""
    data = Dataset()
    last_ts = 0.0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            event = parse_element(orjson.loads(line), default_ts=last_ts)
        except orjson.JSONDecodeError as exc:
            data.invalid.append((number, f"not JSON: {exc}"))
            continue
        except EventError as exc:
            data.invalid.append((number, str(exc)))
            continue
        if math.isfinite(event.ts):
            last_ts = event.ts
        data.add(event)
    return data


def read_events(path: Path) -> Dataset:
    try:
        with path.open("rb") as source:
            return parse_lines(source)
    except OSError as exc:
        raise RecsrvError(f"cannot read {path}: {exc.strerror or exc}") from exc


def select_test_sessions(data: Dataset, split: str) -> set[str]:
    """The ids of the sessions to evaluate, by `split`:

    - `last-session-per-user`: each user's last session (by start time; a tie goes to
      the session that appears later in the file);
    - `time:F` (0 < F < 1): the sessions that start after the F quantile of start times.
    """
    if split == LAST_SESSION_PER_USER:
        chosen = _last_session_per_user(data.sessions.items())
        if not chosen:
            raise SplitError(
                "no session carries a user_id, so there is no last session per user: "
                "use --split time:0.8"
            )
        return chosen
    if split.startswith("time:"):
        fraction = _fraction(split.removeprefix("time:"))
        starts = np.array([start for start, _ in data.sessions.values()], dtype=np.float64)
        if not len(starts):
            raise SplitError("the file has no sessions")
        threshold = float(np.quantile(starts, fraction))
        chosen = {sid for sid, (start, _) in data.sessions.items() if start > threshold}
        if not chosen:
            raise SplitError(f"no session starts after the {fraction} quantile of start times")
        return chosen
    raise SplitError(f"unknown split {split!r}: use {LAST_SESSION_PER_USER} or time:F")


def _last_session_per_user(sessions: Iterable[tuple[str, tuple[float, str | None]]]) -> set[str]:
    last: dict[str, tuple[float, str]] = {}
    for session_id, (start, user) in sessions:
        if user is not None and (user not in last or start >= last[user][0]):
            last[user] = (start, session_id)
    return {session_id for _, session_id in last.values()}


def _fraction(text: str) -> float:
    try:
        fraction = float(text)
    except ValueError:
        fraction = math.nan
    if not 0.0 < fraction < 1.0:
        raise SplitError(f"time:F needs a fraction F between 0 and 1, not {text!r}")
    return fraction
