"""The onboarding shell: walks boards in ``onboarding`` through inspect, flash and burn-in, over the store.

Each pass, in the caller's transaction:

1. **Records.** A board in onboarding without an open record gets one, queued in its batch
   (``boards.onboard_batch``; a board back from repair has none: batch ``repair``). A record whose
   board left onboarding another way (host lost, retired, an operator) is closed as abandoned.
2. **Admission.** Queued boards start, oldest first, while fewer than the setting
   ``onboarding.parallelism`` (default 32) are past queued (:func:`~fleetyard.policy.onboarding.admit`).
3. **Steps.** Each admitted record of a board whose host is online goes as far as it can now
   (:func:`~fleetyard.policy.onboarding.next_act`): inspection is immediate (it reads what the
   agent reported at registration); a flash is an op through the host's agent (the op's result
   updates ``boards.firmware``); the burn-in is an L3 check. In service, the board's L1 clock
   starts; a failure quarantines it with the reason as ``state_reason`` and in the record.

The watchdog (:mod:`fleetyard.policy.watchdog`) leaves boards with an open record alone: a queued
board may wait longer than the watchdog's limit for its place, and each step has its own deadline
here (the flash op's, the check's time limit with a backstop).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from fleetyard.domain.board import Actor, BoardState
from fleetyard.domain.health_config import DEFAULT_HEALTH, CheckTier, HealthConfig
from fleetyard.errors import FleetyardError
from fleetyard.policy.onboarding import (
    BURN_IN_LOST,
    DEFAULT_PARALLELISM,
    PARALLELISM_KEY,
    Act,
    CheckView,
    Do,
    Facts,
    Limits,
    OpView,
    Queued,
    Record,
    Step,
    admit,
    next_act,
)
from fleetyard.protocol.agent import BoardOp
from fleetyard.store import tables as t
from fleetyard.store.attempts import stop_job
from fleetyard.store.board_ops import get_op, order_op
from fleetyard.store.boards import switch_board_state
from fleetyard.store.healing import check_result, start_check
from fleetyard.store.onboarding import (
    REPAIR_BATCH,
    OnboardingRow,
    create_record,
    facts_evidence,
    facts_of,
    finish_record,
    open_records,
    save_record,
)
from fleetyard.store.settings import get_setting

log = logging.getLogger(__name__)

S = BoardState
# Past the burn-in check's own time limit, how long before the record gives up on it.
BURN_IN_GRACE_S = 300.0
# Steps one record may take in one pass (inspect, then flash or burn-in start): a bound, not a goal.
_MAX_STEPS = 4


@dataclass
class OnboardPass:
    admitted: list[str] = field(default_factory=list)
    available: list[str] = field(default_factory=list)  # passed: in service
    quarantined: list[str] = field(default_factory=list)


@dataclass
class Onboarder:
    """Keeps nothing between passes but its configuration: everything is in the store."""

    config: HealthConfig = field(default_factory=lambda: DEFAULT_HEALTH)

    def pass_(self, conn: sa.Connection, now: float) -> OnboardPass:
        out = OnboardPass()
        b, h = t.boards.c, t.hosts.c
        boards = {
            r.id: r
            for r in conn.execute(
                sa.select(b.id, b.generation, b.onboard_batch, h.state.label("host_state"))
                .join(t.hosts, h.id == b.host_id)
                .where(b.state == str(S.ONBOARDING))
            )
        }
        records: dict[str, OnboardingRow] = {}
        for rec in open_records(conn):
            if rec.board_id not in boards or rec.board_id in records:
                self._abandon(conn, rec, now)
            else:
                records[rec.board_id] = rec
        for board_id in sorted(boards.keys() - records.keys()):
            batch = boards[board_id].onboard_batch or REPAIR_BATCH
            records[board_id] = create_record(conn, board_id, batch=batch, at=now)
            log.info("board %s: queued for onboarding in batch %s", board_id, batch)

        online = {i for i, r in boards.items() if r.host_state == "online"}
        # The boards under way first: those that finish now free their places for this pass's admissions.
        walking = [r for r in records.values() if r.step is not Step.QUEUED and r.board_id in online]
        self._walk_all(conn, walking, boards, now, out)
        ended = set(out.available) | set(out.quarantined)
        active = sum(1 for r in records.values() if r.step is not Step.QUEUED and r.board_id not in ended)
        parallelism = int(get_setting(conn, PARALLELISM_KEY, DEFAULT_PARALLELISM))
        queued = [Queued(r.board_id, r.created_at, r.id) for r in records.values() if r.step is Step.QUEUED]
        admitted = []
        for board_id in admit([q for q in queued if q.board in online], active, parallelism):
            note = f"admitted: at most {parallelism} boards onboard at once"
            admitted.append(save_record(conn, records[board_id], step=Step.INSPECT, at=now, note=note))
            out.admitted.append(board_id)
        self._walk_all(conn, admitted, boards, now, out)
        return out

    def _walk_all(
        self, conn: sa.Connection, recs: list[OnboardingRow], boards: dict[str, Any], now: float, out: OnboardPass
    ) -> None:
        facts = facts_of(conn, [r.board_id for r in recs])
        for rec in recs:
            # One record's trouble (a board an operator changed under it) is not the others': it
            # holds still, its writes undone, and the next pass looks again.
            try:
                with conn.begin_nested():
                    self._walk(conn, rec, boards[rec.board_id].generation, facts.get(rec.board_id), now, out)
            except FleetyardError as exc:
                log.warning("board %s: onboarding step not taken: %s", rec.board_id, exc)

    def _walk(
        self,
        conn: sa.Connection,
        rec: OnboardingRow,
        generation: str,
        facts: Facts | None,
        now: float,
        out: OnboardPass,
    ) -> None:
        """Take the record as far as it goes now."""
        policy = self.config.of(generation)
        limits = Limits(burn_in_timeout_s=policy.l3.timeout_s + BURN_IN_GRACE_S)
        for _ in range(_MAX_STEPS):
            op, check, outputs = None, None, {}
            if rec.step is Step.FLASH and rec.op_id is not None:
                o = get_op(conn, rec.op_id)
                if o is not None:
                    op = OpView(o.ok, o.message, o.version, o.deadline)
            if rec.step is Step.BURN_IN and rec.check_job_id is not None:
                res = check_result(conn, rec.check_job_id)
                if res is not None:
                    lost = 0 if res.ran else 1 + _burn_ins_lost(rec.evidence)
                    check, outputs = CheckView(res.passed if res.ran else None, res.detail, lost), res.outputs
            if rec.step is Step.FLASH and op is not None and op.ok:
                facts = self._reread(conn, rec.board_id, facts)  # the op's result changed boards.firmware
            act = next_act(Record(rec.board_id, rec.step, rec.step_at), now=now, facts=facts, op=op, check=check,
                           limits=limits)  # fmt: skip
            if act.do is Do.WAIT:
                return
            seen: dict[str, Any] = {}
            if rec.step is Step.INSPECT and facts is not None:
                seen["facts"] = facts_evidence(facts)
            if act.do is Do.FLASH:
                rec = self._flash(conn, rec, act, generation, now, seen)
            elif act.do is Do.BURN_IN:
                job_id = start_check(conn, rec.board_id, tier=CheckTier.L3, policy=policy, reason="burn-in", at=now)
                # A burn-in run again keeps its clock: the burn-in timeout bounds the tries.
                at = rec.step_at if rec.step is Step.BURN_IN else now
                rec = save_record(conn, rec, step=Step.BURN_IN, at=at, note=act.note, check_job_id=job_id, **seen)
            elif act.do is Do.AVAILABLE:
                switch_board_state(
                    conn,
                    rec.board_id,
                    S.AVAILABLE,
                    current=S.ONBOARDING,
                    reason=act.note,
                    actor=Actor.POLICY,
                    at=now,
                    l1_at=now,
                    jobs_since_l1=0,
                    check_due=None,
                    check_job_id=None,
                    onboard_batch=None,
                )  # the burn-in runs the golden artifact too: it counts as the L1
                finish_record(conn, rec, outcome="available", reason=act.note, at=now, **seen)
                out.available.append(rec.board_id)
                log.info("board %s: onboarded (%s)", rec.board_id, act.note)
                return
            else:
                self._quarantine(conn, rec, act, now, seen, outputs)
                out.quarantined.append(rec.board_id)
                return

    def _flash(
        self, conn: sa.Connection, rec: OnboardingRow, act: Act, generation: str, now: float, seen: dict[str, Any]
    ) -> OnboardingRow:
        f = t.firmware_images.c
        sha = conn.execute(
            sa.select(f.sha256).where(f.generation == generation, f.version == act.version)
        ).scalar()  # read with the facts, in this transaction: it is there
        op_id = order_op(
            conn, rec.board_id, BoardOp.FLASH, reason=f"onboarding: flash the standard firmware {act.version}",
            at=now, actor=str(Actor.POLICY), image=sha, version=act.version,
        )  # fmt: skip
        log.info("board %s: onboarding flashes firmware %s (op %d)", rec.board_id, act.version, op_id)
        return save_record(conn, rec, step=Step.FLASH, at=now, note=act.note, op_id=op_id, **seen)

    def _quarantine(
        self,
        conn: sa.Connection,
        rec: OnboardingRow,
        act: Act,
        now: float,
        seen: dict[str, Any],
        outputs: dict[str, str],
    ) -> None:
        if rec.step is Step.BURN_IN and rec.check_job_id is not None:
            stop_job(conn, rec.check_job_id, at=now, message=act.note)  # one past its deadline (an ended one stays)
        reason = f"onboarding failed: {act.note}"
        switch_board_state(
            conn, rec.board_id, S.QUARANTINED, current=S.ONBOARDING, reason=reason, actor=Actor.POLICY, at=now,
            onboard_batch=None,
        )  # fmt: skip
        evidence: dict[str, Any] = {**seen, "failed_step": str(rec.step)}
        if act.problems:
            evidence["problems"] = list(act.problems)
        if outputs:
            evidence["failing_outputs"] = outputs
        finish_record(conn, rec, outcome="quarantined", reason=act.note, at=now, **evidence)
        log.warning("board %s quarantined: %s", rec.board_id, reason)

    def _abandon(self, conn: sa.Connection, rec: OnboardingRow, now: float) -> None:
        b = t.boards.c
        row = conn.execute(sa.select(b.state, b.state_reason).where(b.id == rec.board_id)).first()
        where = "gone" if row is None else f"{row.state}" + (f" ({row.state_reason})" if row.state_reason else "")
        finish_record(conn, rec, outcome="abandoned", reason=f"the board left onboarding: {where}", at=now)

    @staticmethod
    def _reread(conn: sa.Connection, board_id: str, facts: Facts | None) -> Facts | None:
        fresh = facts_of(conn, [board_id]).get(board_id)
        return fresh if fresh is not None else facts


def _burn_ins_lost(evidence: dict[str, Any]) -> int:
    """Burn-ins of the record that could not run before, by its log."""
    return sum(str(e.get("note", "")).startswith(BURN_IN_LOST) for e in evidence.get("log", []))
