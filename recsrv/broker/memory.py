"""In-process event log for embedded mode: an append-only list, offsets from 0.

It lives as long as the process: after a restart there is nothing to replay.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from recsrv.broker import Delivery, InvalidCopy


class MemoryEventLog:
    describe = "memory:// (in-process event log, not kept across restarts)"

    def __init__(self) -> None:
        self.messages: list[Delivery] = []
        self.invalid: list[InvalidCopy] = []
        self._grown = asyncio.Condition()
        self._closed = False

    async def start(self) -> None:
        self._closed = False

    async def publish(self, body: bytes, routing_key: str) -> None:
        async with self._grown:
            self.messages.append(Delivery(len(self.messages), body, time.time()))
            self._grown.notify_all()

    async def publish_invalid(self, copy: InvalidCopy) -> None:
        self.invalid.append(copy)

    async def consume(self, start_offset: int | None) -> AsyncIterator[Delivery]:
        position = 0 if start_offset is None else max(start_offset, 0)
        while not self._closed:
            while position < len(self.messages):
                yield self.messages[position]
                position += 1
            async with self._grown:
                while not self._closed and position >= len(self.messages):
                    await self._grown.wait()

    async def end_offset(self) -> int:
        return len(self.messages) - 1

    async def close(self) -> None:
        self._closed = True
        async with self._grown:
            self._grown.notify_all()
