"""The rollout shell: each active rollout, once per slow pass, in the caller's transaction.

It reads what the policy (:mod:`fleetyard.policy.rollout`) needs (each board's step and what
its flash op and check came to, the waves, the generation's boards in service and what the
queues' nominal quotas need of them), asks :func:`~fleetyard.policy.rollout.next_acts`, and
carries out each act:

- drain: the board's ``drain_reason`` names the rollout; an available board is drained at once,
  an allocated one when its job ends (``store.attempts.end_rank``); ``requeue`` preempts that job
  (``preempted_for = 0``: maintenance, no job), which goes back to the queue;
- flash: drained → servicing, and a flash op through the board's agent (forward: the rollout's
  image; a rollback: the image the board ran before); check: an L1 (golden) check on the
  servicing board; release: back in service, the check counting as its L1; fail: suspect, so
  that the remediation ladder (:mod:`.healing`) takes it;
- soak checks: every wave board in service and every control board gets ``check_due``; the
  healing shell's periodic code runs the check when the board is free;
- gate: the wave's and the control boards' figures since the wave started
  (:func:`figures`), judged by :func:`~fleetyard.policy.rollout.gate`, kept as evidence in the
  wave's record; halt: rolling back (every board that runs the new image goes back);
- finish: completed (the version becomes the generation's standard, so that onboarding flashes
  new boards to it) or rolled back.

An aborted rollout starts nothing new: the abort hands boards still draining back at once
(:func:`fleetyard.server.services.rollouts.abort`), and the boards being flashed or checked
finish their step here (as a paused rollout's do), so that none is left servicing.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import sqlalchemy as sa

from fleetyard.domain.board import Actor, BoardState
from fleetyard.domain.firmware import FirmwareSelector
from fleetyard.domain.health_config import DEFAULT_HEALTH, CheckTier, HealthConfig
from fleetyard.domain.job import AssignmentState, AttemptState, Cause, JobState, Outcome
from fleetyard.policy.blame import fingerprint
from fleetyard.policy.outcomes import check_verdict, judges_board
from fleetyard.policy.rollout import (
    CONTROL,
    Act,
    BoardSeen,
    Do,
    Figures,
    RolloutState,
    Step,
    WaveSeen,
    after,
    board_reason,
    gate,
    next_acts,
    queue_need,
    soak_checks_in,
)
from fleetyard.protocol.agent import BoardOp
from fleetyard.store import rollouts as store
from fleetyard.store import tables as t
from fleetyard.store.attempts import settle, stop_ranks
from fleetyard.store.board_ops import get_op, order_op
from fleetyard.store.boards import switch_board_state
from fleetyard.store.healing import CHECK_KIND, check_result, close_case, open_cases, start_check
from fleetyard.store.queues import read_queues

__all__ = ["Roller", "figures", "queue_demand"]

log = logging.getLogger(__name__)

S = BoardState
IN_SERVICE = (str(S.AVAILABLE), str(S.ALLOCATED))
_DRAINING = (Step.DRAINING, Step.REVERT_DRAINING)
_FLASHING = (Step.FLASHING, Step.REVERT_FLASHING)
_CHECKING = (Step.CHECKING, Step.REVERT_CHECKING)
_IN_FLIGHT = tuple(str(s) for s in Step if s.in_flight)
MAX_ROUNDS = 4
# What a pass reads of each of its boards.
_B = t.boards.c
_BOARD_COLUMNS = (_B.id, _B.state, _B.state_changed_at, _B.attempt_id, _B.job_id, _B.drain_reason, _B.firmware,
                  _B.check_due, _B.check_job_id)  # fmt: skip
# Ranks that say something about their board (a canceled or preempted one says nothing).
_JUDGED = (str(Outcome.SUCCESS), str(Outcome.USER_ERROR), str(Outcome.INFRA_ERROR), str(Outcome.TIMEOUT))


@dataclass
class Roller:
    """Keeps nothing between passes but its configuration: everything is in the store."""

    config: HealthConfig = field(default_factory=lambda: DEFAULT_HEALTH)

    def pass_(self, conn: sa.Connection, now: float) -> list[tuple[int, Act]]:
        """One pass over every active rollout (and every aborted one with boards in flight); the
        acts carried out, by rollout id."""
        done: list[tuple[int, Act]] = []
        R, RB = t.rollouts.c, t.rollout_boards.c
        finishing = sa.select(RB.rollout_id).where(RB.step.in_(_IN_FLIGHT))
        rows = conn.execute(
            sa.select(R.id)
            .where(
                sa.or_(
                    R.state.in_(store.ACTIVE),
                    sa.and_(R.state == str(RolloutState.ABORTED), R.id.in_(finishing)),
                )
            )
            .order_by(R.id)
        ).scalars()
        targets: list[store.RolloutRow] = []
        for rollout_id in list(rows):
            # Held until this pass commits, as pause, resume and abort hold it
            # (fleetyard.server.services.rollouts._control): one waits for the other, and the
            # state read here is the one the pass acts on (a rollout paused or aborted while this
            # pass waited starts no drain, flash or wave).
            r = store.get(conn, rollout_id, for_update=True)
            if r is None or not (r.state.active or r.state is RolloutState.ABORTED):
                continue
            # A pass goes on while its acts take effect at once (a drained board is flashed, a
            # gate passed starts the next wave): a step per board per pass, not per second.
            for _ in range(MAX_ROUNDS):
                acts = _Pass(self.config, conn, r, now).run()
                done += [(r.id, a) for a in acts]
                r = store.get(conn, r.id, for_update=True) or r
                if all(a.do is Do.REQUEUE for a in acts):
                    break
            if r.state in (RolloutState.RUNNING, RolloutState.PAUSED):
                targets.append(r)
        if targets:
            waiting_for_rollouts(conn, targets)
        return done


class _Pass:
    """One rollout's pass: the snapshot, the policy's acts, and carrying them out."""

    def __init__(self, config: HealthConfig, conn: sa.Connection, r: store.RolloutRow, now: float) -> None:
        self.config, self.conn, self.r, self.now = config, conn, r, now
        self.state, self.wave = r.state, r.wave
        self.waves = [dict(w) for w in r.waves]
        self.rows = {b.board_id: b for b in store.boards_of(conn, r.id)}
        self.changed = False

    # ---- reading

    def _boards(self) -> dict[str, Any]:
        # Held, in id order, until the pass commits: an operator's drain or undrain (which holds
        # the board too) comes before the pass reads it or after the pass wrote it, never between.
        b = t.boards.c
        ids = list(self.rows)
        return {
            r.id: r
            for r in self.conn.execute(
                sa.select(*_BOARD_COLUMNS).where(b.id.in_(ids)).order_by(b.id).with_for_update(key_share=True)
            )
        }

    def _mine(self, drain_reason: str | None) -> bool:
        return drain_reason is not None and drain_reason.startswith(f"rollout {self.r.id}:")

    def _catch_up(self, boards: dict[str, Any]) -> None:
        """Draining boards the rollout may take now: one that became available (its job ended, or
        the remediation ladder healed it) is drained; a suspect one nobody works on (no case, no
        check) is taken as it is: its check after the flash tells whether it serves again."""
        if not any(rb.step in _DRAINING for rb in self.rows.values()):
            return  # most passes: nothing draining, no case to read
        cases = {c.case.board: c for c in open_cases(self.conn)}
        for rb in self.rows.values():
            b = boards.get(rb.board_id)
            if rb.step not in _DRAINING or b is None:
                continue
            state = BoardState(b.state)
            why = self._drain_reason(rb.step)
            if rb.step is Step.REVERT_DRAINING and state in (S.SUSPECT, S.REMEDIATING) and b.attempt_id is None:
                # It failed on the new image, which the gate now blames: the remediation ladder
                # (resets, a reflash of that image) cannot fix it, going back can.
                case = cases.pop(rb.board_id, None)
                if case is not None:
                    close_case(
                        self.conn, case.id, outcome="abandoned", at=self.now,
                        reason=f"rollout {self.r.id} rolls its firmware back first (the likely cause)",
                        evidence={"steps": list(case.case.evidence), "tier": str(case.case.tier)},
                    )  # fmt: skip
                self._drain(rb.board_id, state, b.drain_reason, why)
            elif state is S.AVAILABLE or (state is S.SUSPECT and b.attempt_id is None and b.id not in cases):
                self._drain(rb.board_id, state, b.drain_reason, why)
            else:
                continue
            boards[rb.board_id] = self._boards_one(rb.board_id)

    def _boards_one(self, board_id: str) -> Any:
        b = t.boards.c
        return self.conn.execute(sa.select(*_BOARD_COLUMNS).where(b.id == board_id)).one()

    def _seen(self, rb: store.RolloutBoardRow, b: Any) -> BoardSeen:
        wave = CONTROL if rb.board_id in self.r.control and self.wave < self.r.last_wave else rb.wave
        if b is None:
            return BoardSeen(rb.board_id, wave, rb.step, rb.step_at, drained=False, gone="no longer in the fleet")
        state = BoardState(b.state)
        gone = f"{state}" if state in (S.QUARANTINED, S.RETIRED) else ""
        op_ok: bool | None = None
        check_ok: bool | None = None
        checks_lost = 0
        detail = ""
        if rb.step in _FLASHING and rb.op_id is not None:
            op = get_op(self.conn, rb.op_id)
            op_ok, detail = (None, "") if op is None else (op.ok, op.message or "")
        elif rb.step in _CHECKING and rb.check_job_id is not None:
            res = check_result(self.conn, rb.check_job_id)
            if res is not None:
                detail, check_ok = res.detail, (res.passed if res.ran else None)
                if not res.ran:  # every check of this step before it could not run either
                    checks_lost = self._checks_since(rb.board_id, rb.step_at)
        return BoardSeen(
            rb.board_id, wave, rb.step, rb.step_at,
            drained=state in (S.DRAINED, S.SERVICING) and b.attempt_id is None,
            op_ok=op_ok, check_ok=check_ok, checks_lost=checks_lost, detail=detail, gone=gone,
            away=float(b.state_changed_at) if state is S.OFFLINE else None,
            serving=state in (S.AVAILABLE, S.ALLOCATED) and b.drain_reason is None,
        )  # fmt: skip

    def _checks_since(self, board_id: str, since: float) -> int:
        """The board's checks begun at ``since`` or later."""
        a, j = t.assignments.c, t.jobs.c
        q = (
            sa.select(sa.func.count())
            .select_from(t.assignments)
            .join(t.jobs, j.id == a.job_id)
            .where(a.board_id == board_id, j.kind == CHECK_KIND, a.created_at >= since)
        )
        return int(self.conn.execute(q).scalar_one())

    def _capacity(self) -> tuple[int, int, int]:
        """The generation's size, its boards in service now, and what the queues' nominal quotas need."""
        b, gen = t.boards.c, self.r.generation
        size = self.conn.execute(
            sa.select(sa.func.count()).where(b.generation == gen, b.state != str(S.RETIRED))
        ).scalar_one()
        in_service = self.conn.execute(
            sa.select(sa.func.count()).where(b.generation == gen, b.state.in_(IN_SERVICE), b.drain_reason.is_(None))
        ).scalar_one()
        queues = read_queues(self.conn)
        nominal = {q.name: q.nominal_of(gen) for q in queues.values() if q.nominal is not None}
        need = queue_need(nominal, queue_demand(self.conn, gen, nominal)) if nominal else 0
        return int(size), int(in_service), need

    def _wave_seen(self, i: int) -> WaveSeen:
        w = self.waves[i]
        return WaveSeen(w.get("started_at"), w.get("flashed_at"), w.get("soak_checks_at"), bool(w.get("checks_in")),
                        w.get("verdict"))  # fmt: skip

    # ---- the pass

    def run(self) -> list[Act]:
        boards = self._boards()
        self._catch_up(boards)
        seen = [self._seen(rb, boards.get(rb.board_id)) for rb in self.rows.values()]
        if self.state in (RolloutState.RUNNING, RolloutState.PAUSED):
            self._wave_progress(seen)
        size, in_service, need = self._capacity()
        # An aborted rollout only finishes what it has in flight: what a paused one does.
        state = RolloutState.PAUSED if self.state is RolloutState.ABORTED else self.state
        acts = next_acts(
            state=state, wave=self.wave, waves=[self._wave_seen(i) for i in range(len(self.waves))],
            sizes=len(self.waves), boards=seen, plan=self.r.plan, generation_size=size,
            in_service=in_service, need=need, now=self.now,
        )  # fmt: skip
        for act in acts:
            if act.do is not Do.REQUEUE:  # said by _act_requeue when it preempts (it repeats till then)
                log.info("rollout %d: %s%s%s", self.r.id, act.do, f" {act.board}" if act.board else "",
                         f" ({act.reason})" if act.reason else "")  # fmt: skip
            self._carry_out(act, boards)
        if self.changed:
            store.update(self.conn, self.r.id, at=self.now, waves=self.waves, wave=self.wave, state=self.state)
        return acts

    def _wave_progress(self, seen: list[BoardSeen]) -> None:
        """Note when the wave under way has every board done or failed, and when its soak checks are in."""
        w = self.waves[self.wave]
        mine = [b for b in seen if b.wave == self.wave]
        if w.get("flashed_at") is None and all(b.step in (Step.DONE, Step.FAILED) for b in mine):
            w["flashed_at"] = self.now
            self.changed = True
        soak_at = w.get("soak_checks_at")
        if soak_at is not None and not w.get("checks_in") and self._soak_checks(float(soak_at)):
            w["checks_in"] = True
            self.changed = True

    # ---- acts

    def _carry_out(self, act: Act, boards: dict[str, Any]) -> None:
        if act.board is not None:
            rb = self.rows[act.board]
            b = boards.get(act.board)
            handler = {
                Do.DRAIN: self._act_drain, Do.REQUEUE: self._act_requeue, Do.FLASH: self._act_flash,
                Do.CHECK: self._act_check, Do.RELEASE: self._act_release, Do.FAIL: self._act_fail,
                Do.SKIP: self._act_skip, Do.RETURN: self._act_return, Do.RECHECK: self._act_recheck,
                Do.SWAP_CONTROL: self._act_swap_control,
            }[act.do]  # fmt: skip
            handler(rb, b, act)
            return
        w = self.waves[self.wave]
        self.changed = True
        if act.do is Do.SOAK_CHECKS:
            w["soak_checks_at"] = self.now
            self._soak_checks(self.now)
        elif act.do is Do.GATE:
            self._gate(w)
        elif act.do is Do.HALT:
            self.state = RolloutState.ROLLING_BACK
            reasons = "; ".join(w.get("reasons") or ()) or "no reason recorded"
            store.update(self.conn, self.r.id, at=self.now, message=f"wave {self.wave + 1} failed its gate: {reasons}")
            for rb in self.rows.values():
                if rb.step is Step.DONE or (rb.step is Step.FAILED and rb.flashed_at is not None):
                    self._step(rb, Step.REVERT_PENDING)
        elif act.do is Do.NEXT_WAVE:
            self.wave += 1
            self.waves[self.wave]["started_at"] = self.now
        elif act.do is Do.FINISH:
            ended = self.state is RolloutState.RUNNING
            self.state = RolloutState.COMPLETED if ended else RolloutState.ROLLED_BACK
            values: dict[str, Any] = {"ended_at": self.now}
            if ended:
                values["message"] = act.reason
                f = t.firmware_images
                self.conn.execute(
                    f.update().where(f.c.generation == self.r.generation).values(standard=f.c.version == self.r.version)
                )
            store.update(self.conn, self.r.id, at=self.now, **values)
            log.info("rollout %d %s", self.r.id, self.state)

    def _step(self, rb: store.RolloutBoardRow, step: Step, **values: Any) -> None:
        store.update_board(self.conn, self.r.id, rb.board_id, step=step, step_at=self.now, **values)
        self.rows[rb.board_id] = rb = store.RolloutBoardRow(**{**vars(rb), "step": step, "step_at": self.now, **values})

    def _reason(self, act: Act, *, version: str | None = None, reverting: bool = False) -> str:
        return board_reason(
            self.r.id, act, generation=self.r.generation, version=version or self.r.version, reverting=reverting
        )

    def _drain_reason(self, step: Step) -> str:
        reverting = step in (Step.REVERT_PENDING, Step.REVERT_DRAINING)
        return self._reason(Act(Do.DRAIN), reverting=reverting)

    def _drain(self, board_id: str, state: BoardState, drain_reason: str | None, why: str) -> None:
        """Keep new work off a board (an operator's own drain reason stays); an available, suspect
        or remediating one (a rollback takes it from the ladder) is drained now: planned
        maintenance, as the operator who started the rollout asked."""
        if drain_reason is None:
            self.conn.execute(t.boards.update().where(t.boards.c.id == board_id).values(drain_reason=why))
        if state in (S.AVAILABLE, S.SUSPECT, S.REMEDIATING):
            switch_board_state(self.conn, board_id, S.DRAINED, current=state, reason=why, actor=Actor.OPERATOR,
                               at=self.now)  # fmt: skip

    def _act_drain(self, rb: store.RolloutBoardRow, b: Any, act: Act) -> None:
        why = self._drain_reason(rb.step)
        if b is not None:
            state = BoardState(b.state)
            self._drain(rb.board_id, state if state is S.AVAILABLE else S.ALLOCATED, b.drain_reason, why)
        self._step(rb, after(rb.step))

    def _act_requeue(self, rb: store.RolloutBoardRow, b: Any, act: Act) -> None:
        """Preempt the job that keeps a draining board (``preempted_for = 0``: for maintenance,
        no job): its ranks stop and end preempted, and it goes back to the queue."""
        if b is None or b.attempt_id is None:
            return
        A = t.attempts
        res = self.conn.execute(
            A.update()
            .where(A.c.id == b.attempt_id, A.c.state == str(AttemptState.RUNNING), A.c.preempted_for.is_(None))
            .values(preempted_for=0, message=f"rollout {self.r.id}: {act.reason}")
        )
        if res.rowcount:
            reason = f"rollout {self.r.id}: {act.reason}"
            log.info("rollout %d: job %s re-queued: %s", self.r.id, b.job_id, act.reason)
            stop_ranks(self.conn, b.attempt_id, at=self.now, reason=reason, outcome=Outcome.PREEMPTED)
            settle(self.conn, b.attempt_id, at=self.now)

    def _act_flash(self, rb: store.RolloutBoardRow, b: Any, act: Act) -> None:
        reverting = rb.step is Step.REVERT_DRAINING
        image, version = (rb.from_image, rb.from_version) if reverting else (self.r.image, self.r.version)
        why = self._reason(act, version=version, reverting=reverting)
        if image is None:  # refused at create; kept safe for rows from before
            self._step(rb, Step.FAILED, message=f"no registered image of {version} to flash back")
            return
        if b is not None and b.state == S.DRAINED:
            switch_board_state(self.conn, rb.board_id, S.SERVICING, current=S.DRAINED, reason=why,
                               actor=Actor.OPERATOR, at=self.now)  # fmt: skip
        op_id = order_op(
            self.conn, rb.board_id, BoardOp.FLASH, reason=why, at=self.now, actor=str(Actor.POLICY),
            timeout_s=self.r.plan.step_timeout_s, image=image, version=version,
        )  # fmt: skip
        self._step(rb, after(rb.step), op_id=op_id, check_job_id=None)

    def _act_check(self, rb: store.RolloutBoardRow, b: Any, act: Act) -> None:
        why = f"rollout {self.r.id}: check after the flash"
        job_id = start_check(self.conn, rb.board_id, tier=CheckTier.L1, policy=self.config.of(self.r.generation),
                             reason=why, at=self.now)  # fmt: skip
        values: dict[str, Any] = {"check_job_id": job_id}
        if rb.step is Step.FLASHING:
            values["flashed_at"] = self.now  # it runs the new image now
        self._step(rb, after(rb.step), **values)

    def _act_release(self, rb: store.RolloutBoardRow, b: Any, act: Act) -> None:
        if b is None or b.state != S.SERVICING:
            state = "gone" if b is None else b.state
            self._step(rb, Step.FAILED, message=f"left servicing ({state}) before its release")
            return
        reverting = rb.step is Step.REVERT_CHECKING
        version = rb.from_version if reverting else self.r.version
        values: dict[str, Any] = {"l1_at": self.now, "jobs_since_l1": 0}  # the check counts as its L1
        if self._mine(b.drain_reason):
            values["drain_reason"] = None
        switch_board_state(
            self.conn, rb.board_id, S.AVAILABLE, current=S.SERVICING, actor=Actor.POLICY, at=self.now,
            reason=self._reason(act, version=version, reverting=reverting),
            **values,
        )  # fmt: skip
        self._step(rb, after(rb.step), message=None)

    def _act_fail(self, rb: store.RolloutBoardRow, b: Any, act: Act) -> None:
        """To the remediation ladder: suspect, with the reason (the healing shell opens its case)."""
        if b is not None and b.state == S.SERVICING:
            values: dict[str, Any] = {"drain_reason": None} if self._mine(b.drain_reason) else {}
            switch_board_state(self.conn, rb.board_id, S.SUSPECT, current=S.SERVICING, actor=Actor.POLICY,
                               at=self.now, reason=self._reason(act), **values)  # fmt: skip
        self._step(rb, Step.FAILED, message=act.reason)

    def _act_skip(self, rb: store.RolloutBoardRow, b: Any, act: Act) -> None:
        """It left service another way (quarantined, retired, its host lost): the rollout goes on without it."""
        if b is not None and self._mine(b.drain_reason):
            self.conn.execute(t.boards.update().where(t.boards.c.id == rb.board_id).values(drain_reason=None))
        self._step(rb, Step.FAILED, message=f"left the rollout: {act.reason}")

    def _act_return(self, rb: store.RolloutBoardRow, b: Any, act: Act) -> None:
        """Its host was lost mid-step: pending again (its drain reason stays: the rollout still
        means to flash it), through the wave's steps once it is back."""
        back = Step.REVERT_PENDING if rb.step.name.startswith("REVERT_") else Step.PENDING
        self._step(rb, back, op_id=None, check_job_id=None, message=act.reason)

    def _act_recheck(self, rb: store.RolloutBoardRow, b: Any, act: Act) -> None:
        """Its check after the flash could not run: another, the step's clock going on."""
        job_id = start_check(self.conn, rb.board_id, tier=CheckTier.L1, policy=self.config.of(self.r.generation),
                             reason=f"rollout {self.r.id}: {act.reason}", at=self.now)  # fmt: skip
        store.update_board(self.conn, self.r.id, rb.board_id, check_job_id=job_id, message=act.reason)
        self.rows[rb.board_id] = replace(rb, check_job_id=job_id, message=act.reason)

    def _act_swap_control(self, rb: store.RolloutBoardRow, b: Any, act: Act) -> None:
        """A control board away or gone: ``act.other`` (a later wave's board) takes its place,
        and it takes the other's place in that wave."""
        assert act.other is not None
        new = self.rows[act.other]
        store.update_board(self.conn, self.r.id, rb.board_id, wave=new.wave, message=act.reason)
        store.update_board(self.conn, self.r.id, new.board_id, wave=rb.wave)
        self.rows[rb.board_id] = replace(rb, wave=new.wave, message=act.reason)
        self.rows[new.board_id] = replace(new, wave=rb.wave)
        control = tuple(new.board_id if c == rb.board_id else c for c in self.r.control)
        self.r = replace(self.r, control=control)
        store.update(self.conn, self.r.id, at=self.now, plan={**self.r.plan.as_dict(), "control_boards": list(control)})

    # ---- soak and gate

    def _soak_boards(self) -> list[str]:
        """The boards a wave's soak checks: its boards on the new image, and the control boards."""
        out = [rb.board_id for rb in self.rows.values() if rb.wave == self.wave and rb.step is Step.DONE]
        if self.wave < self.r.last_wave:
            out += list(self.r.control)
        return out

    def _soak_checks(self, since: float) -> bool:
        """Whether the soak's checks are in (:func:`~fleetyard.policy.rollout.soak_checks_in`):
        checks that began at ``since`` or later and judged their board; a check that could not
        run does not count. Asks for one (``check_due``) on each board in service that lacks it
        and has none due or running, so a check that could not run is run again. The counts go
        in the wave's record (``soak``), for the operator's eye while the gate waits."""
        b, a, j = t.boards.c, t.assignments.c, t.jobs.c
        wanted = self._soak_boards()
        rows = self.conn.execute(
            sa.select(b.id, b.check_due, b.check_job_id).where(b.id.in_(wanted), b.state.in_(IN_SERVICE))
        ).all()
        judged = {
            r.board_id
            for r in self.conn.execute(
                sa.select(a.board_id, a.outcome, a.cause)
                .join(t.jobs, j.id == a.job_id)
                .where(
                    a.board_id.in_(wanted),
                    j.kind == CHECK_KIND,
                    a.created_at >= since,
                    a.state == str(AssignmentState.EXITED),
                )
            )
            if _verdict(r.outcome, r.cause) is not None
        }
        lacking = [r for r in rows if r.id not in judged]
        due = [r.id for r in lacking if r.check_due is None and r.check_job_id is None]
        if due:
            self.conn.execute(
                t.boards.update().where(b.id.in_(due)).values(check_due=f"rollout {self.r.id} soak check")
            )
        serving = {r.id for r in rows}
        control = set(self.r.control) if self.wave < self.r.last_wave else set()
        counts = {
            group: (len(judged & serving & ids), len(serving & ids))
            for group, ids in (("wave", set(wanted) - control), ("control", set(wanted) & control))
        }
        soak = {k: list(v) for k, v in counts.items()}
        w = self.waves[self.wave]
        if w.get("soak") != soak:
            w["soak"] = soak
            self.changed = True
        return soak_checks_in(
            wave=counts["wave"], control=counts["control"], since=since, now=self.now, plan=self.r.plan
        )

    def _gate(self, w: dict[str, Any]) -> None:
        since = float(w.get("started_at") or self.r.created_at)
        last = self.wave == self.r.last_wave
        control = set(self.r.control)
        mine = [rb for rb in self.rows.values() if rb.wave == self.wave and (last or rb.board_id not in control)]
        # The wave's flashes that came to something: on the image (flashed_at), or failed before it.
        failed = sum(1 for rb in mine if rb.step is Step.FAILED and rb.flashed_at is None and rb.op_id is not None)
        flashes = failed + sum(1 for rb in mine if rb.flashed_at is not None)
        wave_fig = figures(self.conn, [rb.board_id for rb in mine], since=since, flashes=flashes, flash_failures=failed)
        if not last or not control:
            control_fig = figures(self.conn, control, since=since)
        elif self.wave == 0:  # one wave, control boards and all: nothing to compare with
            control_fig = Figures()
        else:  # the control boards are in this wave: the figures of their last soak
            prev = self.waves[self.wave - 1].get("figures") or {}
            control_fig = figures_of(prev.get("control") or {})
        v = gate(wave_fig, control_fig, self.r.plan.gates, no_control=not self.r.control)
        w.update(
            figures={"wave": wave_fig.as_dict(), "control": control_fig.as_dict()},
            gate=v.table,
            verdict=v.passed,
            reasons=list(v.reasons),
        )
        log.info("rollout %d wave %d %s its gate%s", self.r.id, self.wave + 1, "passed" if v.passed else "failed",
                 f": {'; '.join(v.reasons)}" if v.reasons else "")  # fmt: skip


