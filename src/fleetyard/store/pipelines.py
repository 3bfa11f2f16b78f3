"""Pipeline runs and their stage instances in the store."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from fleetyard.domain.pipeline import PipelineSpec, expand
from fleetyard.policy.pipeline import Seen, StageState
from fleetyard.store import tables as t

__all__ = ["RUNNING", "InstanceRow", "create_run", "instances", "spec_of"]

RUNNING = "running"
R, P = t.pipeline_runs, t.pipeline_stages


@dataclass(frozen=True)
class InstanceRow:
    name: str
    stage: str
    position: int
    matrix: dict[str, Any]
    state: StageState
    attempts: int
    job_id: int | None
    metrics: dict[str, Any]
    outputs: dict[str, Any]
    gated: bool
    message: str | None
    updated_at: float

    def seen(self) -> Seen:
        return Seen(self.state, self.attempts, self.metrics, self.outputs, self.gated)


def create_run(conn: sa.Connection, spec: PipelineSpec, *, owner: str, team: str, at: float) -> int:
    """A run of ``spec`` (params filled in), every instance waiting."""
    run_id: int = conn.execute(
        R.insert()
        .values(
            name=spec.name,
            spec=spec.model_dump(mode="json", by_alias=True),
            state=RUNNING,
            owner=owner,
            team=team,
            created_at=at,
        )
        .returning(R.c.id)
    ).scalar_one()
    conn.execute(
        P.insert(),
        [
            {
                "run_id": run_id,
                "name": i.name,
                "stage": i.stage,
                "position": n,
                "matrix": dict(i.matrix),
                "state": str(StageState.WAITING),
                "attempts": 0,
                "metrics": {},
                "outputs": {},
                "gated": False,
                "updated_at": at,
            }
            for n, i in enumerate(expand(spec))
        ],
    )
    return run_id


def spec_of(row: Any) -> PipelineSpec:
    return PipelineSpec.model_validate(row.spec)


def instances(conn: sa.Connection, run_id: int) -> list[InstanceRow]:
    return [
        InstanceRow(
            r.name,
            r.stage,
            r.position,
            dict(r.matrix or {}),
            StageState(r.state),
            r.attempts,
            r.job_id,
            dict(r.metrics or {}),
            dict(r.outputs or {}),
            r.gated,
            r.message,
            r.updated_at,
        )
        for r in conn.execute(sa.select(P).where(P.c.run_id == run_id).order_by(P.c.position))
    ]


def update_instance(conn: sa.Connection, run_id: int, name: str, *, at: float, **values: Any) -> None:
    conn.execute(P.update().where(P.c.run_id == run_id, P.c.name == name).values(updated_at=at, **values))
