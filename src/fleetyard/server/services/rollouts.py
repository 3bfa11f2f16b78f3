"""Staged firmware rollouts: start one (refusing what could not go well), pause, resume, abort,
and read where each stands. The controller carries them out (:mod:`fleetyard.controller.rollouts`)."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import sqlalchemy as sa
from packaging.version import Version

from fleetyard.domain.auth import Principal
from fleetyard.domain.board import Actor, BoardState
from fleetyard.domain.firmware import parse_version
from fleetyard.errors import BadRequest, Conflict, NotFound
from fleetyard.policy.rollout import RolloutPlan, RolloutState, Step, plan_waves
from fleetyard.protocol.api import RolloutBoardOut, RolloutDetail, RolloutIn, RolloutOut, RolloutWaveOut
from fleetyard.server.services.audit import note
from fleetyard.store import rollouts as rs
from fleetyard.store import tables as t
from fleetyard.store.boards import switch_board_state
from fleetyard.store.db import Store

F = t.firmware_images
_OVERRIDES = ("canary", "shares", "soak_s", "control", "drain", "drain_timeout_s", "step_timeout_s")
_IN_FLIGHT = [str(s) for s in Step if s.in_flight]


def _plan(req: RolloutIn) -> RolloutPlan:
    given = {k: getattr(req, k) for k in _OVERRIDES if getattr(req, k) is not None}
    if "shares" in given:
        given["shares"] = tuple(given["shares"])
    try:
        return RolloutPlan(**given)
    except ValueError as exc:
        raise BadRequest(f"bad rollout plan: {exc}", detail={"plan": given}) from None


def _counts(rows: list[rs.RolloutBoardRow]) -> dict[str, int]:
    return dict(Counter(str(b.step) for b in rows))


def _out(r: rs.RolloutRow, rows: list[rs.RolloutBoardRow]) -> RolloutOut:
    return RolloutOut(
        id=r.id, generation=r.generation, version=r.version, image=r.image, state=str(r.state), wave=r.wave,
        waves=len(r.waves), plan={**r.plan.as_dict(), "control_boards": list(r.control)}, counts=_counts(rows),
        created_by=r.created_by, reason=r.reason, created_at=r.created_at, updated_at=r.updated_at,
        ended_at=r.ended_at, message=r.message,
    )  # fmt: skip


def _detail(conn: sa.Connection, r: rs.RolloutRow) -> RolloutDetail:
    rows = rs.boards_of(conn, r.id)
    b = t.boards.c
    now_on = {
        x.id: x for x in conn.execute(sa.select(b.id, b.firmware, b.state).where(b.id.in_([x.board_id for x in rows])))
    }
    by_wave: dict[int, list[rs.RolloutBoardRow]] = defaultdict(list)
    for x in rows:
        by_wave[x.wave].append(x)
    waves = [
        RolloutWaveOut(
            index=i,
            boards=int(w.get("boards") or len(by_wave[i])),
            steps=_counts(by_wave[i]),
            started_at=w.get("started_at"),
            flashed_at=w.get("flashed_at"),
            soak_checks_at=w.get("soak_checks_at"),
            checks_in=bool(w.get("checks_in")),
            soak=w.get("soak"),
            verdict=w.get("verdict"),
            figures=w.get("figures"),
            gate=w.get("gate"),
            reasons=list(w.get("reasons") or []),
        )
        for i, w in enumerate(r.waves)
    ]
    control = set(r.control)
    boards = [
        RolloutBoardOut(
            board_id=x.board_id,
            wave=x.wave,
            control=x.board_id in control,
            step=str(x.step),
            step_at=x.step_at,
            from_version=x.from_version,
            firmware=getattr(now_on.get(x.board_id), "firmware", None),
            state=getattr(now_on.get(x.board_id), "state", None),
            op_id=x.op_id,
            check_job_id=x.check_job_id,
            flashed_at=x.flashed_at,
            message=x.message,
        )
        for x in rows
    ]
    return RolloutDetail(**_out(r, rows).model_dump(), wave_records=waves, boards=boards)


def _get(conn: sa.Connection, rollout_id: int, *, for_update: bool = False) -> rs.RolloutRow:
    r = rs.get(conn, rollout_id, for_update=for_update)
    if r is None:
        raise NotFound(f"no rollout {rollout_id} (fleetyard firmware rollouts)")
    return r


def start(store: Store, *, principal: Principal, req: RolloutIn, at: float) -> RolloutDetail:
    """Start a rollout of ``req.generation`` to ``req.version``. Refused: an unknown generation or
    version (404), a generation with a rollout under way, or boards on a version that is not
    registered, so that a rollback could not flash them back (409), a bad plan (422)."""
    plan = _plan(req)
    gen, version = req.generation, req.version
    with store.write() as conn:
        b = t.boards.c
        live = [str(s) for s in BoardState if s not in (BoardState.RETIRED, BoardState.QUARANTINED)]
        boards = conn.execute(
            sa.select(b.id, b.firmware).where(b.generation == gen, b.state.in_(live)).order_by(b.id)
        ).all()
        if not boards:
            known = sorted(set(conn.execute(sa.select(b.generation).distinct()).scalars()))
            raise NotFound(
                f"no boards of generation {gen!r} in service or on their way there; the fleet has: "
                f"{', '.join(known) or 'no boards'}",
                detail={"generation": gen, "known": known},
            )
        found = conn.execute(sa.select(F.c.version, F.c.sha256).where(F.c.generation == gen))
        images = {r.version: r.sha256 for r in found}
        if version not in images:
            listed = sorted(images, key=lambda v: parse_version(v) or Version("0"))
            raise NotFound(
                f"no {gen} firmware {version} registered: push it first (fleetyard firmware push IMAGE --gen {gen} "
                f"--version {version}); registered: {', '.join(listed) or 'none'}",
                detail={"generation": gen, "version": version, "registered": listed},
            )
        # Two starts for one generation take turns from here to their commit (PostgreSQL; SQLite
        # has one writer): the second then sees the first's rollout and is refused.
        rs.lock_generation(conn, gen)
        busy = rs.active_on(conn, gen)
        if busy is not None:
            raise Conflict(
                f"rollout {busy.id} of {gen} to {busy.version} is {busy.state}: one rollout per generation at a "
                f"time; wait for it, or abort it (fleetyard firmware abort {busy.id} --reason …)",
                detail={"rollout": busy.id, "state": str(busy.state)},
            )
        finishing = conn.execute(
            sa.select(t.rollouts.c.id)
            .join(t.rollout_boards, t.rollout_boards.c.rollout_id == t.rollouts.c.id)
            .where(t.rollouts.c.generation == gen, t.rollout_boards.c.step.in_(_IN_FLIGHT))
            .limit(1)
        ).scalar()
        if finishing is not None:
            raise Conflict(
                f"aborted rollout {finishing} still has {gen} boards in flight; they finish their step within "
                f"seconds to minutes: try again then (fleetyard firmware rollout-status {finishing})",
                detail={"rollout": finishing},
            )
        unregistered = Counter(r.firmware for r in boards if r.firmware not in images and r.firmware != version)
        if unregistered:
            runs = ", ".join(f"{v} ({n} board{'s' if n > 1 else ''})" for v, n in sorted(unregistered.items()))
            first = sorted(unregistered)[0]
            raise Conflict(
                f"{gen} boards run firmware that is not registered: {runs}; a rollback could not flash them "
                f"back: push those images first (fleetyard firmware push IMAGE --gen {gen} --version {first})",
                detail={"unregistered": dict(unregistered)},
            )
        todo = [r for r in boards if r.firmware != version]  # the boards that run it already are done
        if not todo:
            raise Conflict(f"every {gen} board runs firmware {version} already: nothing to roll out")
        waves, control = plan_waves([r.id for r in todo], plan, salt=f"{gen}/{version}/{at}")
        running = {r.id: (r.firmware, images.get(r.firmware)) for r in todo}
        rollout_id = rs.create(
            conn, generation=gen, version=version, image=images[version], plan=plan, waves=waves,
            control=control, running=running, created_by=principal.name, reason=req.reason, at=at,
        )  # fmt: skip
        note(
            conn, principal, "firmware.rollout", f"rollout/{rollout_id}", at=at, reason=req.reason,
            detail={"generation": gen, "version": version, "boards": len(todo), "waves": [len(w) for w in waves],
                    "plan": plan.as_dict()},
        )  # fmt: skip
        return _detail(conn, _get(conn, rollout_id))


def _control(
    store: Store, *, rollout_id: int, principal: Principal, reason: str, at: float, action: str
) -> RolloutDetail:
    """Pause (running → paused), resume (paused → running) or abort (active → aborted)."""
    with store.write() as conn:
        r = _get(conn, rollout_id, for_update=True)
        values: dict[str, Any] = {}
        if action == "pause":
            if r.state is not RolloutState.RUNNING:
                raise Conflict(f"rollout {r.id} is {r.state}: only a running rollout pauses")
            values["state"] = RolloutState.PAUSED
        elif action == "resume":
            if r.state is not RolloutState.PAUSED:
                raise Conflict(f"rollout {r.id} is {r.state}: only a paused rollout resumes")
            values["state"] = RolloutState.RUNNING
        else:
            if not r.state.active:
                raise Conflict(f"rollout {r.id} is {r.state} already: nothing to abort")
            values.update(
                state=RolloutState.ABORTED, ended_at=at,
                message=f"aborted by {principal.name}: {reason} (boards being flashed or checked finish their "
                "step; boards still draining go back to service; boards on the new firmware stay on it)",
            )  # fmt: skip
            _hand_back_draining(conn, r, at=at, why=f"rollout {r.id} aborted by {principal.name}: {reason}")
        rs.update(conn, r.id, at=at, **values)
        note(conn, principal, f"firmware.rollout.{action}", f"rollout/{r.id}", at=at, reason=reason,
             detail={"from": str(r.state), "to": str(values["state"])})  # fmt: skip
        return _detail(conn, _get(conn, r.id))


def _hand_back_draining(conn: sa.Connection, r: rs.RolloutRow, *, at: float, why: str) -> None:
    """An aborted rollout's boards still draining (none touched yet) go back to service at once,
    so that no job waits for a flash that will not come; their step goes back to pending."""
    b = t.boards.c
    for x in rs.boards_of(conn, r.id):
        if x.step not in (Step.DRAINING, Step.REVERT_DRAINING):
            continue
        back = Step.PENDING if x.step is Step.DRAINING else Step.REVERT_PENDING
        # Only from the step read: a board the controller's pass moved on (to flashing) finishes
        # that step, and keeps its drain. (The pass holds the rollout row, as this abort does,
        # so it cannot be half way; this holds even so.)
        if not rs.update_board(
            conn, r.id, x.board_id, step_was=x.step, step=back, step_at=at,
            message="handed back: the rollout was aborted",
        ):  # fmt: skip
            continue
        board = conn.execute(
            sa.select(b.state, b.drain_reason).where(b.id == x.board_id).with_for_update(key_share=True)
        ).first()
        if board is None or not (board.drain_reason or "").startswith(f"rollout {r.id}:"):
            continue  # an operator's own drain stays
        conn.execute(t.boards.update().where(b.id == x.board_id).values(drain_reason=None))
        if board.state == BoardState.DRAINED:
            switch_board_state(conn, x.board_id, BoardState.AVAILABLE, current=BoardState.DRAINED, reason=why,
                               actor=Actor.OPERATOR, at=at)  # fmt: skip


def pause(store: Store, *, rollout_id: int, principal: Principal, reason: str, at: float) -> RolloutDetail:
    """Start no new board; those in flight finish their step."""
    return _control(store, rollout_id=rollout_id, principal=principal, reason=reason, at=at, action="pause")


def resume(store: Store, *, rollout_id: int, principal: Principal, reason: str, at: float) -> RolloutDetail:
    return _control(store, rollout_id=rollout_id, principal=principal, reason=reason, at=at, action="resume")


def abort(store: Store, *, rollout_id: int, principal: Principal, reason: str, at: float) -> RolloutDetail:
    """End the rollout: nothing new starts; boards in flight finish their step; none is reverted."""
    return _control(store, rollout_id=rollout_id, principal=principal, reason=reason, at=at, action="abort")


def get(store: Store, *, rollout_id: int) -> RolloutDetail:
    with store.read() as conn:
        return _detail(conn, _get(conn, rollout_id))


def list_rollouts(store: Store, *, generation: str | None = None, active: bool = False) -> list[RolloutOut]:
    with store.read() as conn:
        return [_out(r, rs.boards_of(conn, r.id)) for r in rs.list_rollouts(conn, generation=generation, active=active)]
