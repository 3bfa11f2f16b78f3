"""Onboarding records in the store (the controller's onboarding shell writes them), and the
progress per batch and per board that operators read.

A record (``onboardings`` row) is open until its board is in service (step ``done``), quarantined
(``failed``), or left onboarding another way (``failed``, outcome ``abandoned``: host lost,
retired). Its evidence is ``{"log": [{"at", "step", "note"}, …], "facts": {…}, "problems": […],
"reason": …}``: what each step found, the facts inspection read, and why it ended.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from fleetyard.policy.onboarding import Facts, Inventoried, Standard, Step
from fleetyard.store import tables as t

__all__ = [
    "REPAIR_BATCH",
    "OnboardingRow",
    "batch_boards",
    "batches",
    "create_record",
    "facts_evidence",
    "facts_of",
    "finish_record",
    "open_records",
    "save_record",
]

OB = t.onboardings
# The batch of a board that enters onboarding with no batch of its own: back from repair.
REPAIR_BATCH = "repair"


@dataclass(frozen=True)
class OnboardingRow:
    id: int
    board_id: str
    batch: str
    step: Step
    created_at: float
    step_at: float
    op_id: int | None
    check_job_id: int | None
    evidence: dict[str, Any]


def _row(r: Any) -> OnboardingRow:
    return OnboardingRow(
        r.id,
        r.board_id,
        r.batch,
        Step(r.step),
        r.created_at,
        r.step_at,
        r.op_id,
        r.check_job_id,
        dict(r.evidence or {}),
    )


def open_records(conn: sa.Connection) -> list[OnboardingRow]:
    """The records not yet finished, oldest first."""
    return [_row(r) for r in conn.execute(sa.select(OB).where(OB.c.finished_at.is_(None)).order_by(OB.c.id))]


def create_record(conn: sa.Connection, board_id: str, *, batch: str, at: float) -> OnboardingRow:
    """A new record, queued."""
    evidence: dict[str, Any] = {"log": [{"at": at, "step": str(Step.QUEUED), "note": f"queued in batch {batch}"}]}
    row_id: int = conn.execute(
        OB.insert()
        .values(board_id=board_id, batch=batch, step=str(Step.QUEUED), created_at=at, step_at=at, evidence=evidence)
        .returning(OB.c.id)
    ).scalar_one()
    return OnboardingRow(row_id, board_id, batch, Step.QUEUED, at, at, None, None, evidence)


def _logged(evidence: dict[str, Any], step: Step, note: str, at: float) -> dict[str, Any]:
    out = dict(evidence)
    if note:
        out["log"] = [*out.get("log", []), {"at": at, "step": str(step), "note": note}]
    return out


def save_record(
    conn: sa.Connection,
    rec: OnboardingRow,
    *,
    step: Step,
    at: float,
    note: str = "",
    op_id: int | None = None,
    check_job_id: int | None = None,
    **evidence: Any,
) -> OnboardingRow:
    """Move a record to ``step`` (``note``: what the step before came to); the record as saved."""
    ev = _logged({**rec.evidence, **evidence}, step, note, at)
    values: dict[str, Any] = {"step": str(step), "step_at": at, "evidence": ev}
    if op_id is not None:
        values["op_id"] = op_id
    if check_job_id is not None:
        values["check_job_id"] = check_job_id
    conn.execute(OB.update().where(OB.c.id == rec.id).values(**values))
    return OnboardingRow(
        rec.id,
        rec.board_id,
        rec.batch,
        step,
        rec.created_at,
        at,
        rec.op_id if op_id is None else op_id,
        rec.check_job_id if check_job_id is None else check_job_id,
        ev,
    )


def finish_record(
    conn: sa.Connection, rec: OnboardingRow, *, outcome: str, reason: str, at: float, **evidence: Any
) -> None:
    """End a record: ``available`` (step done), ``quarantined`` or ``abandoned`` (step failed)."""
    step = Step.DONE if outcome == "available" else Step.FAILED
    ev = _logged({**rec.evidence, **evidence, "reason": reason}, step, reason, at)
    conn.execute(
        OB.update()
        .where(OB.c.id == rec.id)
        .values(step=str(step), step_at=at, finished_at=at, outcome=outcome, evidence=ev)
    )


def facts_of(conn: sa.Connection, board_ids: list[str]) -> dict[str, Facts]:
    """board id -> what inspection reads: the board's reported identity, the inventory's entry
    for it, and its generation's standard firmware."""
    if not board_ids:
        return {}
    b, i, f = t.boards.c, t.inventory_boards.c, t.firmware_images.c
    rows = conn.execute(
        sa.select(b.id, b.generation, b.hardware_revision, b.firmware, i.generation.label("inv_gen"),
                  i.hardware_revision.label("inv_rev"), i.serial.label("inv_serial"))
        .outerjoin(t.inventory_boards, i.serial == b.id)
        .where(b.id.in_(sorted(set(board_ids))))
    ).all()  # fmt: skip
    gens = sorted({r.generation for r in rows})
    standards = {
        s.generation: Standard(s.version, tuple(s.hardware_revisions or ()))
        for s in conn.execute(
            sa.select(f.generation, f.version, f.hardware_revisions).where(f.standard.is_(True), f.generation.in_(gens))
        )
    }
    return {
        r.id: Facts(
            generation=r.generation,
            hardware_revision=r.hardware_revision,
            firmware=r.firmware,
            inventory=None if r.inv_serial is None else Inventoried(r.inv_gen, r.inv_rev),
            standard=standards.get(r.generation),
        )
        for r in rows
    }


