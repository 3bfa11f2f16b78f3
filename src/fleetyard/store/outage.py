"""Riding out a store outage: a process that cannot reach the database waits (with backoff) for
up to a configured time, then gives up with :data:`EXIT_STORE_UNAVAILABLE`, for a service manager
to restart it or an operator to see."""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field

from fleetyard.errors import StoreUnavailable

__all__ = ["DEFAULT_OUTAGE_S", "EXIT_STORE_UNAVAILABLE", "Outage"]

log = logging.getLogger(__name__)

# Minutes, like the database's own failover: a restart or a standby's promotion takes that long.
DEFAULT_OUTAGE_S = 300.0
EXIT_STORE_UNAVAILABLE = 75  # EX_TEMPFAIL: try again later


@dataclass
class Outage:
    """How long the store has failed without a break, for one process (``limit_s``: give up after)."""

    limit_s: float = DEFAULT_OUTAGE_S
    what: str = "the store"
    since: float | None = None
    _failures: int = field(default=0, repr=False)

    def ok(self) -> None:
        """The store answered: any outage is over."""
        if self.since is not None:
            log.info("%s answers again after %.1f s", self.what, time.monotonic() - self.since)
        self.since, self._failures = None, 0

    def failed(self, exc: BaseException) -> float:
        """Record a failure; the seconds to wait before trying again. Raises
        :class:`StoreUnavailable` once the store has failed for longer than ``limit_s``."""
        t = time.monotonic()
        if self.since is None:
            self.since = t
            log.warning(
                "%s is unavailable (%s); retrying for up to %.0f s", self.what, type(exc).__name__, self.limit_s
            )
        if t - self.since > self.limit_s:
            raise StoreUnavailable(
                f"{self.what} has not answered for {t - self.since:.0f} s: giving up ({exc})",
                detail={"limit_s": self.limit_s},
            ) from exc
        self._failures += 1
        d = min(5.0, 0.25 * 2 ** min(self._failures, 8))
        return random.uniform(d / 2, d)
