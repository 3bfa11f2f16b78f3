"""Jobs: submit, list, show, cancel, logs, results."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from fleetyard.domain.auth import Principal, Role
from fleetyard.domain.job import JobState
from fleetyard.domain.spec import JobSpec
from fleetyard.errors import BadRequest, Forbidden, NotFound, UnschedulableJob
from fleetyard.policy.placement import Constraints
from fleetyard.policy.queues import QuotaLedger
from fleetyard.policy.scheduling import FleetBoard, constraints_of, pending_job, why_unschedulable
from fleetyard.protocol.api import JobDetail, JobOut, LogChunk, LogsOut, ResultsOut
from fleetyard.server.services.audit import note
from fleetyard.server.services.views import job_detail, job_out, rank_out
from fleetyard.store import tables as t
from fleetyard.store.attempts import stop_job
from fleetyard.store.blobs import BlobStore
from fleetyard.store.boards import schedulable_boards
from fleetyard.store.db import Store
from fleetyard.store.queues import read_priority_classes, read_queues
from fleetyard.workloads.base import admit, validate_params


class FleetView:
    """The boards a job could one day run on, for refusing jobs that never can.

    Read at most every ``ttl_s``: a submit must not scan ten thousand boards. A refusal is
    always confirmed against a fresh read, so a board that just arrived is never missed.
    """

    def __init__(self, ttl_s: float = 2.0) -> None:
        self.ttl_s = ttl_s
        self._boards: list[FleetBoard] = []
        self._read_at = -float("inf")
        self._lock = threading.Lock()

    def boards(self, store: Store, *, fresh: bool = False) -> list[FleetBoard]:
        with self._lock:
            if fresh or time.monotonic() - self._read_at > self.ttl_s:
                with store.read() as conn:
                    rows = schedulable_boards(conn)
                self._boards = [
                    FleetBoard(
                        r.id, r.host_id, r.generation, r.labels, r.device, r.firmware, str(r.labels.get("rack", ""))
                    )
                    for r in rows
                ]
                self._read_at = time.monotonic()
            return self._boards


_PLACEMENT_FIELDS = {
    "boards", "generations", "labels", "placement", "placement_required", "board_ids", "exclude_boards", "firmware"
}  # fmt: skip


def _refusal(specs: list[JobSpec], fleet: list[FleetBoard]) -> tuple[int, str] | None:
    """The first spec that can never run on ``fleet``, and why."""
    checked: dict[str, str | None] = {}
    for i, spec in enumerate(specs):
        key = spec.model_dump_json(include=_PLACEMENT_FIELDS)
        if key not in checked:
            checked[key] = why_unschedulable(pending_job(0, spec, queue=spec.team or ""), fleet)
        reason = checked[key]
        if reason:
            return i, reason
    return None


def _firmware_pins(store: Store, specs: list[JobSpec], view: FleetView) -> list[JobSpec]:
    """The specs as the fleet check should see them. A firmware selector that a registered image of
    a generation the job may use matches is no refusal (a rollout may flash it; the job waits):
    checked without it. One that no board runs and no such image matches is refused, saying so."""
    if not any(s.firmware for s in specs):
        return specs
    with store.read() as conn:
        f = t.firmware_images.c
        images = [(r.generation, r.version) for r in conn.execute(sa.select(f.generation, f.version))]
    out = []
    for i, spec in enumerate(specs):
        selector = spec.firmware_selector()
        if selector is None:
            out.append(spec)
            continue
        gens = set(spec.generations) or {b.generation for b in view.boards(store)} | {g for g, _ in images}
        if any(g in gens and selector.matches(v) for g, v in images):
            out.append(spec.model_copy(update={"firmware": None}))
            continue
        for fresh in (False, True):  # a refusal is confirmed against a fresh read
            runs = sorted({b.firmware for b in view.boards(store, fresh=fresh) if b.generation in gens})
            if any(selector.matches(v) for v in runs):
                break
        else:
            where = f"jobs[{i}]: " if len(specs) > 1 else ""
            registered = sorted(v for g, v in images if g in gens)
            raise UnschedulableJob(
                f"{where}no board runs firmware {selector} and no image of it is registered: "
                f"{'/'.join(sorted(gens)) or 'the fleet'} boards run {', '.join(runs) or 'nothing'}; registered "
                f"images: {', '.join(registered) or 'none'}; push an image (fleetyard firmware push) and roll it "
                "out (fleetyard firmware rollout), or change the job's firmware selector",
                detail={"index": i, "firmware": str(selector), "runs": runs, "registered": registered},
            )
        out.append(spec)
    return out


def _team_for(principal: Principal, spec: JobSpec) -> str:
    if principal.role is Role.USER:
        if spec.team and spec.team != principal.team:
            raise Forbidden(
                f"token {principal.name!r} belongs to team {principal.team!r} and cannot submit for team {spec.team!r}",
                detail={"field": "team"},
            )
        return principal.team or "default"
    if principal.role is Role.AGENT:
        raise Forbidden("agent tokens cannot submit jobs")
    return spec.team or principal.team or "ops"


def _check_queues(store: Store, specs: list[JobSpec], teams: list[str], view: FleetView) -> None:
    """Refuse a spec naming an unknown priority class, or one its team's queue can never hold (no
    generation it may use has a ceiling, nominal plus all it could borrow, of its boards). The
    queues are read once for the whole batch."""
    with store.read() as conn:
        classes = read_priority_classes(conn)
        queues = read_queues(conn)
    known = [c.name for c in classes]
    ledger = QuotaLedger(queues, {})
    for i, (spec, team) in enumerate(zip(specs, teams, strict=True)):
        where = f"jobs[{i}]: " if len(specs) > 1 else ""
        if spec.priority_class is not None and spec.priority_class not in known:
            raise BadRequest(
                f"{where}unknown priority_class {spec.priority_class!r}; use one of {', '.join(known)} "
                "(or none for the default)",
                detail={"field": "priority_class", "index": i, "known": known},
            )
        if team not in queues:
            continue  # a team without a queue is unlimited
        gens = spec.generations or sorted({b.generation for b in view.boards(store)})
        reason = ledger.refusal(team, gens, spec.boards) if gens else None
        if reason and not spec.generations:  # confirm against a fresh read: a new generation may have come
            gens = sorted({b.generation for b in view.boards(store, fresh=True)})
            reason = ledger.refusal(team, gens, spec.boards) if gens else None
        if reason:
            raise UnschedulableJob(f"{where}job can never run: {reason}", detail={"index": i, "reason": reason})


class SubmitRegistry:
    """What a submit's checks look up (:class:`fleetyard.workloads.admission.Registry`): artifacts,
    blobs, and the devices of the boards the job being checked could run on."""

    def __init__(self, store: Store, blobs: BlobStore, fleet: FleetView) -> None:
        self.store, self.blobs, self.fleet = store, blobs, fleet
        self._infos: dict[str, dict[str, Any] | None] = {}
        self._devices: dict[Constraints, dict[str, str]] = {}  # a batch of jobs alike scans the fleet once
        self.spec: JobSpec | None = None  # the job being checked

    def board_devices(self) -> dict[str, str]:
        if self.spec is None:
            return {}
        c = constraints_of(self.spec)
        if c not in self._devices:
            self._devices[c] = {b.id: b.device for b in self.fleet.boards(self.store) if c.admits(b.view())}
        return self._devices[c]

    def artifact_info(self, sha256: str) -> dict[str, Any] | None:
        if sha256 not in self._infos:  # a batch of jobs of one artifact reads it once
            with self.store.read() as conn:
                info = conn.execute(sa.select(t.artifacts.c.info).where(t.artifacts.c.sha256 == sha256)).scalar()
            self._infos[sha256] = info
        return self._infos[sha256]

    def blob_path(self, sha256: str) -> Path | None:
        return self.blobs.path(sha256) if self.blobs.has(sha256) else None


def submit(
    store: Store,
    *,
    principal: Principal,
    specs: list[JobSpec],
    at: float,
    fleet: FleetView | None = None,
    blobs: BlobStore | None = None,
) -> list[int]:
    """Queue jobs, all or none. A spec that can never run on this fleet is refused, saying why;
    so is one whose kind's checks refuse it (an artifact never pushed, inputs that do not fit)."""
    rows: list[dict[str, Any]] = []
    view = fleet or FleetView()
    registry = SubmitRegistry(store, blobs, view) if blobs is not None else None
    for i, spec in enumerate(specs):
        params = validate_params(spec.kind, spec.params)
        if registry is not None:
            registry.spec = spec
            try:
                admit(spec.kind, params, registry)
            except BadRequest as exc:
                if len(specs) > 1:
                    exc.message = f"jobs[{i}]: {exc.message}"
                raise
        rows.append(
            {
                "name": spec.name,
                "kind": spec.kind,
                "state": str(JobState.QUEUED),
                "team": _team_for(principal, spec),
                "owner": principal.name,
                "priority": spec.priority,
                "spec": spec.model_dump(mode="json"),
                "submitted_at": at,
            }
        )
    placed = _firmware_pins(store, specs, view)
    if _refusal(placed, view.boards(store)) and (refused := _refusal(placed, view.boards(store, fresh=True))):
        index, reason = refused
        where = f"jobs[{index}]: " if len(specs) > 1 else ""
        raise UnschedulableJob(f"{where}job can never run: {reason}", detail={"index": index, "reason": reason})
    # After the fleet's check: a generation that does not exist is better said so than as a quota.
    _check_queues(store, specs, [r["team"] for r in rows], view)
    with store.write() as conn:
        ids = conn.execute(t.jobs.insert().returning(t.jobs.c.id, sort_by_parameter_order=True), rows)
        return [r[0] for r in ids]


