"""Preemption (pure): which running jobs a waiting job may take boards from, and the fewest it needs.

A job that does not fit may preempt: first the jobs of queues of its cohort that borrowed beyond
their nominal quota in the generations it wants when the pass began (its queue reclaims what it
lent, within its own nominal quota), then lower (priority, rank) jobs of its own queue, whose boards count as
room in its quota (as Kueue's ``withinClusterQueue: LowerPriority``: a queue whose quota is spent
runs its urgent job in place of a lesser one); within each, the lowest priority and then the
least work lost first (board-seconds run so far: among jobs of one size, the newest). Only as many
as it needs.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence
from typing import NamedTuple

from fleetyard.domain.spec import Placement
from fleetyard.policy.placement import Constraints, Freeing, Pool, group_of
from fleetyard.policy.queues import QuotaLedger
from fleetyard.policy.snapshot import PendingJob, RunningJob

__all__ = ["Found", "Victims", "lost_budget", "may_be_preempted", "preempt_reason", "victims_for"]


_Key = tuple[int, int, float, float, int]  # victim order: see _victim_order


class _Ranked:
    """A queue's preemptible jobs holding boards of one generation, in victim order (with their
    keys). Within one (priority, rank) the work lost ascends: the jobs within a budget of work
    lost are a prefix of each band, found by bisection. Jobs already chosen as victims in the pass
    are passed over once, at the head of their band (they are chosen from the head, mostly)."""

    __slots__ = ("bands", "entries", "lost")

    def __init__(self, entries: list[tuple[_Key, RunningJob]]) -> None:
        self.entries = entries
        self.lost = [key[2] for key, _ in entries]
        self.bands: list[list[int]] = []  # [first not yet chosen, end] per (priority, rank)
        start = 0
        for i in range(1, len(entries) + 1):
            if i == len(entries) or entries[i][0][:2] != entries[start][0][:2]:
                self.bands.append([start, i])
                start = i

    def within(self, most_lost: float, taken: Container[int]) -> tuple[Iterator[tuple[_Key, RunningJob]], bool]:
        """Those whose stop loses no more than ``most_lost``, in order (those in ``taken``, chosen
        already, skipped at the head of a band); whether any were left out for the work lost."""
        parts = []
        cut = False
        entries = self.entries
        for band in self.bands:
            start, end = band
            while start < end and entries[start][1].id in taken:
                start += 1
            band[0] = start
            last = bisect.bisect_right(self.lost, most_lost, start, end)
            cut = cut or last < end
            if last > start:
                parts.append(itertools.islice(entries, start, last))  # lazy: most walks stop early
        return itertools.chain.from_iterable(parts), cut


class Victims:
    """Who a job may preempt, in order: running jobs of queues that borrow beyond their nominal
    quota (reclaimed by another queue), then lower (priority, rank) jobs of the job's own queue;
    within each, the lowest priority and then the least work lost. Built once per pass."""

    def __init__(
        self,
        running: Sequence[RunningJob],
        gen_of: Mapping[str, str],
        borrowing: set[tuple[str, str]],
        now: float = 0.0,
    ) -> None:
        """``borrowing``: (queue, generation) beyond nominal when the pass began. A queue that
        borrows only by this pass's bindings is not reclaimed from: its jobs of before are within
        its quota; the next pass takes back the boards it borrowed, newest first."""
        self._gen_of = gen_of
        self.borrowing = borrowing
        self.now = now
        self._order = _victim_order(now)
        self._open: dict[str, list[RunningJob]] = defaultdict(list)  # queue -> preemptible running jobs
        for r in running:
            if may_be_preempted(r, now):
                self._open[r.queue].append(r)
        self.queues = set(self._open)
        self._by_gen: dict[str, dict[str, _Ranked]] = {}  # built per queue as asked
        self.matching: dict[tuple[int, Constraints], list[str]] = {}  # boards do not change in a pass
        self._held: dict[int, Counter[str]] = {}
        self._sorted: dict[str, list[tuple[_Key, RunningJob]]] = {}
        self._groups: dict[tuple[Placement, str], tuple[dict[str, list[tuple[_Key, RunningJob]]], Counter[str]]] = {}

    def _of(self, queue: str) -> dict[str, _Ranked]:
        """Generation -> the queue's preemptible running jobs holding boards of it, in victim order."""
        by_gen = self._by_gen.get(queue)
        if by_gen is None:
            lists: dict[str, list[tuple[_Key, RunningJob]]] = defaultdict(list)
            for key, r in self._ranked(queue):
                # Each list fills in victim order, whatever order the generations come in.
                for g in set(filter(None, map(self._gen_of.get, r.boards))):
                    lists[g].append((key, r))
            by_gen = self._by_gen[queue] = {g: _Ranked(entries) for g, entries in lists.items()}
        return by_gen

    def candidates(
        self,
        ledger: QuotaLedger,
        job: PendingJob,
        gens: Sequence[str],
        most_lost: float = math.inf,
        taken: Container[int] = frozenset(),
    ) -> tuple[Iterator[RunningJob], bool]:
        """Those holding boards of ``gens`` whose stop loses no more than ``most_lost``: borrowers
        of another queue (in a generation it borrows), then lower-priority jobs of the job's own
        queue; each once. And whether some were left out for the work they would lose. ``taken``:
        jobs chosen as victims already this pass (only ever more of them): some are passed over."""
        # Only a queue of its cohort borrowed from it (as Kueue reclaims within a cohort).
        lenders = [
            self._of(q)[g]
            for q in sorted(self.queues - {job.queue})
            if ledger.cohort_mates(job.queue, q)
            for g in gens
            if (q, g) in self.borrowing and ledger.borrowing(q, g) > 0 and g in self._of(q)
        ]
        mine = self._of(job.queue) if job.queue in self.queues else {}
        own = [mine[g] for g in gens if g in mine]
        lender_parts = [ranked.within(most_lost, taken) for ranked in lenders]
        own_parts = [ranked.within(most_lost, taken) for ranked in own]
        cut = any(c for _, c in lender_parts) or any(c for _, c in own_parts)

        def walk() -> Iterator[RunningJob]:
            seen: set[int] = set()
            for _, r in heapq.merge(*(p for p, _ in lender_parts)):
                if r.id not in seen:
                    seen.add(r.id)
                    yield r
            for _, r in heapq.merge(*(p for p, _ in own_parts)):
                if (r.priority, r.rank) >= (job.priority, job.rank):
                    break
                if r.id not in seen:
                    seen.add(r.id)
                    yield r

        return walk(), cut

    def own_generations(self, queue: str) -> set[str]:
        """The generations the queue's preemptible running jobs hold boards of."""
        return set(self._of(queue)) if queue in self.queues else set()

    def _ranked(self, queue: str) -> list[tuple[_Key, RunningJob]]:
        """The queue's preemptible running jobs in victim order, with their keys."""
        ranked = self._sorted.get(queue)
        if ranked is None:
            ranked = self._sorted[queue] = sorted((self._order(r), r) for r in self._open[queue])
        return ranked

    def by_group(
        self, pool: Pool, placement: Placement, queue: str
    ) -> tuple[dict[str, list[tuple[_Key, RunningJob]]], Counter[str]]:
        """Host (``SAME_HOST``) or rack (``SAME_RACK``) -> the queue's preemptible running jobs
        with boards there, in victim order; and how many boards they hold there."""
        key = (placement, queue)
        got = self._groups.get(key)
        if got is None:
            jobs: dict[str, list[tuple[_Key, RunningJob]]] = defaultdict(list)
            held: Counter[str] = Counter()
            boards = pool.boards
            for entry in self._ranked(queue):
                for b in entry[1].boards:
                    view = boards.get(b)
                    if view is None:
                        continue
                    g = group_of(view, placement)
                    held[g] += 1
                    there = jobs[g]
                    if not there or there[-1] is not entry:  # once per job, however many boards there
                        there.append(entry)
            got = self._groups[key] = (jobs, held)
        return got

    def lender_generations(self, ledger: QuotaLedger, job: PendingJob, gens: Sequence[str]) -> dict[str, set[str]]:
        """Queue -> the generations of ``gens`` in which it borrows from ``job``'s queue's cohort
        since the pass began, and still: whose jobs there it may reclaim (as Kueue, within a cohort)."""
        out: dict[str, set[str]] = {}
        for q in sorted(self.queues - {job.queue}):
            if ledger.cohort_mates(job.queue, q):
                lent = {g for g in gens if (q, g) in self.borrowing and ledger.borrowing(q, g) > 0}
                if lent:
                    out[q] = lent
        return out

    def held(self, r: RunningJob) -> Counter[str]:
        """Generation -> boards ``r`` holds: the room in its queue's quota its stop makes."""
        held = self._held.get(r.id)
        if held is None:
            held = self._held[r.id] = Counter(g for g in map(self._gen_of.get, r.boards) if g)
        return held

    def boards(self, pool: Pool, r: RunningJob, c: Constraints) -> list[str]:
        key = (r.id, c)
        if key not in self.matching:
            self.matching[key] = pool.matching(c, r.boards)
        return self.matching[key]


