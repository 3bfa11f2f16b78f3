"""Team queues, quotas and priority classes (pure): who may hold how many boards of a generation.

Kueue's model, for boards: a queue has a *nominal* quota per generation (boards it is guaranteed)
and may *borrow* what the other queues of its *cohort* leave unused, up to its *borrowing limit*.
A queue with no nominal quota for a generation (``nominal is None``) is unlimited there: that is
the default queue, so a fleet with no queue configuration schedules as before.

    ledger = QuotaLedger(queues, used)          # used: queue -> generation -> boards held
    ledger.headroom("compiler", "sim-g2")       # how many more boards it may take now
    ledger.take("compiler", {"sim-g2": 4})      # after a placement in the same pass

Priority classes order jobs before anything else (``ci-gate`` > ``interactive`` > ``batch`` >
``scavenger`` by default); a job names one, or gets the default class.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = [
    "DEFAULT_PRIORITY_CLASSES",
    "DEFAULT_QUEUE",
    "UNLIMITED",
    "PriorityClass",
    "QueueSpec",
    "QuotaLedger",
]

UNLIMITED = 1 << 40  # a quota no fleet reaches
DEFAULT_QUEUE = "default"


@dataclass(frozen=True)
class PriorityClass:
    name: str
    value: int
    default: bool = False
    teams: tuple[str, ...] | None = None  # the teams that may submit in it; None: every team
    # The most work a job of the class may throw away by preempting, in seconds per board it
    # needs (None: as much as it can do itself, its boards times its time limit).
    max_lost_s: float | None = None

    def admits(self, team: str) -> bool:
        return self.teams is None or team in self.teams


# Urgent classes may stop lesser work whatever it has run; batch and scavenger work only what
# started lately, and otherwise waits for boards to free: on a multi-team day (bench/sched_trace.py)
# that cut the work preemption threw away from 3.4 % to 0.3 % of all work run.
BATCH_MAX_LOST_S = 300.0
DEFAULT_PRIORITY_CLASSES = (
    PriorityClass("ci-gate", 1000),
    PriorityClass("interactive", 500),
    PriorityClass("batch", 100, default=True, max_lost_s=BATCH_MAX_LOST_S),
    PriorityClass("scavenger", 0, max_lost_s=BATCH_MAX_LOST_S),
)


@dataclass(frozen=True)
class QueueSpec:
    """One team's queue. ``nominal``: generation -> guaranteed boards (a generation not named has
    0; ``None`` for the whole mapping: unlimited everywhere). ``borrowing_limit``: generation -> the
    most it may borrow beyond nominal (not named: no limit but what the cohort lends)."""

    name: str
    nominal: Mapping[str, int] | None = None
    cohort: str | None = None
    borrowing_limit: Mapping[str, int] = field(default_factory=dict)

    def nominal_of(self, generation: str) -> int:
        if self.nominal is None:
            return UNLIMITED
        return self.nominal.get(generation, 0)

    def limit_of(self, generation: str) -> int:
        return self.borrowing_limit.get(generation, UNLIMITED)


class QuotaLedger:
    """Boards held per queue and generation, against nominal quotas and what cohorts lend.

    Mutable within one scheduling pass (:meth:`take`, :meth:`give`); build a new one per pass.
    """

    def __init__(self, queues: Mapping[str, QueueSpec], used: Mapping[str, Mapping[str, int]]) -> None:
        self.queues = dict(queues)
        self.used: dict[str, dict[str, int]] = defaultdict(dict)
        for name, by_gen in used.items():
            self.used[name].update(by_gen)
        self._cohorts: dict[str, list[str]] = defaultdict(list)
        for spec in self.queues.values():
            if spec.cohort:
                self._cohorts[spec.cohort].append(spec.name)

    def spec(self, queue: str) -> QueueSpec:
        """A queue not configured is an unlimited queue of its own (no cohort)."""
        return self.queues.get(queue) or QueueSpec(queue)

    def cohort_mates(self, queue: str, other: str) -> bool:
        """Whether two queues share a cohort (so one may lend to, and reclaim from, the other)."""
        cohort = self.spec(queue).cohort
        return cohort is not None and cohort == self.spec(other).cohort

    def usage(self, queue: str, generation: str) -> int:
        return self.used[queue].get(generation, 0)

    def lendable(self, queue: str, generation: str) -> int:
        """What the other queues of ``queue``'s cohort leave unused of their nominal quotas."""
        cohort = self.spec(queue).cohort
        if not cohort:
            return 0
        unused = borrowed = 0
        for other in self._cohorts[cohort]:
            spec = self.queues[other]
            if spec.nominal is None:
                continue  # an unlimited queue lends nothing: its quota is not a number of boards
            left = spec.nominal_of(generation) - self.usage(other, generation)
            if other != queue:
                unused += max(0, left)
            borrowed += max(0, -left)  # every borrower, this queue too, holds some of that already
        return max(0, unused - borrowed)

    def headroom(self, queue: str, generation: str) -> int:
        """How many more boards of ``generation`` the queue may take now (nominal, then borrowing)."""
        spec = self.spec(queue)
        if spec.nominal is None:
            return UNLIMITED
        used = self.usage(queue, generation)
        nominal = spec.nominal_of(generation)
        borrowed = max(0, used - nominal)
        may_borrow = max(0, min(spec.limit_of(generation) - borrowed, self.lendable(queue, generation)))
        return max(0, nominal - used) + may_borrow

    def within_nominal(self, queue: str, generation: str, boards: int) -> bool:
        """Whether ``boards`` more would keep the queue within its nominal quota (preemption right)."""
        return self.usage(queue, generation) + boards <= self.spec(queue).nominal_of(generation)

    def borrowing(self, queue: str, generation: str) -> int:
        """Boards held beyond nominal (0 when within it)."""
        return max(0, self.usage(queue, generation) - self.spec(queue).nominal_of(generation))

    def ceiling(self, queue: str, generation: str) -> int:
        """The most the queue could ever hold of ``generation``: nominal plus all it could borrow."""
        spec = self.spec(queue)
        if spec.nominal is None:
            return UNLIMITED
        lend = 0
        if spec.cohort:
            for other in self._cohorts[spec.cohort]:
                o = self.queues[other]
                if other != queue and o.nominal is not None:
                    lend += o.nominal_of(generation)
        return spec.nominal_of(generation) + min(spec.limit_of(generation), lend)

    def refusal(self, queue: str, generations: Iterable[str], boards: int) -> str | None:
        """Why a job of ``boards`` boards of any of ``generations`` can never run in ``queue``
        (no generation's ceiling reaches it), or None."""
        gens = sorted(generations)
        ceilings = {g: self.ceiling(queue, g) for g in gens}
        if any(c >= boards for c in ceilings.values()):
            return None
        spec = self.spec(queue)
        parts = []
        for g, c in ceilings.items():
            lend = c - spec.nominal_of(g)
            parts.append(f"{g}: nominal {spec.nominal_of(g)}" + (f" + {lend} borrowable" if lend else ""))
        return (
            f"queue {queue} can never hold {boards} boards of {', '.join(gens)} ({'; '.join(parts)}); "
            "ask for fewer boards or other generations, or have an operator raise the quota (fleetyard queues)"
        )

    def take(self, queue: str, by_generation: Mapping[str, int]) -> None:
        for g, n in by_generation.items():
            self.used[queue][g] = self.usage(queue, g) + n

    def give(self, queue: str, by_generation: Mapping[str, int]) -> None:
        for g, n in by_generation.items():
            self.used[queue][g] = self.usage(queue, g) - n

    def describe(self, queue: str, generation: str) -> str:
        """``"queue compiler holds 32 of sim-g2 (nominal 32, cohort lends 0, borrowing limit 8)"``."""
        spec = self.spec(queue)
        if spec.nominal is None:
            return f"queue {queue} is unlimited"
        limit = spec.borrowing_limit.get(generation)
        parts = [f"nominal {spec.nominal_of(generation)}", f"cohort lends {self.lendable(queue, generation)}"]
        if limit is not None:
            parts.append(f"borrowing limit {limit}")
        return f"queue {queue} holds {self.usage(queue, generation)} of {generation} ({', '.join(parts)})"
