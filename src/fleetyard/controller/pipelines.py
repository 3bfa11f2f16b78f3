"""The pipeline shell: each running pipeline run, once per slow pass, in the caller's transaction.

It reads each instance's job (ended: succeeded or failed, with the job's metrics and outputs),
asks :func:`~fleetyard.policy.pipeline.advance` what next, and carries it out: a job queued for an
instance that starts (its spec rendered from params, matrix and earlier stages; the run's owner
and team), an instance skipped or failed with the reason, jobs canceled past the time limit, and
the run's verdict. A job's metrics are its kind's (``metrics(results)`` on the workload class,
e.g. the eval kind's accuracy over every rank), else rank 0's numbers; its outputs are its
ranks' files by name (blob sha256s), by the rule of
:func:`~fleetyard.policy.pipeline.stage_outputs` (rank 0's under the bare name, each rank's as
``NAME@RANK``). Before a job is queued it passes the checks a submit makes
(:func:`fleetyard.store.admission.check_jobs`); one refused fails its instance, saying why.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError

from fleetyard.domain.job import JobState
from fleetyard.domain.spec import JobSpec
from fleetyard.errors import FleetyardError
from fleetyard.policy.pipeline import Decision, StageState, advance, stage_outputs
from fleetyard.store import tables as t
from fleetyard.store.admission import FleetView, StoreRegistry, Within, check_jobs
from fleetyard.store.attempts import stop_job
from fleetyard.store.pipelines import RUNNING, instances, spec_of, update_instance
from fleetyard.workloads.base import workload_class

__all__ = ["Pipeliner", "job_metrics"]

log = logging.getLogger(__name__)


def job_metrics(kind: str, results: list[dict[str, Any]]) -> dict[str, Any]:
    """What a pipeline's conditions read of a finished job."""
    try:
        metrics = getattr(workload_class(kind), "metrics", None)
    except FleetyardError:
        metrics = None
    if metrics is not None and results:
        try:
            return dict(metrics(results))
        except (ValueError, KeyError, TypeError) as e:
            log.warning("%s metrics of a job could not be combined: %s", kind, e)
    first = results[0] if results else {}
    return {k: v for k, v in first.items() if isinstance(v, int | float | bool | str)}


