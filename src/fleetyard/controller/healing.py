"""The healing shell: health checks and the remediation ladder, over the store.

Each pass, in one transaction:

1. **Periodic L1.** A board in service whose L1 check is due (:func:`~fleetyard.policy.health.l1_due`,
   counting the job it runs) is marked ``check_due``: the scheduler gives it no new user job. Once
   it is free, its L1 check is bound to it at once (:func:`~fleetyard.store.healing.start_check`),
   ahead of any user job. A check that passes restarts the board's L1 clock; one that fails has
   already made the board suspect (an infrastructure error of its job), with the mismatch as cause.
2. **Cases.** A suspect board gets a remediation case (:mod:`fleetyard.policy.remediation`): a
   check first (L2; L1 for a board back from a lost host), or the ladder straight away for a
   board that failed its probe or its golden check. Each pass collects what the current phase
   came to (the board op's result, the check job's end, or its deadline) and carries out the
   next act: order the op through the host's agent, start a check, heal (back in service, but
   a lemon goes to quarantine instead) or quarantine with the case as repair record. A case
   waits while its board's host is away (unreachable, or lost: the board offline); back from a
   lost host, the board returns to the ladder and its case resumes the phase it was in
   (:func:`~fleetyard.policy.remediation.resume`).

A generation whose circuit breaker is tripped gets no new case and no step: remediation stops
until an operator resets it (:mod:`fleetyard.policy.brakes`).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from fleetyard.domain.board import Actor, BoardState
from fleetyard.domain.health_config import DEFAULT_HEALTH, CheckTier, GenerationHealth, HealthConfig, RuleAction
from fleetyard.policy.brakes import Tripped
from fleetyard.policy.health import l1_due
from fleetyard.policy.liveness import HOST_BACK_CHECK, HOST_BACK_RESUME
from fleetyard.policy.remediation import Act, Case, Do, Phase, ladder_at_once, on_result, on_time, open_case, resume
from fleetyard.protocol.agent import BoardOp
from fleetyard.store import breakers
from fleetyard.store import tables as t
from fleetyard.store.board_ops import get_op, order_op
from fleetyard.store.boards import switch_board_state
from fleetyard.store.healing import CaseRow, check_result, close_case, open_cases, save_case, start_check

log = logging.getLogger(__name__)

S = BoardState
IN_SERVICE = (str(S.AVAILABLE), str(S.ALLOCATED))
ON_LADDER = (str(S.SUSPECT), str(S.REMEDIATING))


@dataclass
class HealPass:
    healed: list[str] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)


@dataclass
class Healer:
    """Keeps nothing between passes but its configuration: everything is in the store."""

    config: HealthConfig = field(default_factory=lambda: DEFAULT_HEALTH)
    # board ids -> why each is a lemon (the caller's: it reads the event log)
    lemons: Callable[[sa.Connection, list[str], float], dict[str, str]] = lambda _c, _b, _n: {}

    def pass_(self, conn: sa.Connection, now: float) -> HealPass:
        out = HealPass()
        tripped = breakers.tripped(conn)
        self._periodic(conn, now, out)
        self._cases(conn, now, tripped, out)
        return out

    def take(
        self, conn: sa.Connection, board: str, cause: str, action: RuleAction, generation: str, now: float
    ) -> None:
        """A board just taken out (suspect) for a telemetry rule or blame: its case at once, as
        ``action`` says: a check first, the ladder straight away, or quarantine."""
        policy = self.config.of(generation)
        case, act = open_case(board, cause=cause, now=now, policy=policy, check_first=action is RuleAction.CHECK)
        assert case is not None
        row = CaseRow(save_case(conn, case, row_id=None, at=now), case, now, None, None)
        if action is RuleAction.QUARANTINE:
            act = Act(Do.QUARANTINE, board, cause)
        self._act(conn, row, case, act, generation=generation, state=S.SUSPECT, now=now, out=HealPass())

    # ---- periodic L1

    def _periodic(self, conn: sa.Connection, now: float, out: HealPass) -> None:
        b = t.boards.c
        # Checks that ended: a pass restarts the clock; a failure made the board suspect already.
        # (An onboarding board's burn-in is the onboarding record's: controller.onboarding.)
        for r in conn.execute(
            sa.select(b.id, b.check_job_id).where(b.check_job_id.is_not(None), b.state != str(S.ONBOARDING))
        ).all():
            res = check_result(conn, r.check_job_id)
            if res is None:
                continue
            values: dict[str, Any] = {"check_due": None, "check_job_id": None}
            if res.passed:
                values.update(l1_at=now, jobs_since_l1=0)
            conn.execute(t.boards.update().where(b.id == r.id).values(**values))
        # Boards whose check comes due, counting the job they run.
        gens = self.config.generations.values()
        every_s = min(g.l1.every_s for g in gens)
        every_jobs = min(g.l1.every_jobs for g in gens)
        due = conn.execute(
            sa.select(b.id, b.generation, b.state, b.l1_at, b.jobs_since_l1).where(
                b.state.in_(IN_SERVICE),
                b.check_due.is_(None),
                b.check_job_id.is_(None),
                sa.or_(b.l1_at.is_(None), b.l1_at <= now - every_s, b.jobs_since_l1 + 1 >= every_jobs),
            )
        ).all()
        for d in due:
            running = 1 if d.state == S.ALLOCATED else 0
            why = l1_due(
                self.config.of(d.generation).l1, last_l1_at=d.l1_at, jobs_since=d.jobs_since_l1 + running, now=now
            )
            if why is not None:
                conn.execute(t.boards.update().where(b.id == d.id).values(check_due=why))
        # Free boards whose check is due: the check now, before any user job.
        free = conn.execute(
            sa.select(b.id, b.generation, b.check_due)
            .join(t.hosts, t.hosts.c.id == b.host_id)
            .where(
                b.state == str(S.AVAILABLE),
                b.check_due.is_not(None),
                b.check_job_id.is_(None),
                b.drain_reason.is_(None),
                t.hosts.c.state == "online",
            )
            .order_by(b.id)
            # Held as read: a drain committed meanwhile drops the board from this pass (PostgreSQL
            # reads a row changed under FOR UPDATE again), not its check started on a drained board.
            .with_for_update(of=t.boards, key_share=True)
        ).all()
        for f in free:
            job_id = start_check(
                conn, f.id, tier=CheckTier.L1, policy=self.config.of(f.generation), reason=f.check_due, at=now
            )
            conn.execute(t.boards.update().where(b.id == f.id).values(check_job_id=job_id))

    # ---- cases

    def _cases(self, conn: sa.Connection, now: float, tripped: Tripped, out: HealPass) -> None:
        b, h = t.boards.c, t.hosts.c
        boards = {
            r.id: r
            for r in conn.execute(
                sa.select(
                    b.id,
                    b.state,
                    b.state_reason,
                    b.state_changed_at,
                    b.generation,
                    b.drain_reason,
                    b.check_job_id,
                    b.attempt_id,
                    h.state.label("host_state"),
                )
                .join(t.hosts, h.id == b.host_id)
                .where(b.state.in_((*ON_LADDER, str(S.OFFLINE))))
            )
        }
        cases = {c.case.board: c for c in open_cases(conn)}
        for board_id, c in cases.items():
            r = boards.get(board_id)
            if r is None:  # retired, drained by hand, back in service: no longer ours
                close_case(
                    conn,
                    c.id,
                    outcome="abandoned",
                    reason="the board left the ladder",
                    evidence=_evidence(c.case),
                    at=now,
                )
                continue
            if r.state == S.OFFLINE or r.host_state != "online" or r.generation in tripped:
                continue  # its host away (the case waits for it: policy.liveness.back_from_offline), or braked
            policy = self.config.of(r.generation)
            if r.state_reason == HOST_BACK_RESUME and r.state_changed_at > c.case.since:
                moved: tuple[Case | None, Act] | None = resume(c.case, why="its host was lost", now=now, policy=policy)
            else:
                moved = self._collect(conn, c, policy, now)
            if moved is not None:
                self._act(conn, c, *moved, generation=r.generation, state=BoardState(r.state), now=now, out=out)
        for board_id, r in boards.items():
            if board_id in cases or r.state != S.SUSPECT or r.drain_reason is not None or r.generation in tripped:
                continue
            if r.host_state != "online":
                continue  # a case starts once its host answers
            if r.check_job_id is not None or r.attempt_id is not None:
                continue  # its periodic check or last job is still settling
            cause = r.state_reason or "suspect"
            first = CheckTier.L1 if cause == HOST_BACK_CHECK else CheckTier.L2
            policy = self.config.of(r.generation)
            check_first = not ladder_at_once(cause)
            case, act = open_case(board_id, cause=cause, now=now, policy=policy, check_first=check_first, first=first)
            assert case is not None  # a ladder has at least one step
            row = CaseRow(save_case(conn, case, row_id=None, at=now), case, now, None, None)
            log.info("board %s: remediation case opened (%s)", board_id, cause)
            self._act(conn, row, case, act, generation=r.generation, state=S.SUSPECT, now=now, out=out)

    def _collect(
        self, conn: sa.Connection, c: CaseRow, policy: GenerationHealth, now: float
    ) -> tuple[Case | None, Act] | None:
        """What the phase under way came to, as the case's next act (None: nothing yet)."""
        if c.case.phase is Phase.OPERATE and c.op_id is not None:
            op = get_op(conn, c.op_id)
            if op is not None and op.ok is not None:
                return on_result(c.case, ok=op.ok, detail=op.message or "", now=now, policy=policy)
        elif c.case.phase is Phase.CHECK and c.check_job_id is not None:
            res = check_result(conn, c.check_job_id)
            if res is not None:
                ok = res.passed if res.ran else None
                return on_result(c.case, ok=ok, detail=res.detail, now=now, policy=policy)
        return on_time(c.case, now=now, policy=policy)

    def _act(
        self,
        conn: sa.Connection,
        c: CaseRow,
        case: Case | None,
        act: Act,
        *,
        generation: str,
        state: BoardState,
        now: float,
        out: HealPass,
    ) -> None:
        """Carry out the case's next act on its board (in ``state``, as the caller read it)."""
        board = act.board
        policy = self.config.of(generation)
        if act.do is Do.OPERATE:
            assert case is not None and act.op is not None
            if state is S.SUSPECT:
                switch_board_state(
                    conn, board, S.REMEDIATING, current=state, reason=act.reason, actor=Actor.POLICY, at=now
                )
            op_id = order_op(
                conn, board, BoardOp(str(act.op)), reason=act.reason, at=now, actor=str(Actor.POLICY),
                timeout_s=policy.ladder[case.step].timeout_s,
            )  # fmt: skip
            save_case(conn, case, row_id=c.id, at=now, op_id=op_id)
            log.info("board %s: %s", board, act.reason)
        elif act.do is Do.CHECK:
            assert case is not None and act.tier is not None
            job_id = start_check(conn, board, tier=act.tier, policy=policy, reason=act.reason, at=now)
            save_case(conn, case, row_id=c.id, at=now, check_job_id=job_id)
        elif act.do is Do.HEAL:
            lemon = self.lemons(conn, [board], now).get(board)
            if lemon is not None:
                self._quarantine(conn, c, act, board, state, lemon, now)
                out.quarantined.append(board)
                return
            switch_board_state(
                conn,
                board,
                S.AVAILABLE,
                current=state,
                reason=act.reason,
                actor=Actor.POLICY,
                at=now,
                l1_at=now,
                jobs_since_l1=0,
                check_due=None,
            )  # fmt: skip  (an L2 check runs the golden artifact too: it counts as the L1)
            close_case(conn, c.id, outcome="healed", reason=act.reason, evidence=_evidence(c.case, act), at=now)
            out.healed.append(board)
            log.info("board %s: %s", board, act.reason)
        else:
            self._quarantine(conn, c, act, board, state, act.reason, now)
            out.quarantined.append(board)

    def _quarantine(
        self, conn: sa.Connection, c: CaseRow, act: Act, board: str, state: BoardState, reason: str, now: float
    ) -> None:
        if state is S.SUSPECT:
            switch_board_state(conn, board, S.REMEDIATING, current=state, reason=reason, actor=Actor.POLICY, at=now)
        switch_board_state(conn, board, S.QUARANTINED, reason=reason, actor=Actor.POLICY, at=now)
        close_case(conn, c.id, outcome="quarantined", reason=reason, evidence=_record(conn, c, act, board), at=now)
        log.warning("board %s quarantined: %s", board, reason)


