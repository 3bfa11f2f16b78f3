"""Pipeline runs: start (the spec checked, each job that can be filled in now checked too), list,
show, cancel. The controller's pipeline shell (:mod:`fleetyard.controller.pipelines`) runs them."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError

from fleetyard.domain.auth import Principal, Role, may_read
from fleetyard.domain.pipeline import expand, parse_pipeline, render
from fleetyard.domain.spec import JobSpec
from fleetyard.errors import BadRequest, Conflict, Forbidden, NotFound
from fleetyard.policy.pipeline import StageState, context
from fleetyard.protocol.api import PipelineIn, PipelineRunOut, PipelineStageOut
from fleetyard.server.services.audit import note
from fleetyard.store import tables as t
from fleetyard.store.admission import FleetView, StoreRegistry, check_jobs
from fleetyard.store.attempts import stop_job
from fleetyard.store.blobs import BlobStore
from fleetyard.store.db import Store
from fleetyard.store.pipelines import RUNNING, create_run, instances, spec_of, update_instance

R = t.pipeline_runs


def start(
    store: Store,
    *,
    principal: Principal,
    req: PipelineIn,
    at: float,
    fleet: FleetView | None = None,
    blobs: BlobStore | None = None,
) -> PipelineRunOut:
    """Start a run. Each stage job that can be filled in now (it reads no earlier stage) passes the
    checks a submit makes (:func:`fleetyard.store.admission.check_jobs`) or the run is refused,
    naming the stage; the others are checked by the controller when they start."""
    if principal.role is Role.AGENT:
        raise Forbidden("agent tokens cannot start pipelines")
    spec = parse_pipeline(req.text, overrides=req.params)
    team = principal.team or ("default" if principal.role is Role.USER else "ops")
    view = fleet or FleetView()
    registry = StoreRegistry(store, view, blobs)
    for inst in expand(spec):
        try:
            job = render(spec.stages[inst.stage].job, context(spec, inst, {}))
        except KeyError:
            continue  # it reads an earlier stage: checked when it starts
        try:
            checked = JobSpec.model_validate({**job, "team": team})
            check_jobs(
                store,
                [checked],
                lambda _: team,
                view=view,
                registry=registry,
                team_blobs_only=principal.role is Role.USER,
            )
        except ValidationError as e:
            first = e.errors()[0]
            raise BadRequest(
                f"stage {inst.name}: job.{'.'.join(map(str, first['loc']))}: {first['msg']}",
                detail={"stage": inst.name},
            ) from None
        except BadRequest as e:
            e.message, e.detail = f"stage {inst.name}: {e.message}", {"stage": inst.name, "refusal": e.detail}
            raise
    with store.write() as conn:
        run_id = create_run(conn, spec, owner=principal.name, team=team, at=at)
        note(conn, principal, "pipeline.start", str(run_id), at=at, detail={"name": spec.name, "params": req.params})
    return get(store, run_id=run_id, reader=principal)


def _out(conn: sa.Connection, row: Any, *, stages: bool) -> PipelineRunOut:
    out = PipelineRunOut(
        id=row.id, name=row.name, state=row.state, owner=row.owner, team=row.team, created_at=row.created_at,
        finished_at=row.finished_at, message=row.message,
    )  # fmt: skip
    if stages:
        spec = spec_of(row)
        out.needs = {s: list(st.needs) for s, st in spec.stages.items()}
        out.stages = [
            PipelineStageOut(
                name=i.name,
                stage=i.stage,
                matrix=i.matrix,
                state=str(i.state),
                attempts=i.attempts,
                job_id=i.job_id,
                metrics=i.metrics,
                outputs=i.outputs,
                gated=i.gated,
                message=i.message,
                updated_at=i.updated_at,
            )
            for i in instances(conn, row.id)
        ]
    return out


def _row(conn: sa.Connection, run_id: int, *, for_update: bool = False) -> Any:
    q = sa.select(R).where(R.c.id == run_id)
    row = conn.execute(q.with_for_update(key_share=True) if for_update else q).first()
    if row is None:
        raise NotFound(f"no pipeline run {run_id} (fleetyard pipeline ls)", detail={"id": run_id})
    return row


def get(store: Store, *, run_id: int, reader: Principal) -> PipelineRunOut:
    """A run with its stages (their jobs, metrics and outputs): its team's and staff's to read."""
    with store.read() as conn:
        row = _row(conn, run_id)
        if not may_read(reader, row.team, False):
            raise Forbidden(
                f"pipeline run {run_id} is team {row.team!r}'s: its stages, metrics and outputs are that team's"
            )
        return _out(conn, row, stages=True)


def list_runs(store: Store, *, reader: Principal, state: str | None = None, limit: int = 50) -> list[PipelineRunOut]:
    """Runs, newest first; another team's shows that it exists, not its message."""
    q = sa.select(R).order_by(R.c.id.desc()).limit(limit)
    if state:
        q = q.where(R.c.state == state)
    with store.read() as conn:
        runs = [_out(conn, r, stages=False) for r in conn.execute(q)]
    for run in runs:
        if not may_read(reader, run.team, False):
            run.message = None
    return runs


def cancel(store: Store, *, principal: Principal, run_id: int, at: float) -> PipelineRunOut:
    """Cancel a running run: its stage jobs stop, its waiting and running stages are skipped.
    Run again when PostgreSQL aborts it for a deadlock (``Store.transact``): a stage job's stop
    takes the job, then its attempt, while an attempt that settles takes them the other way."""

    def cancel_in(conn: sa.Connection) -> PipelineRunOut:
        # Held until the cancel commits, as the controller's pipeline pass holds it
        # (fleetyard.controller.pipelines): the stages read below include every job a pass
        # queued, and no pass starts one for this run after.
        row = _row(conn, run_id, for_update=True)
        if principal.role is Role.USER and row.owner != principal.name:
            raise Forbidden(f"pipeline run {run_id} is {row.owner}'s: only its owner or staff cancel it")
        if row.state != RUNNING:
            raise Conflict(f"pipeline run {run_id} is {row.state} already: nothing to cancel")
        for i in instances(conn, run_id):
            if i.state is StageState.RUNNING and i.job_id is not None:
                stop_job(conn, i.job_id, at=at, message=f"pipeline run {run_id} canceled by {principal.name}")
            if i.state in (StageState.RUNNING, StageState.WAITING):
                update_instance(conn, run_id, i.name, at=at, state=str(StageState.SKIPPED), message="canceled")
        conn.execute(
            R.update()
            .where(R.c.id == run_id)
            .values(state="canceled", finished_at=at, message=f"canceled by {principal.name}")
        )
        note(conn, principal, "pipeline.cancel", str(run_id), at=at)
        return _out(conn, _row(conn, run_id), stages=True)

    return store.transact(cancel_in)
