"""Admission: the checks a job spec passes before it may queue, shared by every way a job enters.

The server's submit (:func:`fleetyard.server.services.jobs.submit`) and the pipeline shell
(:class:`fleetyard.controller.pipelines.Pipeliner`, which inserts stage jobs itself) both call
:func:`check_jobs`, so a stage job that a submit would refuse fails its stage with the same
message. The checks, in order, each refusing with a :class:`~fleetyard.errors.BadRequest` (or an
:class:`~fleetyard.errors.UnschedulableJob`) that says what to change:

1. the kind's params (:func:`~fleetyard.workloads.base.validate_params`);
2. the kind's own checks (``admit``: an artifact never registered, inputs that do not fit);
3. the team the job would queue under (the caller's rule: a token's team, a run's team);
4. a firmware selector that no board runs and no registered image matches;
5. the fleet: no set of boards could ever run it (generations, labels, placement);
6. an unknown priority class, or a team queue that can never hold it (its quota's ceiling).

Reads go through a :class:`Reader` (a :class:`~fleetyard.store.db.Store`, or :class:`Within`
an open transaction); nothing is written.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa
from pydantic import BaseModel

from fleetyard.domain.spec import JobSpec
from fleetyard.errors import BadRequest, Forbidden, UnschedulableJob
from fleetyard.policy.placement import Constraints
from fleetyard.policy.queues import QuotaLedger
from fleetyard.policy.scheduling import FleetBoard, constraints_of, pending_job, why_unschedulable
from fleetyard.store import blob_readers
from fleetyard.store import tables as t
from fleetyard.store.blobs import BlobStore
from fleetyard.store.boards import schedulable_boards
from fleetyard.store.queues import read_priority_classes, read_queues
from fleetyard.workloads.base import admit, validate_params, workload_class

__all__ = ["BlobNotLocal", "FleetView", "Reader", "StoreRegistry", "Within", "check_jobs"]


class Reader(Protocol):
    """What admission reads through: ``read()`` gives a connection (a Store is one)."""

    def read(self) -> AbstractContextManager[sa.Connection]: ...


class Within:
    """A :class:`Reader` over a transaction already open (the controller's pass)."""

    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn

    @contextmanager
    def read(self) -> Iterator[sa.Connection]:
        yield self.conn


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

    def boards(self, store: Reader, *, fresh: bool = False) -> list[FleetBoard]:
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


class BlobNotLocal(Exception):
    """A blob the store knows (uploaded) whose file this process cannot read: the kind's checks
    that read it are left to the board, which reports a mismatch as the job's failure."""


class StoreRegistry:
    """What a kind's checks look up (:class:`fleetyard.workloads.admission.Registry`): artifacts,
    blobs, and the devices of the boards the job being checked could run on.

    ``blobs``: the blob store's files (the server's); None where this process has none (the
    controller): a blob is then known by its row, and a check that must read it is skipped
    (:class:`BlobNotLocal`)."""

    def __init__(self, store: Reader, fleet: FleetView, blobs: BlobStore | None = None) -> None:
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
        if self.blobs is not None:
            return self.blobs.path(sha256) if self.blobs.has(sha256) else None
        with self.store.read() as conn:
            known = conn.execute(sa.select(t.blobs.c.sha256).where(t.blobs.c.sha256 == sha256)).first()
        if known is None:
            return None
        raise BlobNotLocal(sha256)


_PLACEMENT_FIELDS = {
    "boards", "generations", "labels", "placement", "placement_required", "board_ids", "exclude_boards", "firmware"
}  # fmt: skip


def _where(i: int, n: int) -> str:
    return f"jobs[{i}]: " if n > 1 else ""


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


def _firmware_pins(store: Reader, specs: list[JobSpec], view: FleetView) -> list[JobSpec]:
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
            registered = sorted(v for g, v in images if g in gens)
            raise UnschedulableJob(
                f"{_where(i, len(specs))}no board runs firmware {selector} and no image of it is registered: "
                f"{'/'.join(sorted(gens)) or 'the fleet'} boards run {', '.join(runs) or 'nothing'}; registered "
                f"images: {', '.join(registered) or 'none'}; push an image (fleetyard firmware push) and roll it "
                "out (fleetyard firmware rollout), or change the job's firmware selector",
                detail={"index": i, "firmware": str(selector), "runs": runs, "registered": registered},
            )
        out.append(spec)
    return out


def _check_queues(store: Reader, specs: list[JobSpec], teams: list[str], view: FleetView) -> None:
    """Refuse a spec naming an unknown priority class, or one its team's queue can never hold (no
    generation it may use has a ceiling, nominal plus all it could borrow, of its boards). The
    queues are read once for the whole batch."""
    with store.read() as conn:
        classes = read_priority_classes(conn)
        queues = read_queues(conn)
    known = [c.name for c in classes]
    ledger = QuotaLedger(queues, {})
    for i, (spec, team) in enumerate(zip(specs, teams, strict=True)):
        where = _where(i, len(specs))
        if spec.priority_class is not None and spec.priority_class not in known:
            raise BadRequest(
                f"{where}unknown priority_class {spec.priority_class!r}; use one of {', '.join(known)} "
                "(or none for the default)",
                detail={"field": "priority_class", "index": i, "known": known},
            )
        named = spec.priority_class or next((c.name for c in classes if c.default), None)
        cls = next((c for c in classes if c.name == named), None)
        if cls is not None and not cls.admits(team):
            raise Forbidden(
                f"{where}team {team!r} may not submit in priority class {cls.name!r} (the queue config lets "
                f"{', '.join(cls.teams or ())} use it); pick another class",
                detail={"field": "priority_class", "index": i, "class": cls.name, "team": team},
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


def _check_blob_reads(
    store: Reader, kind: str, params: BaseModel, team: str, allowed: dict[tuple[str, str], bool]
) -> None:
    """Refuse a blob the kind declares that exists but ``team`` may not read (one that does not
    exist is the kind's checks' to name). ``allowed`` remembers answers across a batch, whose
    thousand specs often name one artifact."""
    declare: Callable[[BaseModel], list[str]] | None = getattr(workload_class(kind), "blobs", None)
    if declare is None:
        return
    declared = list(dict.fromkeys(declare(params)))
    unknown = [sha for sha in declared if (sha, team) not in allowed]
    if unknown:
        with store.read() as conn:
            uploaded = set(conn.execute(sa.select(t.blobs.c.sha256).where(t.blobs.c.sha256.in_(unknown))).scalars())
            for sha in unknown:
                allowed[(sha, team)] = sha not in uploaded or blob_readers.readable(conn, sha, team)
    for sha in declared:
        if not allowed[(sha, team)]:
            fields = {v: k for k, v in params.model_dump().items() if isinstance(v, str)}
            field = f"params.{fields[sha]}: " if sha in fields else ""
            raise BadRequest(
                f"{field}blob {sha} was never uploaded by team {team} (nor made by its jobs, nor a registered"
                f" artifact); upload it first (PUT /v1/blobs/{sha})",
                detail={"field": f"params.{fields.get(sha, '')}".rstrip("."), "sha256": sha, "team": team},
            )


def check_jobs(
    store: Reader,
    specs: list[JobSpec],
    team_of: Callable[[JobSpec], str],
    *,
    view: FleetView,
    registry: StoreRegistry | None,
    team_blobs_only: bool = False,
) -> tuple[list[BaseModel], list[str]]:
    """Every admission check of a batch (all or none), in the module's order; each spec's parsed
    params and team. Raises the first refusal, its message prefixed ``jobs[i]:`` in a batch.
    ``registry`` None: the kinds' own checks are skipped. ``team_blobs_only`` (a user's submit): a
    job may use only blobs its team may read, else it would hand another team's inputs to its ranks."""
    params: list[BaseModel] = []
    teams: list[str] = []
    blobs_allowed: dict[tuple[str, str], bool] = {}
    for i, spec in enumerate(specs):
        try:
            parsed = validate_params(spec.kind, spec.params)
            if team_blobs_only:
                # Before the kind's checks: their refusals would tell what another team's file holds.
                _check_blob_reads(store, spec.kind, parsed, team_of(spec), blobs_allowed)
            if registry is not None:
                registry.spec = spec
                try:
                    admit(spec.kind, parsed, registry)
                except BlobNotLocal:
                    pass  # what is left of the kind's checks runs on the board
        except BadRequest as exc:
            exc.message = f"{_where(i, len(specs))}{exc.message}"
            raise
        params.append(parsed)
        teams.append(team_of(spec))
    placed = _firmware_pins(store, specs, view)
    if _refusal(placed, view.boards(store)) and (refused := _refusal(placed, view.boards(store, fresh=True))):
        index, reason = refused
        raise UnschedulableJob(
            f"{_where(index, len(specs))}job can never run: {reason}", detail={"index": index, "reason": reason}
        )
    # After the fleet's check: a generation that does not exist is better said so than as a quota.
    _check_queues(store, specs, teams, view)
    return params, teams
