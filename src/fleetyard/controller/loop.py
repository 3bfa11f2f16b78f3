"""``fleetyard controller``: the reconcile loops in their own process.

fleetyard controller --data-dir .fleetyard        # SQLite; leader by file lock
fleetyard controller --db postgresql://…          # leader by advisory lock; others stand by
fleetyard controller --health health.yaml         # health checks and remediation per generation
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

import sqlalchemy as sa

from fleetyard.controller.leader import Leadership
from fleetyard.controller.reconcile import Reconciler
from fleetyard.domain.health_config import DEFAULT_HEALTH, HealthConfig
from fleetyard.policy.fairshare import DEFAULT_HALF_LIFE_S
from fleetyard.policy.liveness import Liveness
from fleetyard.store import migrate
from fleetyard.store.db import Store, now

log = logging.getLogger(__name__)

# Liveness and health need not run every tick.
SLOW_EVERY_S = 1.0
# A controller that started no work for this long passes only every IDLE_TICK_S: an idle fleet's
# controller polled the store 50 times a second for nothing (a tenth of a core); the first job
# after a quiet spell waits that much longer.
IDLE_AFTER_S = 2.0
IDLE_TICK_S = 0.1


def run_controller(
    *,
    db_url: str,
    liveness: Liveness | None = None,
    tick_s: float = 0.02,
    health: HealthConfig = DEFAULT_HEALTH,
    half_life_s: float = DEFAULT_HALF_LIFE_S,
    stop: threading.Event | None = None,
) -> None:
    """Run until SIGINT/SIGTERM (or ``stop``). Stands by while another controller leads."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():

        def _stop(_sig: int, _frame: FrameType | None) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)

    migrate.upgrade(db_url)
    store = Store(db_url)
    leadership = Leadership(store)
    while not leadership.try_acquire():
        log.info("another controller leads; standing by")
        if stop.wait(1.0):
            return
    log.info("controller leads (store %s)", store.engine.url.render_as_string())
    rec = Reconciler(store, liveness_config=liveness or Liveness(), watching_since=now(), health_config=health)
    rec.scheduler.half_life_s = half_life_s
    rec.scheduler.freeze_gc = True
    last_slow = 0.0
    last_started = now()
    try:
        while not stop.is_set():
            t0 = now()
            try:
                started = rec.schedule(t0)
                if t0 - last_slow >= SLOW_EVERY_S:
                    last_slow = t0
                    rec.liveness(t0)
                    rec.health(t0)
                    rec.pipelines(t0)
                    rec.watchdog(t0)
                    rec.leases(t0)
                    if not leadership.still_held():
                        log.error("lost the leader lock; stopping")
                        return
            except sa.exc.OperationalError as exc:
                # The store may restart or be briefly locked; nothing half-applied survives a rollback.
                log.warning("store unavailable (%s); retrying", exc.__class__.__name__)
                stop.wait(1.0)
                continue
            if started:
                last_started = t0
                continue  # more may fit right away
            stop.wait(tick_s if t0 - last_started < IDLE_AFTER_S else max(tick_s, IDLE_TICK_S))
    finally:
        leadership.release()
        store.dispose()