@dataclass
class Pipeliner:
    """Keeps nothing between passes but a cache of the fleet's boards: everything is in the store.

    The controller has no blob files (the server keeps them, maybe on another host): a stage job's
    blobs are known by their rows, and the checks that read a blob's bytes (inputs against the
    artifact) are the board's."""

    view: FleetView = field(default_factory=FleetView)

    def pass_(self, conn: sa.Connection, now: float) -> int:
        """One pass over every running run; how many runs ended."""
        ended = 0
        R = t.pipeline_runs
        for run_id in conn.execute(sa.select(R.c.id).where(R.c.state == RUNNING).order_by(R.c.id)).scalars().all():
            if self._run(conn, run_id, now):
                ended += 1
        return ended

    def _run(self, conn: sa.Connection, run_id: int, now: float) -> bool:
        """One run's step, with its row held until the pass commits, as a cancel holds it
        (:func:`fleetyard.server.services.pipelines.cancel`): a run canceled while this pass
        waited is left alone, and a cancel that waited for this pass sees the jobs it queued."""
        R = t.pipeline_runs
        run = conn.execute(sa.select(R).where(R.c.id == run_id).with_for_update(key_share=True)).first()
        if run is None or run.state != RUNNING:
            return False
        spec = spec_of(run)
        rows = {i.name: i for i in instances(conn, run.id)}
        for i in rows.values():
            if i.state is StageState.RUNNING and i.job_id is not None:
                self._collect(conn, run.id, i.name, i.job_id, now)
        rows = {i.name: i for i in instances(conn, run.id)}
        d = advance(spec, {n: i.seen() for n, i in rows.items()}, started_at=run.created_at, now=now)
        self._apply(conn, run, rows, d, now, spent={s: st.retries + 1 for s, st in spec.stages.items()})
        if d.verdict is None:
            return False
        skipped = [f"{i.name} ({why})" for i, why, _ in d.skip]
        message = f"{d.verdict}" + (f": skipped {', '.join(skipped)}" if skipped else "")
        conn.execute(
            t.pipeline_runs.update()
            .where(t.pipeline_runs.c.id == run.id)
            .values(state=str(d.verdict), finished_at=now, message=message)
        )
        log.info("pipeline run %d (%s): %s", run.id, run.name, message)
        return True

    def _collect(self, conn: sa.Connection, run_id: int, name: str, job_id: int, now: float) -> None:
        job = conn.execute(
            sa.select(t.jobs.c.state, t.jobs.c.kind, t.jobs.c.message).where(t.jobs.c.id == job_id)
        ).first()
        if job is None or not JobState(job.state).finished:
            return
        ranks = conn.execute(
            sa.select(t.assignments.c.rank, t.assignments.c.result, t.assignments.c.outputs)
            .join(t.attempts, t.attempts.c.id == t.assignments.c.attempt_id)
            .where(t.assignments.c.job_id == job_id, t.attempts.c.state != "running")
            .order_by(t.assignments.c.attempt_id.desc(), t.assignments.c.rank)
        ).all()
        last: dict[int, Any] = {}
        for r in ranks:  # the last attempt's ranks
            last.setdefault(r.rank, r)
        results = [dict(last[k].result or {}) for k in sorted(last)]
        outputs = stage_outputs({k: dict(last[k].outputs or {}) for k in last})
        ok = job.state == JobState.SUCCEEDED
        update_instance(
            conn, run_id, name, at=now,
            state=str(StageState.SUCCEEDED if ok else StageState.FAILED),
            metrics=job_metrics(job.kind, results) if ok else {},
            outputs=outputs, message=None if ok else f"job {job_id} {job.state}: {job.message or ''}".strip(),
        )  # fmt: skip

    def _refuse(self, conn: sa.Connection, run: Any, name: str, now: float, spent: int, message: str) -> None:
        """An instance whose job a submit would refuse fails, for good (its retries would be too)."""
        update_instance(conn, run.id, name, at=now, state=str(StageState.FAILED), attempts=spent, message=message)
        log.warning("pipeline run %d: %s cannot start: %s", run.id, name, message)

    def _apply(
        self, conn: sa.Connection, run: Any, rows: dict[str, Any], d: Decision, now: float, *, spent: dict[str, int]
    ) -> None:
        """Carry out a decision (``spent``: per stage, the attempts that leave no retry)."""
        for inst, job in d.start:
            attempt = rows[inst.name].attempts + 1
            try:
                spec = JobSpec.model_validate({**job, "name": f"pipeline {run.id} {inst.name}", "team": run.team})
            except ValidationError as e:
                first = e.errors()[0]
                where = ".".join(map(str, first["loc"]))
                self._refuse(
                    conn, run, inst.name, now, spent[inst.stage], f"its job spec is invalid: {where}: {first['msg']}"
                )
                continue
            reader = Within(conn)
            try:  # the checks a submit makes (fleetyard.store.admission), with the same messages
                check_jobs(reader, [spec], lambda _: str(run.team), view=self.view,
                           registry=StoreRegistry(reader, self.view))  # fmt: skip
            except FleetyardError as e:
                self._refuse(conn, run, inst.name, now, spent[inst.stage], f"its job was refused: {e.message}")
                continue
            job_id: int = conn.execute(
                t.jobs.insert()
                .values(
                    name=spec.name,
                    kind=spec.kind,
                    state=str(JobState.QUEUED),
                    team=run.team,
                    owner=run.owner,
                    priority=spec.priority,
                    spec=spec.model_dump(mode="json"),
                    submitted_at=now,
                )
                .returning(t.jobs.c.id)
            ).scalar_one()
            update_instance(
                conn, run.id, inst.name, at=now, state=str(StageState.RUNNING), attempts=attempt, job_id=job_id,
                message=None,
            )  # fmt: skip
            log.info("pipeline run %d: %s started as job %d (attempt %d)", run.id, inst.name, job_id, attempt)
        for inst, why, gated in d.skip:
            update_instance(conn, run.id, inst.name, at=now, state=str(StageState.SKIPPED), gated=gated, message=why)
        for inst, why in d.fail:
            update_instance(
                conn, run.id, inst.name, at=now, state=str(StageState.FAILED), attempts=spent[inst.stage], message=why
            )
        for inst in d.cancel:
            job_id = rows[inst.name].job_id
            if job_id is not None:
                stop_job(conn, job_id, at=now, message=f"pipeline run {run.id} ran past its time limit")