def _job_row(conn: sa.Connection, job_id: int) -> sa.Row[Any]:
    row = conn.execute(sa.select(t.jobs).where(t.jobs.c.id == job_id)).first()
    if row is None:
        raise NotFound(f"no job {job_id}")
    return row


def get(store: Store, *, job_id: int) -> JobDetail:
    with store.read() as conn:
        return job_detail(conn, _job_row(conn, job_id))


def get_brief(store: Store, *, job_id: int) -> JobOut:
    with store.read() as conn:
        return job_out(_job_row(conn, job_id))


def list_jobs(
    store: Store,
    *,
    state: str | None = None,
    team: str | None = None,
    kind: str | None = None,
    limit: int = 100,
    before: int | None = None,
) -> list[JobOut]:
    q = sa.select(t.jobs).order_by(t.jobs.c.id.desc()).limit(limit)
    if state:
        q = q.where(t.jobs.c.state == state)
    if team:
        q = q.where(t.jobs.c.team == team)
    if kind:
        q = q.where(t.jobs.c.kind == kind)
    if before:
        q = q.where(t.jobs.c.id < before)
    with store.read() as conn:
        return [job_out(r) for r in conn.execute(q)]


def cancel(store: Store, *, principal: Principal, job_id: int, at: float) -> JobOut:
    """Cancel a queued job at once; a running one stops when its agents have killed its ranks."""
    with store.write() as conn:
        job = _job_row(conn, job_id)
        if principal.role is Role.AGENT or (principal.role is Role.USER and job.team != principal.team):
            raise Forbidden(f"token {principal.name!r} may not cancel job {job_id} of team {job.team!r}")
        if JobState(job.state).finished:
            return job_out(job)
        stop_job(conn, job_id, at=at, message=f"canceled by {principal.name}")
        if principal.name != job.owner and not job.cancel_requested:
            # Cancelling one's own job is ordinary use; cancelling another's is an action to account
            # for (once: a second cancel of a running job that is stopping changes nothing).
            note(conn, principal, "job.cancel", str(job_id), at=at, detail={"owner": job.owner, "team": job.team})
        return job_out(_job_row(conn, job_id))


