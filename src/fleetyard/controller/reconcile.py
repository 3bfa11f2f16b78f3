"""The controller's reconcile steps: load a snapshot, ask the policy, apply in one transaction."""

from __future__ import annotations

import logging
import time
from collections import defaultdict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import sqlalchemy as sa

from fleetyard.controller.healing import Healer
from fleetyard.controller.leader import LeadershipLost
from fleetyard.controller.onboarding import Onboarder
from fleetyard.controller.pipelines import Pipeliner
from fleetyard.controller.rollouts import Roller
from fleetyard.controller.scheduler import SchedulerShell
from fleetyard.domain.board import Actor, BoardState
from fleetyard.domain.health_config import DEFAULT_HEALTH, HealthConfig
from fleetyard.domain.host import HostState
from fleetyard.domain.job import AssignmentState, Cause, Outcome
from fleetyard.policy.blame import BLAME_WINDOW_S, RankEnd, blame, fingerprint
from fleetyard.policy.brakes import (
    CONTROL_PLANE,
    LEMON_WINDOW_S,
    BreakerLimits,
    Intake,
    Tripped,
    lemon_reason,
    take_out,
)
from fleetyard.policy.health import Finding, Reading, findings, take_out_why, worst
from fleetyard.policy.liveness import HostBrake, HostJudgement, HostView, Liveness, judge_hosts, watching_since
from fleetyard.policy.uptime import Incident, uptime
from fleetyard.policy.watchdog import DEFAULT_TIMEOUTS_S, Overdue, StateView, overdue
from fleetyard.store import breakers
from fleetyard.store import tables as t
from fleetyard.store.attempts import SWEPT_KEY, end_rank, settle, settle_ended
from fleetyard.store.boards import switch_board_state, transitions
from fleetyard.store.breakers import taken_out_since, trip
from fleetyard.store.db import Store, lock_rows
from fleetyard.store.healing import CHECK_KIND, open_cases
from fleetyard.store.hosts import lose_host
from fleetyard.store.leases import expire_leases
from fleetyard.store.onboarding import open_records
from fleetyard.store.settings import get_setting, put_setting

log = logging.getLogger(__name__)


class HealthPass(NamedTuple):
    failing: list[str]  # taken out: suspect
    released: list[str]  # healed, or onboarded: into service
    quarantined: list[str]  # remediation exhausted, lemons, or failed onboarding
    tripped: list[str]  # generations whose breaker tripped in this pass


