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

from fleetyard.controller.leader import Leadership, LeadershipLost, leader_store
from fleetyard.controller.reconcile import Reconciler
from fleetyard.domain.health_config import DEFAULT_HEALTH, HealthConfig
from fleetyard.errors import Conflict
from fleetyard.policy.fairshare import DEFAULT_HALF_LIFE_S
from fleetyard.policy.liveness import HostBrake, Liveness
from fleetyard.policy.preemption_holds import DEFAULT_MAX_PREEMPTIONS, DEFAULT_PREEMPT_PROTECT_S, PreemptionHolds
from fleetyard.store import migrate
from fleetyard.store.db import is_retryable, is_unavailable, now
from fleetyard.store.outage import DEFAULT_OUTAGE_S, Outage

log = logging.getLogger(__name__)

# Liveness and health need not run every tick.
SLOW_EVERY_S = 1.0
# A controller that started no work for this long passes only every IDLE_TICK_S: an idle fleet's
# controller polled the store 50 times a second for nothing (a tenth of a core); the first job
# after a quiet spell waits that much longer.
IDLE_AFTER_S = 2.0
IDLE_TICK_S = 0.1
# The sweeper settles attempts that nothing settled (it should find none): a join over the
# running jobs, every few seconds.
SWEEP_EVERY_S = 5.0


def run_controller(
    *,
    db_url: str,
    liveness: Liveness | None = None,
    host_brake: HostBrake | None = None,
    tick_s: float = 0.02,
    slow_tick_s: float | None = None,
    health: HealthConfig = DEFAULT_HEALTH,
    half_life_s: float = DEFAULT_HALF_LIFE_S,
    preempt_protect_s: float = DEFAULT_PREEMPT_PROTECT_S,
    max_preemptions: int = DEFAULT_MAX_PREEMPTIONS,
    store_outage_s: float = DEFAULT_OUTAGE_S,
    stop: threading.Event | None = None,
) -> None:
    """Run until SIGINT/SIGTERM (or ``stop``): stand by while another controller leads, lead
    when the lock is free, and stand by again if the lead is lost (the store restarted under it).

    While the store is unavailable the controller retries with backoff, leading or standing by;
    after ``store_outage_s`` without a break it raises :class:`~fleetyard.errors.StoreUnavailable`.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():

        def _stop(_sig: int, _frame: FrameType | None) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)

    outage = Outage(store_outage_s)
    migrate.upgrade_when_available(db_url, outage)
    store = leader_store(db_url)
    leadership = Leadership(store)
    standing_by = False
    try:
        while not stop.is_set():
            try:
                leads = leadership.try_acquire()
            except sa.exc.SQLAlchemyError as exc:
                if not is_unavailable(exc):
                    raise
                stop.wait(outage.failed(exc))
                continue
            outage.ok()
            if not leads:
                if not standing_by:
                    log.info("another controller leads; standing by")
                    standing_by = True
                stop.wait(1.0)
                continue
            standing_by = False
            log.info("controller leads (store %s)", store.engine.url.render_as_string())
            rec = Reconciler(store, liveness_config=liveness or Liveness(), watching_since=now(), health_config=health)
            rec.host_brake = host_brake or HostBrake()
            rec.scheduler.half_life_s = half_life_s
            rec.scheduler.holds = PreemptionHolds(preempt_protect_s, max_preemptions=max_preemptions)
            rec.scheduler.freeze_gc = True
            try:
                _lead(rec, leadership, outage, tick_s=tick_s, slow_tick_s=slow_tick_s or SLOW_EVERY_S, stop=stop)
            except LeadershipLost as exc:
                log.warning("%s; standing by", exc)
            leadership.release()  # a fresh session competes for the lock like any standby
    finally:
        leadership.release()
        store.dispose()


def _lead(
    rec: Reconciler, leadership: Leadership, outage: Outage, *, tick_s: float, slow_tick_s: float, stop: threading.Event
) -> None:
    """The leader's passes, until ``stop``; raises LeadershipLost when the lock's session ended."""
    last_slow = last_sweep = 0.0
    last_started = now()
    while not stop.is_set():
        t0 = now()
        try:
            started = rec.schedule(t0)
            if t0 - last_slow >= slow_tick_s:
                last_slow = t0
                rec.liveness(t0)
                rec.health(t0)
                rec.pipelines(t0)
                rec.watchdog(t0)
                rec.leases(t0)
                if t0 - last_sweep >= SWEEP_EVERY_S:
                    last_sweep = t0
                    rec.sweep(t0)
                if not leadership.still_held():
                    raise LeadershipLost("the leader lock was lost")
        except sa.exc.SQLAlchemyError as exc:
            if not (is_unavailable(exc) or is_retryable(exc)):
                raise
            # Nothing half-applied survives a rollback: the next pass reads the store afresh. If the
            # store restarted, the lock went with the session: the next write's fence says so.
            stop.wait(outage.failed(exc))
            continue
        except Conflict as exc:
            # A server-side writer (an operator's drain, an agent's report) changed a row after
            # this pass read it: the pass is rolled back whole, and the next one reads afresh.
            log.warning("a pass met a concurrent change (%s); passing again", exc.message)
            stop.wait(tick_s)
            continue
        outage.ok()
        if started:
            last_started = t0
            continue  # more may fit right away
        stop.wait(tick_s if t0 - last_started < IDLE_AFTER_S else max(tick_s, IDLE_TICK_S))