def may_be_preempted(r: RunningJob, now: float) -> bool:
    """Preemptible, not stopping already, and not protected (preempted before, started again lately)."""
    return r.preemptible and r.preempted_for is None and r.protected_until <= now


def _victim_order(now: float) -> Callable[[RunningJob], _Key]:
    """Lowest (priority, rank) first, then the least work lost: a 256-board gang hours in is
    the last to go for a host's worth of boards, not the first because it started last."""

    def order(r: RunningJob) -> _Key:
        return (r.priority, r.rank, len(r.boards) * max(0.0, now - r.started_at), -r.started_at, r.id)

    return order


_Entry = tuple[RunningJob, list[str], "Counter[str] | None"]  # a victim, its boards, room it makes


class Found(NamedTuple):
    """What a search for victims found: ``victims`` (none: not allowed, or not enough), and
    whether the work the job may throw away decided it (``by_budget``): then a job allowed to
    throw away more might find some; else no job of its queue, class and shape, no smaller, would."""

    victims: list[RunningJob]
    by_budget: bool = False


GROUPS_TRIED = 4  # hosts (racks) a gang that must be on one tries, cheapest first, before the plain search


def victims_for(
    pool: Pool,
    ledger: QuotaLedger,
    job: PendingJob,
    gens: frozenset[str],
    gen_of: Mapping[str, str],
    taken: set[int],
    victims: Victims,
) -> Found:
    """The fewest running jobs to stop so that ``job`` fits, or none (not allowed, or not enough).

    Its queue's quota holds as for any placement, but what victims of its own queue hold counts
    as room in it; boards borrowed by another queue are reclaimed only within its nominal quota.
    A job that must be on one host (rack) takes the host (rack) where its victims lose the least
    work, not the first one that candidates in victim order happen to complete. No job throws
    away more work than it can do itself (its boards times its time limit): an 8-board job does
    not stop a 256-board gang hours in, it waits for boards to free; and no more than its class
    allows (:func:`lost_budget`): a batch job stops only work started lately."""
    q = job.queue
    headroom = {g: ledger.headroom(q, g) for g in sorted(gens)}
    own = victims.own_generations(q)
    room = {g: n for g, n in headroom.items() if n > 0 or g in own}
    if not room:
        return Found([])
    nominal = {g: ledger.spec(q).nominal_of(g) - ledger.usage(q, g) for g in room}
    reclaim = {g for g, n in nominal.items() if n > 0}
    c = job.shape.constraints
    base = pool.index(c).total
    made: Counter[str] = Counter()  # room its own queue's victims make, per generation
    most_lost = lost_budget(job)
    over_budget = False  # some candidate alone would throw away more than it may (never walked)

    def as_candidate(r: RunningJob) -> _Entry | None:
        """``r`` as a candidate: its boards the job could use (of a generation its queue may take
        them in), and the room its stop makes in the job's queue's quota (None: of another queue)."""
        if r.queue == q:
            mine = [b for b in victims.boards(pool, r, c) if gen_of[b] in room]
            return (r, mine, victims.held(r)) if mine else None
        mine = [b for b in victims.boards(pool, r, c) if gen_of[b] in reclaim]
        return (r, mine, None) if mine else None

    def candidates() -> Iterator[_Entry]:
        nonlocal over_budget
        walk, over_budget = victims.candidates(ledger, job, list(room), most_lost, taken)
        for r in walk:
            if r.id in taken or r.id == job.id:
                continue
            e = as_candidate(r)
            if e is not None:
                yield e

    def fits(reclaiming: bool, n_freed: int) -> tuple[str, ...] | None:
        """Where the job runs if the chosen stop (their boards given to the pool), or None.
        ``reclaiming``: some are of another queue; then the job must fit within its own nominal quota."""
        if base + n_freed < job.boards:
            return None
        limit = {g: max(0, min(job.boards, (nominal if reclaiming else room)[g] + made[g])) for g in room}
        return pool.pick(job.shape, job.boards, caps=limit) if sum(limit.values()) >= job.boards else None

    # The victims' boards are given to the pool once they could complete the job's shape, and all
    # taken back at the end: giving and taking back every board per candidate made a 256-board
    # gang's search quadratic.
    freeing = Freeing(pool, job.shape, job.boards)
    chosen: list[_Entry] = []
    got: tuple[str, ...] | None = None
    # A job that must be on one host (rack) looks at each host's (rack's) candidates first; the
    # rest, and it if its queue's caps turn every such group away, stop at the first that completes it.
    grouped = freeing.placement is not Placement.ANY
    entries: Iterable[_Entry] = candidates()
    try:
        if grouped:
            groups, by_budget = _cheapest_groups(
                pool, freeing, job, list(room), taken, victims, ledger, as_candidate, most_lost
            )
            if not groups:
                # No host (rack) it could fill within what it may throw away: the search in victim
                # order below would stop on one of those groups, or on none.
                return Found([], by_budget)
            for group in groups:
                freeing.add([b for _, mine, _ in group for b in mine])
                freeing.flush()
                for _, _, held in group:
                    if held:
                        made.update(held)
                got = fits(any(held is None for _, _, held in group), len(freeing.given))
                if got is not None:
                    chosen = group
                    break
                freeing.take_back()
                made.clear()
        if got is None:  # in victim order, until the job fits
            reclaiming = False  # some chosen are of another queue
            for entry in entries:
                chosen.append(entry)
                reclaiming = reclaiming or entry[2] is None
                if entry[2]:
                    made.update(entry[2])
                if freeing.add(entry[1]):
                    freeing.flush()
                    got = fits(reclaiming, len(freeing.given))
                    if got is not None:
                        break
        if got is None:
            return Found([], over_budget)
        # Keep only those needed. Those with no board where it would run go at once (a gang's
        # search may choose hundreds on other hosts first), if it still fits without them...
        # Only boards given to the pool move: those of hosts (racks) it could not fill never were.
        given = set(freeing.given)
        runs_on = set(got)
        needed = [e for e in chosen if not runs_on.isdisjoint(e[1])]
        if len(needed) < len(chosen):
            spare = [e for e in chosen if runs_on.isdisjoint(e[1])]
            spare_boards = [b for e in spare for b in e[1] if b in given]
            spare_made = sum((e[2] for e in spare if e[2] is not None), Counter())
            pool.take(spare_boards)
            made.subtract(spare_made)
            if fits(any(e[2] is None for e in needed), len(given) - len(spare_boards)) is not None:
                chosen = needed
                given.difference_update(spare_boards)
            else:
                pool.give(spare_boards)
                made.update(spare_made)
        # ... then the last-chosen first, one at a time, while it still fits.
        for entry in list(reversed(chosen)):
            _, mine, held = entry
            mine = [b for b in mine if b in given]
            pool.take(mine)
            if held:
                made.subtract(held)
            if fits(any(e[2] is None for e in chosen if e is not entry), len(given) - len(mine)) is not None:
                chosen.remove(entry)
                given.difference_update(mine)
            else:
                pool.give(mine)
                if held:
                    made.update(held)
        freeing.given = [b for b in freeing.given if b in given]
        if _lost(chosen, victims.now) > most_lost:
            return Found([], True)  # it would throw away more than it can itself do: it waits instead
        return Found([r for r, _, _ in chosen])
    finally:
        freeing.take_back()


