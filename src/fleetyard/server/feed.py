"""Wakes long-polling agents when assignments for their host appear in the store.

The controller writes assignments in another process (maybe on another machine), so this
process watches the store: one cheap query every ``interval_s`` while any agent waits, shared by
all waiters, instead of one query per waiter. When no assignment has appeared for ``IDLE_AFTER_S``
the query runs every ``idle_interval_s`` instead: an idle server spent a sixth of a core on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from starlette.concurrency import run_in_threadpool

from fleetyard.server.services.agents import hosts_with_pending
from fleetyard.store.db import Store

log = logging.getLogger(__name__)

IDLE_AFTER_S = 2.0


class AssignmentFeed:
    def __init__(self, store: Store, interval_s: float = 0.01, idle_interval_s: float = 0.05) -> None:
        self.store = store
        self.interval_s = interval_s
        self.idle_interval_s = max(interval_s, idle_interval_s)
        self._last_found = time.monotonic()
        self._waiting: dict[str, asyncio.Event] = {}
        self._waiters: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    def subscribe(self, host: str) -> asyncio.Event:
        ev = self._waiting.setdefault(host, asyncio.Event())
        ev.clear()
        self._waiters[host] = self._waiters.get(host, 0) + 1
        return ev

    def unsubscribe(self, host: str) -> None:
        n = self._waiters.get(host, 0) - 1
        if n <= 0:
            self._waiters.pop(host, None)
            self._waiting.pop(host, None)
        else:
            self._waiters[host] = n

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            idle = time.monotonic() - self._last_found > IDLE_AFTER_S
            await asyncio.sleep(self.idle_interval_s if idle else self.interval_s)
            if not self._waiting:
                continue
            try:
                hosts = await run_in_threadpool(hosts_with_pending, self.store)
            except Exception:  # the store may be briefly unavailable; waiters time out meanwhile
                log.exception("assignment feed query failed")
                await asyncio.sleep(1.0)
                continue
            if hosts:
                self._last_found = time.monotonic()
            for host in hosts:
                ev = self._waiting.get(host)
                if ev is not None:
                    ev.set()