def figures(
    conn: sa.Connection, boards: Collection[str], *, since: float, flashes: int = 0, flash_failures: int = 0
) -> Figures:
    """What ``boards`` did from ``since``: health checks (failed: not passed), the ranks of other
    jobs (infrastructure errors), validations (passed), and benchmark throughput keyed by what
    was measured (kind and parameters: like with like); the rollout's own flashes as given. A
    rank that could not run (its host lost, its agent stopped) counts nowhere."""
    if not boards:
        return Figures(flashes=flashes, flash_failures=flash_failures)
    a, j = t.assignments.c, t.jobs.c
    rows = conn.execute(
        sa.select(a.outcome, a.cause, a.result, j.kind, j.spec)
        .join(t.jobs, j.id == a.job_id)
        .where(
            a.board_id.in_(list(boards)),
            a.created_at >= since,
            a.state == str(AssignmentState.EXITED),
            a.outcome.in_(_JUDGED),
        )
    ).all()
    checks = check_failures = attempts = infra = validations = passes = 0
    throughput: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        if r.cause is not None and not judges_board(Cause(r.cause)):
            continue  # it could not run (its host lost, its agent stopped): it says nothing of the firmware
        ok = r.outcome == Outcome.SUCCESS
        if r.kind == CHECK_KIND:
            checks, check_failures = checks + 1, check_failures + (not ok)
            continue
        attempts, infra = attempts + 1, infra + (r.outcome == Outcome.INFRA_ERROR)
        if r.kind == "validate":
            validations, passes = validations + 1, passes + ok
        elif r.kind == "bench" and ok:
            result = r.result or {}
            value = result.get("samples_per_s", result.get("queries_per_s"))
            if isinstance(value, int | float) and value > 0:
                throughput[fingerprint(r.kind, (r.spec or {}).get("params", {}))].append(float(value))
    return Figures(
        checks=checks, check_failures=check_failures, attempts=attempts, infra_errors=infra,
        validations=validations, validation_passes=passes, throughput=dict(throughput), flashes=flashes,
        flash_failures=flash_failures,
    )  # fmt: skip


