"""The checkpoint writer's lease: of the replicas that share a store, one at a time
writes checkpoints (and prunes them); all of them restore from the newest.

The store guarantees the lease (recsrv.store: an atomic conditional update in
MongoDB, a file lock for the file store). `CheckpointLease.keep` asks for it, or
renews it, every third of `store.lease_s` while this replica holds it, and every
RETRY_S while another does, so that a replica takes over soon after the writer's lease
runs out. This replica counts the lease as its own for two thirds of `lease_s` after
the start of its last successful renewal: a third of a lease less than the store
grants, a margin for clocks and pauses, and time for one failed renewal.

A replica restarted under the same `server.instance` takes its own lease back at once;
one under a new name (the default, host and pid) waits until the old lease expires.
"""

from __future__ import annotations

import asyncio
import time
from typing import Final

import structlog

from recsrv.errors import StoreError
from recsrv.store import CheckpointStore

logger = structlog.get_logger("recsrv.lease")

# How often a replica that does not hold the lease asks for it (at most).
RETRY_S: Final = 1.0


class CheckpointLease:
    def __init__(self, store: CheckpointStore, holder: str, lease_s: float) -> None:
        self.store = store
        self.holder = holder
        self.lease_s = lease_s
        # Who held it at the last answer ("" before any, or when it was free).
        self.seen_holder = ""
        self._held_until = 0.0  # time.monotonic()

    @property
    def held(self) -> bool:
        return time.monotonic() < self._held_until

    async def renew(self) -> bool:
        """Take or renew the lease now; whether this replica holds it afterwards. A
        store that fails leaves the lease counted as before, until it runs out."""
        started = time.monotonic()
        was_held = self.held
        try:
            holder = await self.store.take_lease(self.holder, self.lease_s)
        except StoreError as exc:
            logger.debug("checkpoint_lease_unknown", error=str(exc))
            return self.held
        if holder == self.holder:
            self._held_until = started + self.lease_s * 2 / 3
            if not was_held:
                logger.info("checkpoint_lease_taken", lease_s=self.lease_s)
        else:
            self._held_until = 0.0
            if was_held:
                logger.warning("checkpoint_lease_lost", holder=holder)
            elif holder != self.seen_holder and holder:
                logger.info("checkpoint_lease_held_elsewhere", holder=holder)
        self.seen_holder = holder
        return holder == self.holder

    async def keep(self) -> None:
        """Renew while held, ask while not; until cancelled."""
        while True:
            held = await self.renew()
            await asyncio.sleep(self.lease_s / 3 if held else min(RETRY_S, self.lease_s / 3))

    async def release(self) -> None:
        """Give the lease up (at shutdown), so that another replica takes it at once."""
        if not self.held:
            return
        self._held_until = 0.0
        try:
            await self.store.release_lease(self.holder)
        except StoreError as exc:
            logger.warning("checkpoint_lease_not_released", error=str(exc))
            return
        logger.info("checkpoint_lease_released")