def lost_budget(job: PendingJob) -> float:
    """The most work (board-seconds) the jobs ``job`` preempts may lose altogether: what it can do
    itself (its boards times its time limit), and no more than its class allows per board it needs
    (:attr:`~fleetyard.policy.queues.PriorityClass.max_lost_s`)."""
    per_board = job.time_limit_s if job.max_lost_s is None else min(job.time_limit_s, job.max_lost_s)
    return job.boards * per_board


def _lost_by(r: RunningJob, now: float) -> float:
    """The board-seconds a running job has run: the work its preemption throws away."""
    return len(r.boards) * max(0.0, now - r.started_at)


def _lost(entries: Sequence[_Entry], now: float) -> float:
    return sum(_lost_by(r, now) for r, _, _ in entries)


def _cheapest_groups(
    pool: Pool,
    freeing: Freeing,
    job: PendingJob,
    gens: Sequence[str],
    taken: Container[int],
    victims: Victims,
    ledger: QuotaLedger,
    as_candidate: Callable[[RunningJob], _Entry | None],
    most_lost: float,
) -> tuple[list[list[_Entry]], bool]:
    """For a job that must be on one host (rack): per host (rack), the first candidates in victim
    order (:meth:`Victims.candidates`) that free enough of it, less those it does without (the
    last first, as :func:`victims_for` keeps only those needed); the few groups that lose the
    least work (board-seconds run), among those whose worst victim comes earliest in victim
    order, and no more than ``most_lost``. And whether work lost ruled some group or candidate out.

    Host by host, from each queue's jobs there: a search that walked every candidate of the
    fleet in victim order spent a pass's time on hosts no group could fill."""
    k, idx = freeing.k, freeing.idx
    placement = freeing.placement
    boards = pool.boards
    lent = victims.lender_generations(ledger, job, gens)
    lenders = [victims.by_group(pool, placement, q) for q in lent]
    own, own_held = victims.by_group(pool, placement, job.queue) if job.queue in victims.queues else ({}, Counter())
    below = (job.priority, job.rank)
    now = victims.now
    gen_of = pool.gen_of
    seen: dict[int, _Entry | None] = {}  # a candidate is judged once, whatever hosts it spans
    lost_by: dict[int, float] = {}
    over = False
    complete: list[tuple[tuple[bool, int, int], float, str, list[_Entry]]] = []
    for g in pool.groups(job.shape.constraints, placement):
        have = idx.free_in(g, placement)
        if have >= k:
            continue  # it fits there by count already: its queue's caps turned it away
        if have + own_held[g] + sum(held[g] for _, held in lenders) < k:
            continue  # not enough there, were every job of those queues stopped
        theirs = [jobs[g] for jobs, _ in lenders if g in jobs]
        ranked = theirs[0] if len(theirs) == 1 else sorted(itertools.chain.from_iterable(theirs))
        group: list[tuple[_Entry, int]] = []
        mine_below = ((key, r) for key, r in own.get(g, ()) if key[:2] < below)
        for _, r in itertools.chain(ranked, mine_below):
            if r.id in seen:
                e = seen[r.id]
            else:
                e = None
                # Another queue's job only where it holds boards of a generation its queue borrows.
                lends = r.queue == job.queue or (
                    gen_of.get(r.boards[0]) in lent[r.queue]
                    if len(r.boards) == 1
                    else any(gen_of.get(b) in lent[r.queue] for b in r.boards)
                )
                if lends and r.id not in taken and r.id != job.id:
                    lost = _lost_by(r, now)
                    if lost > most_lost:
                        over = True  # never chosen
                    else:
                        e = as_candidate(r)
                        lost_by[r.id] = lost
                seen[r.id] = e
            if e is None:
                continue
            # Its boards there (it is in this host's, or rack's, list: a one-board job's one board).
            n = 1 if len(r.boards) == 1 else sum(1 for b in e[1] if group_of(boards[b], placement) == g)
            if not n:
                continue
            group.append((e, n))
            have += n
            if have >= k:
                break
        if have < k:
            continue
        for member in reversed(group[:-1]):  # those it does without: the last-chosen first
            if have - member[1] >= k:
                group.remove(member)
                have -= member[1]
        lost = sum(lost_by[e[0].id] for e, _ in group)
        if lost > most_lost:
            over = True
            continue
        worst = max((e[2] is not None, e[0].priority, e[0].rank) for e, _ in group)
        complete.append((worst, lost, g, [e for e, _ in group]))
    # Borrowers of other queues before the queue's own lower-priority jobs, lower priority first
    # (victim order), then the least work lost; a few, in case the queue's caps turn one away.
    complete.sort(key=lambda c: c[:3])
    return [c[3] for c in complete[:GROUPS_TRIED]], over


def preempt_reason(ledger: QuotaLedger, victim: RunningJob, job: PendingJob, gen_of: Mapping[str, str]) -> str:
    if victim.queue != job.queue:
        gens = sorted({gen_of[b] for b in victim.boards if b in gen_of})
        return (
            f"preempted for job {job.id}: queue {victim.queue} borrows beyond its nominal quota of "
            f"{', '.join(gens)} and queue {job.queue} reclaims it"
        )
    return f"preempted for job {job.id} of higher priority in queue {job.queue}"