def _evidence(case: Case, act: Act | None = None) -> dict[str, Any]:
    """A case's steps as the store keeps them (a terminal act's are the whole case's)."""
    steps = act.evidence if act is not None and act.evidence else case.evidence
    return {"steps": list(steps), "tier": str(case.tier)}


def _record(conn: sa.Connection, c: CaseRow, act: Act, board: str) -> dict[str, Any]:
    """The repair record of a quarantined board: what was tried, its last telemetry, its recent
    history, and the outputs of its failed checks."""
    rec = _evidence(c.case, act)
    row = conn.execute(
        sa.select(t.boards.c.telemetry, t.boards.c.telemetry_at, t.boards.c.probe_reason).where(t.boards.c.id == board)
    ).one()
    rec["telemetry"] = {"at": row.telemetry_at, "values": row.telemetry or {}, "probe": row.probe_reason}
    events = conn.execute(
        sa.select(t.board_events.c.at, t.board_events.c.to_state, t.board_events.c.reason)
        .where(t.board_events.c.board_id == board)
        .order_by(t.board_events.c.id.desc())
        .limit(20)
    ).all()
    rec["events"] = [{"at": e.at, "to": e.to_state, "reason": e.reason} for e in reversed(events)]
    failed: dict[str, dict[str, str]] = defaultdict(dict)
    for a in conn.execute(
        sa.select(t.assignments.c.job_id, t.assignments.c.outputs)
        .join(t.jobs, t.jobs.c.id == t.assignments.c.job_id)
        .where(t.assignments.c.board_id == board, t.jobs.c.kind == "health-check", t.jobs.c.state == "failed")
        .order_by(t.assignments.c.id.desc())
        .limit(5)
    ):
        if a.outputs:
            failed[str(a.job_id)].update(a.outputs)
    rec["failing_outputs"] = dict(failed)
    return rec
