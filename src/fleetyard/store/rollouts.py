"""Staged firmware rollouts as rows: ``rollouts`` (the plan, each wave's figures and verdict,
where it stands) and ``rollout_boards`` (each board's wave and step, and what it ran before).

A control board is stored with its real wave index (the last wave: :func:`plan_waves` puts it
there) and named in the plan's JSON under ``control_boards``; while the rollout has not reached
its last wave the controller shows it to the policy as :data:`~fleetyard.policy.rollout.CONTROL`.
Writers take the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from fleetyard.policy.rollout import RolloutPlan, RolloutState, Step
from fleetyard.store import tables as t

__all__ = [
    "RolloutBoardRow",
    "RolloutRow",
    "active_on",
    "boards_of",
    "create",
    "get",
    "list_rollouts",
    "lock_generation",
    "update",
    "update_board",
]

R, RB = t.rollouts, t.rollout_boards
ACTIVE = tuple(str(s) for s in RolloutState if s.active)


@dataclass(frozen=True)
class RolloutRow:
    id: int
    generation: str
    version: str
    image: str
    state: RolloutState
    plan: RolloutPlan
    control: tuple[str, ...]  # the control boards
    waves: list[dict[str, Any]]
    wave: int
    created_by: str
    reason: str
    created_at: float
    updated_at: float
    ended_at: float | None
    message: str | None

    @property
    def last_wave(self) -> int:
        return len(self.waves) - 1


@dataclass(frozen=True)
class RolloutBoardRow:
    board_id: str
    wave: int
    step: Step
    from_version: str
    from_image: str | None
    op_id: int | None
    check_job_id: int | None
    step_at: float
    flashed_at: float | None
    message: str | None


def _row(r: sa.Row[Any]) -> RolloutRow:
    plan = dict(r.plan)
    control = tuple(plan.pop("control_boards", ()))
    return RolloutRow(
        id=r.id,
        generation=r.generation,
        version=r.version,
        image=r.image,
        state=RolloutState(r.state),
        plan=RolloutPlan.of(plan),
        control=control,
        waves=[dict(w) for w in r.waves],
        wave=r.wave,
        created_by=r.created_by,
        reason=r.reason,
        created_at=r.created_at,
        updated_at=r.updated_at,
        ended_at=r.ended_at,
        message=r.message,
    )


def _board_row(r: sa.Row[Any]) -> RolloutBoardRow:
    return RolloutBoardRow(
        board_id=r.board_id,
        wave=r.wave,
        step=Step(r.step),
        from_version=r.from_version,
        from_image=r.from_image,
        op_id=r.op_id,
        check_job_id=r.check_job_id,
        step_at=r.step_at,
        flashed_at=r.flashed_at,
        message=r.message,
    )


def new_wave(boards: int, started_at: float | None = None) -> dict[str, Any]:
    """A wave's record before it ran (figures, gate and verdict come at its gate)."""
    return {
        "boards": boards, "started_at": started_at, "flashed_at": None, "soak_checks_at": None,
        "checks_in": False, "verdict": None, "figures": None, "gate": None, "reasons": [],
    }  # fmt: skip


def create(
    conn: sa.Connection,
    *,
    generation: str,
    version: str,
    image: str,
    plan: RolloutPlan,
    waves: Sequence[Sequence[str]],
    control: Sequence[str],
    running: Mapping[str, tuple[str, str | None]],
    created_by: str,
    reason: str,
    at: float,
) -> int:
    """Write a new rollout (running, its first wave started) and its boards; its id.
    ``running``: board id -> (the firmware version it runs, that version's image sha256)."""
    rollout_id = int(
        conn.execute(
            R.insert()
            .values(
                generation=generation,
                version=version,
                image=image,
                state=str(RolloutState.RUNNING),
                plan={**plan.as_dict(), "control_boards": list(control)},
                waves=[new_wave(len(w), at if i == 0 else None) for i, w in enumerate(waves)],
                wave=0,
                created_by=created_by,
                reason=reason,
                created_at=at,
                updated_at=at,
            )
            .returning(R.c.id)
        ).scalar_one()
    )
    rows = [
        {
            "rollout_id": rollout_id, "board_id": b, "wave": i, "step": str(Step.PENDING),
            "from_version": running[b][0], "from_image": running[b][1], "step_at": at,
        }
        for i, wave in enumerate(waves)
        for b in wave
    ]  # fmt: skip
    if rows:
        conn.execute(RB.insert(), rows)
    return rollout_id


def get(conn: sa.Connection, rollout_id: int, *, for_update: bool = False) -> RolloutRow | None:
    q = sa.select(R).where(R.c.id == rollout_id)
    if for_update:
        q = q.with_for_update(key_share=True)
    r = conn.execute(q).first()
    return None if r is None else _row(r)


def list_rollouts(
    conn: sa.Connection, *, generation: str | None = None, active: bool = False, limit: int = 100
) -> list[RolloutRow]:
    """Rollouts, newest first."""
    q = sa.select(R).order_by(R.c.id.desc()).limit(limit)
    if generation:
        q = q.where(R.c.generation == generation)
    if active:
        q = q.where(R.c.state.in_(ACTIVE))
    return [_row(r) for r in conn.execute(q)]


# The first half of a per-generation advisory key (pg_advisory_xact_lock(int, int)): "Fley". The
# two-key form is a space of its own, apart from the one-key locks (store.migrate, store.inventory,
# controller.leader).
_PG_GENERATION_LOCK = 0x466C6579


def lock_generation(conn: sa.Connection, generation: str) -> None:
    """Hold ``generation`` for starting a rollout until this transaction ends: two starts for one
    generation take turns, so the second sees the first's rollout (one active per generation).
    SQLite has one writer at a time: nothing to take there."""
    if conn.dialect.name == "postgresql":
        conn.execute(
            sa.text("SELECT pg_advisory_xact_lock(:k, hashtext(:gen))"), {"k": _PG_GENERATION_LOCK, "gen": generation}
        )


def active_on(conn: sa.Connection, generation: str) -> RolloutRow | None:
    """The generation's active rollout (running, paused or rolling back), if any."""
    r = conn.execute(
        sa.select(R).where(R.c.generation == generation, R.c.state.in_(ACTIVE)).order_by(R.c.id).limit(1)
    ).first()
    return None if r is None else _row(r)


def boards_of(conn: sa.Connection, rollout_id: int) -> list[RolloutBoardRow]:
    """A rollout's boards, by wave then board id."""
    rows = conn.execute(sa.select(RB).where(RB.c.rollout_id == rollout_id).order_by(RB.c.wave, RB.c.board_id))
    return [_board_row(r) for r in rows]


def update(conn: sa.Connection, rollout_id: int, *, at: float, **values: Any) -> None:
    """Change a rollout's columns (``state`` as a :class:`RolloutState` or its text)."""
    if "state" in values:
        values["state"] = str(values["state"])
    conn.execute(R.update().where(R.c.id == rollout_id).values(updated_at=at, **values))


def update_board(
    conn: sa.Connection, rollout_id: int, board_id: str, *, step_was: Step | None = None, **values: Any
) -> bool:
    """Change a rollout board's columns (``step`` as a :class:`Step` or its text); with
    ``step_was``, only while the board is still at that step (the row as committed when the
    update runs). Whether a row changed."""
    if "step" in values:
        values["step"] = str(values["step"])
    q = RB.update().where(RB.c.rollout_id == rollout_id, RB.c.board_id == board_id)
    if step_was is not None:
        q = q.where(RB.c.step == str(step_was))
    return bool(conn.execute(q.values(**values)).rowcount)