def _verdict(outcome: str | None, cause: str | None) -> bool | None:
    return check_verdict(None if outcome is None else Outcome(outcome), None if cause is None else Cause(cause))


def figures_of(d: Mapping[str, Any]) -> Figures:
    """Figures back from their :meth:`~fleetyard.policy.rollout.Figures.as_dict`."""
    names = ("checks", "check_failures", "attempts", "infra_errors", "validations", "validation_passes", "flashes",
             "flash_failures")  # fmt: skip
    return Figures(
        **{k: int(d.get(k, 0)) for k in names},
        throughput={k: [float(x) for x in v] for k, v in (d.get("throughput") or {}).items()},
    )


def queue_demand(conn: sa.Connection, generation: str, queues: Collection[str]) -> dict[str, int]:
    """Per queue (of ``queues``): the boards of ``generation`` its running jobs hold, plus the
    boards its queued jobs that may run there ask for."""
    if not queues:
        return {}
    a, j, att = t.assignments.c, t.jobs.c, t.attempts.c
    demand: dict[str, int] = dict.fromkeys(queues, 0)
    held = conn.execute(
        sa.select(j.team, sa.func.count())
        .select_from(t.assignments)
        .join(t.jobs, j.id == a.job_id)
        .join(t.attempts, att.id == a.attempt_id)
        .join(t.boards, t.boards.c.id == a.board_id)
        .where(
            att.state == str(AttemptState.RUNNING),
            a.state != str(AssignmentState.EXITED),
            t.boards.c.generation == generation,
            j.team.in_(list(queues)),
        )
        .group_by(j.team)
    ).all()
    for team, n in held:
        demand[team] += int(n)
    for team, spec in conn.execute(
        sa.select(j.team, j.spec).where(j.state == str(JobState.QUEUED), j.team.in_(list(queues)))
    ):
        gens = (spec or {}).get("generations") or []
        if not gens or generation in gens:
            demand[team] += int((spec or {}).get("boards", 1))
    return demand