def logs(store: Store, *, job_id: int, after: int = 0, limit: int = 5000) -> LogsOut:
    with store.read() as conn:
        job = _job_row(conn, job_id)
        rows = conn.execute(
            sa.select(t.logs).where(t.logs.c.job_id == job_id, t.logs.c.id > after).order_by(t.logs.c.id).limit(limit)
        ).all()
    chunks = [LogChunk(attempt_id=r.attempt_id, rank=r.rank, seq=r.seq, at=r.at, data=r.data) for r in rows]
    return LogsOut(
        job_id=job_id,
        chunks=chunks,
        cursor=rows[-1].id if rows else after,
        finished=JobState(job.state).finished,
    )


def results(store: Store, *, job_id: int) -> ResultsOut:
    with store.read() as conn:
        job = _job_row(conn, job_id)
        attempt_id = conn.execute(sa.select(sa.func.max(t.attempts.c.id)).where(t.attempts.c.job_id == job_id)).scalar()
        ranks = (
            conn.execute(
                sa.select(t.assignments).where(t.assignments.c.attempt_id == attempt_id).order_by(t.assignments.c.rank)
            ).all()
            if attempt_id
            else []
        )
    return ResultsOut(
        job_id=job_id,
        state=job.state,
        outcome=job.outcome,
        attempt_id=attempt_id,
        ranks=[rank_out(r) for r in ranks],
    )