@dataclass
class Reconciler:
    store: Store
    liveness_config: Liveness = field(default_factory=Liveness)
    watching_since: float = 0.0
    # A lost host's jobs wait this long before they run elsewhere (None: the unreachable threshold).
    requeue_grace_s: float | None = None
    host_brake: HostBrake = field(default_factory=HostBrake)  # when host silence is the control plane's
    health_config: HealthConfig = field(default_factory=lambda: DEFAULT_HEALTH)
    breaker: BreakerLimits = field(init=False)  # the health config's (tests may narrow it)
    timeouts: Mapping[BoardState, float] = field(default_factory=lambda: dict(DEFAULT_TIMEOUTS_S))
    scheduler: SchedulerShell = field(init=False)
    healer: Healer = field(init=False)
    onboarder: Onboarder = field(init=False)
    roller: Roller = field(init=False)
    pipeliner: Pipeliner = field(init=False)
    _readings: dict[str, Reading] = field(init=False, default_factory=dict)  # each board's last telemetry
    _ends: dict[str, deque[RankEnd]] = field(init=False, default_factory=dict)  # per job fingerprint, the window's
    _ends_seen: float = field(init=False, default=0.0)
    _blame_pending: dict[str, dict[str, str]] = field(init=False, default_factory=dict)  # fingerprint -> board -> why
    _telemetry_seen: float = field(init=False, default=0.0)
    _liveness_at: float | None = field(init=False, default=None)  # the last liveness pass

    def __post_init__(self) -> None:
        self.breaker = BreakerLimits.of(self.health_config)
        self.scheduler = SchedulerShell(self.store)
        self.healer = Healer(self.health_config, lemons=self._lemons)
        self.onboarder = Onboarder(self.health_config)
        self.roller = Roller(self.health_config)
        self.pipeliner = Pipeliner()

    def schedule(self, now: float) -> int:
        """One scheduling pass (:class:`~fleetyard.controller.scheduler.SchedulerShell`); how many attempts started."""
        return self.scheduler.pass_(now)

    def sweep(self, now: float) -> list[int]:
        """Settle attempts whose ranks all ended but that nothing settled (see
        :func:`~fleetyard.store.attempts.settle_ended`); each is counted
        (``fleetyard_attempts_swept_total``): a count that grows is a bug to chase."""
        with self.store.write() as conn:
            swept = settle_ended(conn, at=now)
            if swept:
                total = int(get_setting(conn, SWEPT_KEY, 0)) + len(swept)
                put_setting(conn, SWEPT_KEY, total, by="controller", at=now)
        if swept:
            log.warning("settled %d attempts whose ranks had all ended: %s", len(swept), swept)
        return swept

    def leases(self, now: float) -> list[int]:
        """End the leases whose time is up (their boards go back to the fleet)."""
        ended = expire_leases(self.store, now)
        if ended:
            log.info("leases expired: %s", ", ".join(map(str, ended)))
        return ended

    def liveness(self, now: float) -> list[str]:
        """Judge hosts by their heartbeats (:func:`~fleetyard.policy.liveness.judge_hosts`): silent
        ones become unreachable (no new work, nothing else), heard-from ones online again, and
        those silent past the grace are lost: their boards go offline and their work re-queues.
        Returns the hosts lost."""
        lv = self.liveness_config
        with self.store.write() as conn:
            newest = conn.execute(sa.select(sa.func.max(t.servers.c.seen_at))).scalar()
            since = watching_since(
                self.watching_since, newest_server_seen=newest, now=now, last_pass=self._liveness_at, liveness=lv
            )
            late = None if self._liveness_at is None else now - self._liveness_at
            if late is not None and late > lv.late_pass_s:
                log.warning("controller fell behind (%.1f s between passes): hosts judged once it keeps up", late)
            self.watching_since, self._liveness_at = since, now
            h = t.hosts.c
            hosts = [
                HostView(r.id, HostState(r.state), r.last_heartbeat_at, r.registered_at)
                for r in conn.execute(sa.select(h.id, h.state, h.last_heartbeat_at, h.registered_at))
            ]
            heard = {v.id: v.last_heartbeat_at for v in hosts}
            # The control plane's breaker: held (tripped, not reset), or reset by an operator (an
            # override of the trouble under way: a policy reset overrides nothing).
            brake = breakers.last_trip(conn, CONTROL_PLANE)
            held = brake is not None and brake.reset_at is None
            overridden_at = None if brake is None or brake.reset_by == breakers.POLICY_RESET else brake.reset_at
            judged = judge_hosts(
                hosts,
                now=now,
                liveness=lv,
                watching_since=self.watching_since,
                brake=self.host_brake,
                overridden_at=overridden_at,
            )
            self._brake(conn, judged, held=held, now=now)
            cutoff = now - lv.unreachable_after_s
            for host_id in judged.unreachable:
                # Only if no heartbeat was written since we read: a server may flush one meanwhile.
                marked = conn.execute(
                    t.hosts.update()
                    .where(
                        h.id == host_id,
                        h.state == str(HostState.ONLINE),
                        sa.or_(h.last_heartbeat_at.is_(None), h.last_heartbeat_at < cutoff),
                    )
                    .values(state=str(HostState.UNREACHABLE))
                ).rowcount
                if marked:
                    silent = lv.unreachable_after_s
                    log.warning("host %s unreachable: no heartbeat for %.0f s; no new work", host_id, silent)
            for host_id in judged.reachable:
                conn.execute(
                    t.hosts.update()
                    .where(h.id == host_id, h.state == str(HostState.UNREACHABLE))
                    .values(state=str(HostState.ONLINE))
                )
                log.info("host %s reachable again", host_id)
            grace = lv.unreachable_after_s if self.requeue_grace_s is None else self.requeue_grace_s
            for host_id in sorted(judged.lost):
                # Only if still unheard since we read (a server may flush a heartbeat meanwhile):
                # taken offline here, conditionally, before anything else of it changes.
                still = conn.execute(
                    t.hosts.update()
                    .where(
                        h.id == host_id,
                        h.state != str(HostState.OFFLINE),
                        h.last_heartbeat_at.is_not_distinct_from(heard[host_id]),
                    )
                    .values(state=str(HostState.OFFLINE), offline_since=now)
                ).rowcount
                if not still:
                    log.info("host %s was heard from as it was judged lost: left as it is", host_id)
                    continue
                log.warning("host %s lost: no heartbeat for %.0f s", host_id, lv.lost_after_s)
                lose_host(
                    conn,
                    host_id,
                    reason=f"host lost: no heartbeat for {lv.lost_after_s:.0f} s",
                    at=now,
                    requeue_grace_s=grace,
                )
        return judged.lost

    def _brake(self, conn: sa.Connection, judged: HostJudgement, *, held: bool, now: float) -> None:
        """The control plane's breaker: tripped while the hosts' silence is its trouble, reset by
        the policy once it is not (an operator's reset overrides it until new trouble)."""
        if judged.trouble is not None and not held:
            trip(conn, CONTROL_PLANE, judged.trouble, at=now)
            log.error("%s (hosts that would be lost: %s)", judged.trouble, ", ".join(judged.would_lose) or "none yet")
        elif judged.trouble is None and held:
            breakers.reset(conn, CONTROL_PLANE, by=breakers.POLICY_RESET, reason="the hosts answer again", at=now)
            log.warning("control-plane breaker reset: the hosts answer again")

    def health(self, now: float) -> HealthPass:
        """Boards in service that fail their probe, break a telemetry rule that acts
        (:func:`~fleetyard.policy.health.findings`), or fail a job that passes elsewhere
        (:func:`~fleetyard.policy.blame.blame`) are taken out: available ones become suspect;
        allocated ones end their job's attempt as an infrastructure error (the job re-queues on
        other boards) and become suspect with it. A generation's circuit breaker bounds how many
        of its boards are taken out at once (:mod:`fleetyard.policy.brakes`). Then the healing
        shell runs the periodic L1 checks and the remediation ladder (:mod:`.healing`), and the
        onboarding shell walks boards in onboarding through their steps (:mod:`.onboarding`)."""
        with self.store.write() as conn:
            b = t.boards.c
            failing = conn.execute(
                sa.select(b.id, b.probe_reason, b.generation, b.state, b.attempt_id).where(
                    b.probe_ok.is_(False),
                    sa.or_(
                        b.state == str(BoardState.AVAILABLE),
                        # A probe taken after the job began (not one from before it).
                        sa.and_(b.state == str(BoardState.ALLOCATED), b.telemetry_at >= b.state_changed_at),
                    ),
                )
            ).all()
            ruled, blamed = self._rules(conn), self._blamed(conn, now)
            rows = {r.id: r for r in (*failing, *(r for r, _ in ruled), *(r for r, _ in blamed))}
            probe = {r.id: r.probe_reason or "" for r in failing}
            finding, blame_of = {r.id: f for r, f in ruled}, {r.id: why for r, why in blamed}
            why = {
                board_id: out
                for board_id in rows
                if (out := take_out_why(probe=probe.get(board_id), finding=finding.get(board_id),
                                        blamed=blame_of.get(board_id))) is not None
            }  # fmt: skip
            tripped = breakers.tripped(conn)
            intake = self._intake(conn, [rows[board_id] for board_id in why], tripped, now)
            self._forgive(intake.boards)
            for board_id in intake.boards:
                r, out = rows[board_id], why[board_id]
                if r.state == BoardState.ALLOCATED:
                    self._fail_attempt_on(conn, board_id, r.attempt_id, out.reason, now)
                else:
                    switch_board_state(
                        conn, board_id, BoardState.SUSPECT, current=BoardState.AVAILABLE, reason=out.reason,
                        actor=Actor.POLICY, at=now,
                    )  # fmt: skip
                if out.action is not None:
                    self.healer.take(conn, board_id, out.reason, out.action, r.generation, now)
            healed = self.healer.pass_(conn, now)
            onboarded = self.onboarder.pass_(conn, now)
        self.rollouts(now)
        return HealthPass(
            intake.boards,
            healed.healed + onboarded.available,
            healed.quarantined + onboarded.quarantined,
            sorted(intake.trips),
        )

    def pipelines(self, now: float) -> None:
        """The pipeline runs' pass (:mod:`.pipelines`), in its own transaction (:meth:`_apart`)."""
        self._apart("pipelines", self.pipeliner.pass_, now)

    def rollouts(self, now: float) -> None:
        """The staged firmware rollouts' pass (:mod:`.rollouts`), in its own transaction (:meth:`_apart`)."""
        self._apart("rollouts", self.roller.pass_, now)

    def _apart(self, what: str, pass_: Callable[[sa.Connection, float], object], now: float) -> None:
        """A pass in its own transaction: one that cannot go on (a bug, a row changed under it)
        holds still, and the fleet's health goes on. A store that does not answer is the loop's."""
        try:
            with self.store.write() as conn:
                # Its time is taken once the transaction holds: what it reads may have been written
                # while it waited for the write lock, and nothing it writes (a stage's job, a wave's
                # start) may be dated before what it read (the stage before it finishing).
                pass_(conn, max(now, time.time()))
        except (sa.exc.OperationalError, LeadershipLost):
            raise
        except Exception:
            log.exception("%s: the pass failed; nothing of it applied", what)

    def _rules(self, conn: sa.Connection) -> list[tuple[Any, Finding]]:
        """Boards in service whose latest telemetry breaks a rule that acts, with the worst finding
        (growth rules compare with the report before, as this controller saw it)."""
        b = t.boards.c
        rows = conn.execute(
            sa.select(b.id, b.generation, b.state, b.attempt_id, b.telemetry, b.telemetry_at).where(
                b.state.in_((str(BoardState.AVAILABLE), str(BoardState.ALLOCATED))),
                b.telemetry_at > self._telemetry_seen,
            )
        ).all()
        out = []
        for r in rows:
            self._telemetry_seen = max(self._telemetry_seen, r.telemetry_at)
            reading = Reading(r.telemetry_at, r.telemetry or {})
            previous = self._readings.get(r.id)
            self._readings[r.id] = reading
            found = worst(findings(self.health_config.of(r.generation).rules, reading, previous))
            if found is not None:
                out.append((r, found))
        return out

    def _blamed(self, conn: sa.Connection, now: float) -> list[tuple[Any, str]]:
        """Available boards on which a job failed while the same job passed elsewhere
        (:func:`~fleetyard.policy.blame.blame`), with why. Reads the rank ends since the last pass
        (a restarted controller: those of the window) and judges the jobs they touch."""
        a, j = t.assignments.c, t.jobs.c
        since = self._ends_seen or now - BLAME_WINDOW_S
        new = conn.execute(
            sa.select(a.board_id, a.outcome, a.finished_at, a.job_id, j.kind, j.spec)
            .join(t.jobs, t.jobs.c.id == a.job_id)
            .where(
                a.finished_at > since,
                a.outcome.in_([str(Outcome.SUCCESS), str(Outcome.USER_ERROR), str(Outcome.TIMEOUT)]),
                j.kind != CHECK_KIND,
            )
        ).all()
        self._ends_seen = max([since, *(e.finished_at for e in new)])
        touched = set()
        for e in new:
            fp = fingerprint(e.kind, (e.spec or {}).get("params", {}))
            ends = self._ends.setdefault(fp, deque())
            ends.append(RankEnd(fp, e.board_id, e.outcome == Outcome.SUCCESS, e.finished_at, e.job_id, e.outcome))
            touched.add(fp)
        for fp in touched:
            ends = self._ends[fp]
            while ends and ends[0].at < now - BLAME_WINDOW_S:
                ends.popleft()
            self._blame_pending[fp] = blame(ends, now=now)
        if len(self._ends) > 4 * len(touched) + 10_000:  # now and then: drop jobs gone quiet
            self._ends = {fp: e for fp, e in self._ends.items() if e and e[-1].at >= now - BLAME_WINDOW_S}
        blamed = {b: why for by_board in self._blame_pending.values() for b, why in by_board.items()}
        if not blamed:
            return []
        b = t.boards.c
        rows = conn.execute(
            sa.select(b.id, b.generation, b.state, b.attempt_id).where(
                b.id.in_(list(blamed)), b.state == str(BoardState.AVAILABLE)
            )
        ).all()  # a busy board is taken out once its job is done
        return [(r, blamed[r.id]) for r in rows]

    def _forgive(self, boards: list[str]) -> None:
        """Boards just taken out: their failures are dealt with (their check decides now)."""
        gone = set(boards) & {b for by_board in self._blame_pending.values() for b in by_board}
        if not gone:
            return
        for fp, by_board in self._blame_pending.items():
            if gone & set(by_board):
                self._ends[fp] = deque(e for e in self._ends[fp] if e.passed or e.board not in gone)
                self._blame_pending[fp] = {b: why for b, why in by_board.items() if b not in gone}

    def _fail_attempt_on(
        self, conn: sa.Connection, board_id: str, attempt_id: int | None, why: str, now: float
    ) -> None:
        """End the live rank on a board that stopped answering as an infrastructure error (its
        siblings are asked to stop; the job re-queues); the board goes suspect with the reason."""
        a = t.assignments
        rank = conn.execute(
            sa.select(a).where(
                a.c.attempt_id == attempt_id, a.c.board_id == board_id, a.c.state != str(AssignmentState.EXITED)
            )
        ).first()
        if rank is None:
            return
        end_rank(
            conn, rank, outcome=Outcome.INFRA_ERROR, at=now, message=f"board {board_id} {why}", board_ok=False,
            cause=Cause.BOARD_FAULT,
        )  # fmt: skip
        settle(conn, rank.attempt_id, at=now)
        log.warning("board %s %s: its job %d's attempt ends as an infrastructure error", board_id, why, rank.job_id)

    def watchdog(self, now: float) -> list[Overdue]:
        """Fail boards stuck in a transitional state safely (:mod:`fleetyard.policy.watchdog`);
        not those of a generation whose circuit breaker is tripped."""
        timed = tuple(str(s) for s in self.timeouts)
        with self.store.write() as conn:
            tripped = breakers.tripped(conn)
            rows = conn.execute(
                sa.select(t.boards.c.id, t.boards.c.state, t.boards.c.state_changed_at, t.boards.c.generation).where(
                    t.boards.c.state.in_(timed),
                    t.boards.c.attempt_id.is_(None),  # a check runs on it: its own time limit applies
                )
            ).all()
            on_ladder = {c.case.board for c in open_cases(conn)}  # their case keeps its own deadlines
            on_ladder |= {r.board_id for r in open_records(conn)}  # so does an onboarding record (queued: none)
            views = [
                StateView(r.id, BoardState(r.state), r.state_changed_at)
                for r in rows
                if r.generation not in tripped and r.id not in on_ladder
            ]
            due = overdue(views, now=now, timeouts=self.timeouts)
            read = {v.id: (v.state, v.since) for v in views}
            lock_rows(conn, t.boards, [o.board for o in due])
            now_in = {
                r.id: (BoardState(r.state), r.state_changed_at)
                for r in conn.execute(
                    sa.select(t.boards.c.id, t.boards.c.state, t.boards.c.state_changed_at).where(
                        t.boards.c.id.in_([o.board for o in due])
                    )
                )
            }
            acted = []
            for o in due:
                if now_in.get(o.board) != read[o.board]:
                    continue  # it moved on since it was judged (a drain, its host lost): not stuck
                current = read[o.board][0]
                for to in o.path:
                    switch_board_state(conn, o.board, to, current=current, reason=o.reason, actor=Actor.POLICY, at=now)
                    current = to
                log.warning("board %s: %s", o.board, o.reason)
                acted.append(o)
        return acted

    def _intake(self, conn: sa.Connection, failing: Sequence[Any], tripped: Tripped, now: float) -> Intake:
        """Which failing boards the breaker lets the policy take out; trips it where it must."""
        if not failing:
            return Intake([], {})
        candidates: dict[str, list[str]] = defaultdict(list)
        for b in failing:
            candidates[b.generation].append(b.id)
        counts = conn.execute(
            sa.select(t.boards.c.generation, sa.func.count())
            .where(t.boards.c.state != str(BoardState.RETIRED))
            .group_by(t.boards.c.generation)
        )
        recent = taken_out_since(conn, window_start=now - self.breaker.window_s)
        intake = take_out(
            candidates, recent=recent, sizes={g: n for g, n in counts}, tripped=tripped, limits=self.breaker
        )
        for gen, why in sorted(intake.trips.items()):
            trip(conn, gen, why, at=now)
            log.error("generation %s: %s", gen, why)
        return intake

    def _lemons(self, conn: sa.Connection, boards: list[str], now: float) -> dict[str, str]:
        """Those of ``boards`` (about to return to service) that are lemons, with why."""
        if not boards:
            return {}
        since = now - LEMON_WINDOW_S
        events = transitions(conn, since=since, until=now, boards=boards)
        figures = uptime(events, dict.fromkeys(boards, ""), since=since, until=now)
        incidents: dict[str, list[Incident]] = defaultdict(list)
        for i in figures.incidents:
            incidents[i.board].append(i)
        found = {b: lemon_reason(incidents[b], now=now) for b in boards}
        return {b: why for b, why in found.items() if why is not None}