def facts_evidence(f: Facts) -> dict[str, Any]:
    """The facts as a record keeps them."""
    return {
        "generation": f.generation,
        "hardware_revision": f.hardware_revision,
        "firmware": f.firmware,
        "inventory": None
        if f.inventory is None
        else {"generation": f.inventory.generation, "hardware_revision": f.inventory.hardware_revision},
        "standard": None
        if f.standard is None
        else {"version": f.standard.version, "hardware_revisions": list(f.standard.hardware_revisions)},
    }


STEPS = tuple(str(s) for s in Step)


def batches(conn: sa.Connection) -> list[dict[str, Any]]:
    """Progress per batch, newest batch first: records per step, first created, last finished,
    boards done (in service) and failed."""
    rows = conn.execute(
        sa.select(OB.c.batch, OB.c.step, sa.func.count(), sa.func.min(OB.c.created_at), sa.func.max(OB.c.finished_at))
        .group_by(OB.c.batch, OB.c.step)
    ).all()  # fmt: skip
    out: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"steps": dict.fromkeys(STEPS, 0), "first_created_at": None, "last_finished_at": None}
    )
    for batch, step, n, first, last in rows:
        e = out[batch]
        e["steps"][step] = e["steps"].get(step, 0) + n
        if first is not None and (e["first_created_at"] is None or first < e["first_created_at"]):
            e["first_created_at"] = first
        if last is not None and (e["last_finished_at"] is None or last > e["last_finished_at"]):
            e["last_finished_at"] = last
    result = []
    for batch, e in out.items():
        steps = e["steps"]
        result.append(
            {
                "batch": batch,
                "boards": sum(steps.values()),
                "steps": steps,
                "done": steps[str(Step.DONE)],
                "failed": steps[str(Step.FAILED)],
                "first_created_at": e["first_created_at"],
                "last_finished_at": e["last_finished_at"],
            }
        )
    return sorted(result, key=lambda e: (-(e["first_created_at"] or 0.0), e["batch"]))


def batch_boards(conn: sa.Connection, batch: str) -> list[dict[str, Any]] | None:
    """Each board of a batch (its latest record there), by board; None: no such batch."""
    latest = sa.select(sa.func.max(OB.c.id)).where(OB.c.batch == batch).group_by(OB.c.board_id)
    rows = conn.execute(sa.select(OB).where(OB.c.id.in_(latest)).order_by(OB.c.board_id)).all()
    if not rows:
        return None
    return [
        {
            "board_id": r.board_id,
            "batch": r.batch,
            "step": r.step,
            "since": r.step_at,
            "created_at": r.created_at,
            "finished_at": r.finished_at,
            "outcome": r.outcome,
            "op_id": r.op_id,
            "check_job_id": r.check_job_id,
            "evidence": dict(r.evidence or {}),
        }
        for r in rows
    ]
