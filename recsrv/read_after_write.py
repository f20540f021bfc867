"""Read after write: a list request with `after=EVENT_ID` waits until that event is
applied (design section 4), so that a backend which has just posted an event reads
a list that includes it, whichever replica answers.

"Applied" means the model remembers the id (its duplicate window, `model.dedup_window`
ids, which a checkpoint keeps) or the consumer applied it during the wait. An id that
was refused as invalid, or that never comes, is waited for until the timeout. The
waiters live on the event loop, as the consumer does: `events_applied` runs after each
delivery, so no event can be applied between the check and the registration.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from recsrv.events import Event
from recsrv.model import Model


class ReadAfterWrite:
    def __init__(self, model: Callable[[], Model]) -> None:
        # Through a callable: a restore swaps the runtime's model.
        self._model = model
        self._waiting: dict[str, list[asyncio.Future[bool]]] = {}

    async def wait(self, event_id: str, timeout_s: float) -> bool:
        """True once `event_id` is applied (at once if it already is), False if
        `timeout_s` runs out first."""
        if event_id in self._model().recent_ids:
            return True
        applied: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(event_id, []).append(applied)
        try:
            return await asyncio.wait_for(applied, timeout_s)
        except TimeoutError:
            return False
        finally:
            self._forget(event_id, applied)

    def events_applied(self, events: Iterable[Event]) -> None:
        """Called with each delivery's events once they are applied."""
        if not self._waiting:
            return
        for event in events:
            if event.event_id is not None:
                for applied in self._waiting.pop(event.event_id, ()):
                    if not applied.done():
                        applied.set_result(True)

    @property
    def waiting(self) -> int:
        """Requests waiting now."""
        return sum(len(futures) for futures in self._waiting.values())

    def _forget(self, event_id: str, applied: asyncio.Future[bool]) -> None:
        futures = self._waiting.get(event_id)
        if futures is not None and applied in futures:
            futures.remove(applied)
            if not futures:
                del self._waiting[event_id]
