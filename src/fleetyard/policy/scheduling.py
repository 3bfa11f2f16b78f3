"""Scheduling v0: priority first, then FIFO; constraint matching; gangs get all K boards or none.

The full scheduler (queues, quotas, fair share, preemption, backfill) replaces this module; the
controller only depends on :func:`schedule` and the snapshot types.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from fleetyard.domain.spec import JobSpec, Placement


@dataclass(frozen=True)
class PendingJob:
    id: int
    priority: int
    submitted_at: float
    boards: int
    generations: frozenset[str]
    labels: Mapping[str, str]
    placement: Placement
    board_ids: frozenset[str] = frozenset()  # only these boards; empty means any


def pending_job(job_id: int, spec: JobSpec, *, priority: int, submitted_at: float) -> PendingJob:
    """The scheduler's view of a queued job."""
    return PendingJob(
        id=job_id,
        priority=priority,
        submitted_at=submitted_at,
        boards=spec.boards,
        generations=frozenset(spec.generations),
        labels=spec.labels,
        placement=spec.placement,
        board_ids=frozenset(spec.board_ids),
    )


@dataclass(frozen=True)
class FreeBoard:
    id: str
    host_id: str
    slot: int
    generation: str
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Binding:
    job_id: int
    board_ids: tuple[str, ...]  # index = rank


def matches(job: PendingJob, board: FreeBoard) -> bool:
    if job.board_ids and board.id not in job.board_ids:
        return False
    if job.generations and board.generation not in job.generations:
        return False
    return all(board.labels.get(k) == v for k, v in job.labels.items())


def queue_order(jobs: Iterable[PendingJob]) -> list[PendingJob]:
    """Higher priority first; within a priority, first come first served."""
    return sorted(jobs, key=lambda j: (-j.priority, j.submitted_at, j.id))


def _pick(job: PendingJob, free: Sequence[FreeBoard]) -> tuple[str, ...] | None:
    candidates = [b for b in free if matches(job, b)]
    if len(candidates) < job.boards:
        return None
    by_host: dict[str, list[FreeBoard]] = defaultdict(list)
    for b in candidates:
        by_host[b.host_id].append(b)
    if job.placement is Placement.SAME_HOST:
        fitting = [h for h, bs in by_host.items() if len(bs) >= job.boards]
        if not fitting:
            return None
        # Best fit: the host with the fewest free boards that still fits keeps big holes for big gangs.
        host = min(fitting, key=lambda h: (len(by_host[h]), h))
        chosen = sorted(by_host[host], key=lambda b: b.slot)[: job.boards]
        return tuple(b.id for b in chosen)
    # Anywhere: fill the fullest-fitting hosts first so gangs span as few hosts as possible.
    hosts = sorted(by_host, key=lambda h: (-len(by_host[h]), h))
    picked: list[str] = []
    for h in hosts:
        for b in sorted(by_host[h], key=lambda b: b.slot):
            picked.append(b.id)
            if len(picked) == job.boards:
                return tuple(picked)
    return None  # unreachable: len(candidates) >= job.boards


def schedule(jobs: Sequence[PendingJob], free_boards: Sequence[FreeBoard]) -> list[Binding]:
    """Bind queued jobs to free boards. A job that does not fit now is skipped, not blocking."""
    free = list(free_boards)
    bindings: list[Binding] = []
    for job in queue_order(jobs):
        if not free:
            break
        chosen = _pick(job, free)
        if chosen is None:
            continue
        taken = set(chosen)
        free = [b for b in free if b.id not in taken]
        bindings.append(Binding(job_id=job.id, board_ids=chosen))
    return bindings


@dataclass(frozen=True)
class FleetBoard:
    """A board that could one day run work (any state but retired or quarantined)."""

    id: str
    host_id: str
    generation: str
    labels: Mapping[str, str] = field(default_factory=dict)
    device: str = ""  # what the board's driver calls it: "sim:3", "cpu:0-7", "cuda:1"


def could_run_on(job: PendingJob, fleet: Sequence[FleetBoard]) -> list[FleetBoard]:
    """The boards of ``fleet`` that match ``job``'s constraints."""
    return [b for b in fleet if matches(job, FreeBoard(b.id, b.host_id, 0, b.generation, b.labels))]


def why_unschedulable(job: PendingJob, fleet: Sequence[FleetBoard]) -> str | None:
    """Why a job can never run on this fleet, or None if some set of boards could take it."""
    if job.board_ids:
        ids = {b.id for b in fleet}
        absent = sorted(job.board_ids - ids)
        if len(absent) > len(job.board_ids) - job.boards:
            return f"board(s) {', '.join(absent)} not in the fleet (or retired or quarantined)"
    known = sorted({b.generation for b in fleet})
    unknown = sorted(job.generations - set(known))
    if job.generations and len(unknown) == len(job.generations):
        return f"unknown generation {', '.join(unknown)}; the fleet has: {', '.join(known) or 'no boards'}"
    as_free = [FreeBoard(b.id, b.host_id, 0, b.generation, b.labels) for b in fleet]
    candidates = [b for b in as_free if matches(job, b)]
    wanted = _describe(job)
    if len(candidates) < job.boards:
        return f"asks for {job.boards} boards ({wanted}) but the fleet has only {len(candidates)} such boards"
    if job.placement is Placement.SAME_HOST:
        per_host: dict[str, int] = defaultdict(int)
        for b in candidates:
            per_host[b.host_id] += 1
        most = max(per_host.values())
        if most < job.boards:
            return f"asks for {job.boards} boards ({wanted}) on one host but no host has more than {most}"
    return None


def _describe(job: PendingJob) -> str:
    parts = [f"generation in {{{', '.join(sorted(job.generations))}}}" if job.generations else "any generation"]
    parts += [f"{k}={v}" for k, v in sorted(job.labels.items())]
    if job.board_ids:
        parts.append(f"board in {{{', '.join(sorted(job.board_ids))}}}")
    return ", ".join(parts)