def waiting_for_rollouts(conn: sa.Connection, rollouts: list[store.RolloutRow]) -> None:
    """A queued job pinned to firmware that too few boards of its generations run yet, but that a
    rollout is flashing: its pending reason says it waits for that rollout (written after the
    scheduler's, which does not write it again while its own stays the same)."""
    j, b = t.jobs.c, t.boards.c
    pinned = conn.execute(
        sa.select(j.id, j.spec, j.pending_reason).where(
            j.state == str(JobState.QUEUED), j.spec["firmware"].as_string().is_not(None)
        )
    ).all()
    if not pinned:
        return
    running: dict[str, dict[str, int]] = defaultdict(dict)  # generation -> firmware -> boards
    for gen, fw, n in conn.execute(
        sa.select(b.generation, b.firmware, sa.func.count())
        .where(b.state.not_in((str(S.RETIRED), str(S.QUARANTINED))))
        .group_by(b.generation, b.firmware)
    ):
        running[gen][fw] = int(n)
    for job in pinned:
        spec = job.spec or {}
        try:
            selector = FirmwareSelector.parse(str(spec["firmware"]))
        except ValueError:
            continue
        gens = set(spec.get("generations") or running)
        have = sum(n for g in gens for fw, n in running.get(g, {}).items() if selector.matches(fw))
        if have >= int(spec.get("boards", 1)):
            continue  # enough boards run it already: the scheduler's reason stands
        r = next((r for r in rollouts if r.generation in gens and selector.matches(r.version)), None)
        if r is None:
            continue
        reason = (
            f"waits for rollout {r.id}: {have} {'/'.join(sorted(gens))} board(s) run firmware {selector}, it "
            f"asks for {spec.get('boards', 1)}; "
            f"the rollout is flashing {r.generation} to {r.version} ({r.state})"
        )
        if job.pending_reason != reason:
            conn.execute(t.jobs.update().where(j.id == job.id, j.state == str(JobState.QUEUED)).values(
                pending_reason=reason))  # fmt: skip
