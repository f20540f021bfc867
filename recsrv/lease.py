"""The checkpoint writer's lease: of the replicas that share a store, one at a time
writes checkpoints (and prunes them); all of them restore from the newest.

The store guarantees the lease (recsrv.store: an atomic conditional update in
MongoDB, a file lock for the file store). `CheckpointLease.keep` asks for it, or
renews it, every third of `store.lease_s` while this replica holds it, and every
RETRY_S while another does, so that a replica takes over soon after the writer's lease
runs out. This replica counts the lease as its own for two thirds of `lease_s` after
the start of its last successful renewal: a third of a lease less than the store
grants, a margin for clocks and pauses, and time for one failed renewal.

A replica restarted under the same `server.instance` takes its own lease back at once.
So does one under the default name (host and pid) when the holder's name is the
default name of a process of this host that no longer runs; any other waits until the
old lease expires.
"""

from __future__ import annotations

import asyncio
import os
import socket
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
        """Take or renew the lease now; whether this replica holds it afterwards.
        StoreError when the store fails: the lease then counts as before, until it
        runs out."""
        started = time.monotonic()
        was_held = self.held
        holder = await self.store.take_lease(self.holder, self.lease_s)
        if holder != self.holder and ended_on_this_host(holder):
            holder = await self.store.take_lease(self.holder, self.lease_s, replacing=holder)
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
            try:
                held = await self.renew()
            except StoreError as exc:  # the checkpoints report the outage
                logger.debug("checkpoint_lease_unknown", error=str(exc))
                held = self.held
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


def ended_on_this_host(holder: str) -> bool:
    """Whether `holder` is a default name (server.instance: host and pid) of a process
    of this host that no longer runs. A pid taken again by another process keeps the
    lease in place until it expires, which is merely slower."""
    host, _, pid = holder.rpartition("-")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # it runs, under another user
        return False
    return False
