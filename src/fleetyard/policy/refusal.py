"""Refusal at submit (pure): why a job can never run on this fleet, naming the constraint,
the topology or the quota that rules it out."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from fleetyard.domain.spec import Placement
from fleetyard.policy.placement import BoardView
from fleetyard.policy.queues import QuotaLedger
from fleetyard.policy.snapshot import PendingJob

__all__ = ["FleetBoard", "why_unschedulable"]


@dataclass(frozen=True)
class FleetBoard:
    """A board that could one day run work (any state but retired or quarantined)."""

    id: str
    host_id: str
    generation: str
    labels: Mapping[str, str] = field(default_factory=dict)
    device: str = ""  # what the board's driver calls it: "sim:3", "cpu:0-7", "cuda:1"
    firmware: str = ""
    rack: str = ""

    def view(self) -> BoardView:
        return BoardView(
            self.id, self.host_id, self.generation, rack=self.rack, firmware=self.firmware, labels=self.labels
        )


def why_unschedulable(job: PendingJob, fleet: Sequence[FleetBoard], ledger: QuotaLedger | None = None) -> str | None:
    """Why a job can never run on this fleet (constraints, topology, quota), or None."""
    c = job.shape.constraints
    boards = [b.view() for b in fleet]
    known = sorted({b.generation for b in boards})
    unknown = sorted(c.generations - set(known))
    if c.generations and len(unknown) == len(c.generations):
        return f"unknown generation {', '.join(unknown)}; the fleet has: {', '.join(known) or 'no boards'}"
    if c.only:
        absent = sorted(c.only - {b.id for b in boards})
        if len(absent) > len(c.only) - job.boards:
            return f"board(s) {', '.join(absent)} not in the fleet (or retired or quarantined)"
    passed, turned_away = c.rejections(boards)
    wanted = c.describe()
    if passed < job.boards:
        detail = ", ".join(f"{n} by {k}" for k, n in turned_away.items())
        return f"asks for {job.boards} boards ({wanted}) but the fleet has only {passed} such boards" + (
            f" (of {len(boards)}: {detail} excluded)" if detail else ""
        )
    matching = [b for b in boards if c.admits(b)]
    if job.shape.required and job.shape.placement is not Placement.ANY:
        on_host = job.shape.placement is Placement.SAME_HOST
        what = "host" if on_host else "rack"
        per: dict[str, int] = defaultdict(int)
        for b in matching:
            per[b.host if on_host else b.rack] += 1
        most = max(per.values())
        if most < job.boards:
            return f"asks for {job.boards} boards ({wanted}) on one {what} but no {what} has more than {most}"
    if ledger is not None:
        return ledger.refusal(job.queue, {b.generation for b in matching}, job.boards)
    return None
