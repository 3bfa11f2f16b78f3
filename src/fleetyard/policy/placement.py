"""Choosing boards for a job (pure): constraints, topology, packing, quota caps, warm boards.

A :class:`Pool` holds the boards and which are free; the controller keeps one from pass to pass
(:meth:`Pool.reset`). For each distinct set of :class:`Constraints` it builds, on first use, an
index of the free boards that satisfy them: per host (boards by slot), hosts bucketed by how many
such boards they have free, per rack and per generation counts. Taking a board updates every
index it is in (host by host), so a pass over 100,000 pending jobs asks each index in O(hosts of
a bucket) rather than scanning 10,000 boards per job.

:meth:`Pool.pick` never changes the pool; :meth:`Pool.take` does. Everything iterates in an
order fixed by the boards themselves (host names, slots, ids), never by the history of takes and
gives, so the same snapshot gives the same picks from a fresh pool or a kept one.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from fleetyard.domain.firmware import FirmwareSelector
from fleetyard.domain.spec import Packing, Placement

__all__ = ["BoardView", "Constraints", "Freeing", "Pool", "Shape", "group_of"]


@dataclass(frozen=True, slots=True)
class BoardView:
    """A board that could run work someday, as the scheduler sees it."""

    id: str
    host: str
    generation: str
    slot: int = 0
    rack: str = ""
    firmware: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    warm: frozenset[str] = frozenset()  # artifacts its worker has loaded lately
    cached: frozenset[str] = frozenset()  # blobs in its host's agent cache lately (no download)


@dataclass(frozen=True)
class Constraints:
    """What a job asks of each of its boards. Hashable: jobs alike share one index."""

    generations: frozenset[str] = frozenset()  # any of these; empty: any
    labels: tuple[tuple[str, str], ...] = ()  # a subset of the board's labels
    firmware: FirmwareSelector | None = None
    exclude: frozenset[str] = frozenset()
    only: frozenset[str] = frozenset()  # board_ids: only these; empty: any
    # A pass looks constraints up in dicts tens of thousands of times: hash once.
    _hash: int = field(init=False, repr=False, compare=False, default=0)

    def __post_init__(self) -> None:
        h = hash((self.generations, self.labels, self.firmware, self.exclude, self.only))
        object.__setattr__(self, "_hash", h)

    def __hash__(self) -> int:
        return self._hash

    def admits(self, b: BoardView) -> bool:
        if self.only and b.id not in self.only:
            return False
        if b.id in self.exclude:
            return False
        if self.generations and b.generation not in self.generations:
            return False
        if any(b.labels.get(k) != v for k, v in self.labels):
            return False
        return self.firmware is None or self.firmware.matches(b.firmware)

    def rejections(self, boards: Iterable[BoardView]) -> tuple[int, dict[str, int]]:
        """How many boards pass, and how many each constraint turns away (the first that does),
        for explanations: ``(12, {"generation": 6667, "labels": 120, "firmware": 3})``."""
        passed = 0
        out: dict[str, int] = defaultdict(int)
        for b in boards:
            if self.only and b.id not in self.only:
                out["board_ids"] += 1
            elif b.id in self.exclude:
                out["exclude_boards"] += 1
            elif self.generations and b.generation not in self.generations:
                out["generation"] += 1
            elif any(b.labels.get(k) != v for k, v in self.labels):
                out["labels"] += 1
            elif self.firmware is not None and not self.firmware.matches(b.firmware):
                out["firmware"] += 1
            else:
                passed += 1
        return passed, dict(out)

    def describe(self) -> str:
        parts = [f"generation in {{{', '.join(sorted(self.generations))}}}" if self.generations else "any generation"]
        parts += [f"{k}={v}" for k, v in self.labels]
        if self.firmware is not None:
            parts.append(f"firmware {self.firmware}")
        if self.only:
            parts.append(f"board in {{{', '.join(sorted(self.only))}}}")
        if self.exclude:
            parts.append(f"not {', '.join(sorted(self.exclude))}")
        return ", ".join(parts)


@dataclass(frozen=True)
class Shape:
    """Constraints and topology: everything but the size that decides where a job can go."""

    constraints: Constraints = field(default_factory=Constraints)
    placement: Placement = Placement.ANY
    required: bool = True
    packing: Packing = Packing.PACK
    _hash: int = field(init=False, repr=False, compare=False, default=0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.constraints, self.placement, self.required, self.packing)))

    def __hash__(self) -> int:
        return self._hash


class _Hosts:
    """Hosts with the same number of free boards, smallest name first whatever order they came in:
    a pool kept across passes then picks as a fresh one would (same snapshot, same plan).

    The first is kept at hand (a heap, its stale entries dropped lazily): most picks want only it."""

    __slots__ = ("_heap", "_in")

    def __init__(self, hosts: Iterable[str] = ()) -> None:
        self._in: dict[str, None] = dict.fromkeys(hosts)
        self._heap = sorted(self._in)

    def __len__(self) -> int:
        return len(self._in)

    def add(self, host: str) -> None:
        if host not in self._in:
            self._in[host] = None
            heapq.heappush(self._heap, host)

    def discard(self, host: str) -> None:
        if host in self._in:
            del self._in[host]
            if len(self._heap) > 2 * len(self._in) + 16:
                self._heap = sorted(self._in)

    def __iter__(self) -> Iterator[str]:
        heap = self._heap
        while heap and heap[0] not in self._in:
            heapq.heappop(heap)
        if not heap:
            return
        first = heap[0]
        yield first
        for host in sorted(self._in):  # past the first (one that a quota cap turned away): rare
            if host != first:
                yield host


class _Index:
    """The free boards that satisfy one :class:`Constraints`, grouped for fast gang placement."""

    def __init__(self, free: Iterable[BoardView] = ()) -> None:
        """``free``: the free boards that satisfy it, in (host, slot, id) order."""
        self.fill(free)

    def fill(self, free: Iterable[BoardView]) -> None:
        """Exactly ``free`` (in (host, slot, id) order), built in bulk."""
        self.by_host: dict[str, list[BoardView]] = {}  # free boards, by slot
        # A host's one generation (None: its boards are of several): a gang capped by its queue's
        # quota skips the hosts of generations it may not take at a glance.
        self.host_gen: dict[str, str | None] = {}
        self.rack_count: dict[str, int] = defaultdict(int)
        self.rack_hosts: dict[str, dict[str, None]] = defaultdict(dict)
        self.gen_count: dict[str, int] = defaultdict(int)
        by_host = self.by_host
        total = 0
        host_gen = self.host_gen
        for b in free:
            boards = by_host.get(b.host)
            if boards is None:
                by_host[b.host] = [b]
                host_gen[b.host] = b.generation
                self.rack_hosts[b.rack][b.host] = None
            else:
                boards.append(b)
                if host_gen[b.host] != b.generation:
                    host_gen[b.host] = None
            self.rack_count[b.rack] += 1
            self.gen_count[b.generation] += 1
            total += 1
        self.total = total
        grouped: dict[int, list[str]] = defaultdict(list)
        for host, boards in by_host.items():
            grouped[len(boards)].append(host)
        self.buckets: dict[int, _Hosts] = defaultdict(_Hosts)  # free count -> hosts
        for n, hosts in grouped.items():
            self.buckets[n] = _Hosts(hosts)
        self.max_count = max(grouped, default=0)

    def add(self, host: str, new: Sequence[BoardView]) -> None:
        """Free boards of ``host`` that satisfy it come in."""
        boards = self.by_host.get(host)
        if boards is None:
            boards = self.by_host[host] = []
            self.host_gen[host] = new[0].generation if new else None
        n = len(boards)
        gen = self.host_gen[host]
        if gen is not None and any(b.generation != gen for b in new):
            self.host_gen[host] = None
        boards.extend(new)
        if len(boards) > 1:
            boards.sort(key=_slot_order)
        for b in new:
            self.rack_count[b.rack] += 1
            self.rack_hosts[b.rack][host] = None
            self.gen_count[b.generation] += 1
        self.total += len(new)
        if n:
            self.buckets[n].discard(host)
        self.buckets[len(boards)].add(host)
        self.max_count = max(self.max_count, len(boards))

    def remove(self, host: str, gone: Sequence[BoardView]) -> None:
        """Boards of ``host`` in it are taken."""
        boards = self.by_host[host]
        n = len(boards)
        for b in gone:
            boards.remove(b)
            self.rack_count[b.rack] -= 1
            self.gen_count[b.generation] -= 1
        self.total -= len(gone)
        self.buckets[n].discard(host)
        if boards:
            self.buckets[len(boards)].add(host)
        else:
            del self.by_host[host]
            del self.host_gen[host]
            for b in gone:
                self.rack_hosts[b.rack].pop(host, None)
        while self.max_count and not self.buckets.get(self.max_count):
            self.max_count -= 1  # the most free on any host, now (explanations quote it)

    def free_in(self, group: str, placement: Placement) -> int:
        """Its free boards on ``group``: a host (``SAME_HOST``) or a rack (``SAME_RACK``)."""
        if placement is Placement.SAME_HOST:
            return len(self.by_host.get(group, ()))
        return self.rack_count.get(group, 0)

    def hosts_by_count(self, *, ascending: bool, at_least: int = 1) -> Iterator[str]:
        counts = range(at_least, self.max_count + 1) if ascending else range(self.max_count, at_least - 1, -1)
        for c in counts:
            bucket = self.buckets.get(c)
            if bucket:
                yield from bucket


class Pool:
    """The boards of a pass, which are free, and an index per distinct :class:`Constraints`.

    A caller may keep one across passes (the controller does): :meth:`reset` sets which boards
    are free, at the cost of what changed, and the indexes stay built."""

    def __init__(self, boards: Sequence[BoardView], free: Iterable[str]) -> None:
        self.boards = {b.id: b for b in sorted(boards, key=_board_order)}
        self.free: set[str] = {i for i in free if i in self.boards}
        self.gen_of = {i: b.generation for i, b in self.boards.items()}
        self.generations = frozenset(self.gen_of.values())
        # Whether every host (rack) is of one generation, as fleets are built: then a gang that
        # must be on one host (rack) needs that many boards of one generation in its caps.
        self._one_gen = {
            Placement.SAME_HOST: len({(b.host, b.generation) for b in boards}) == len({b.host for b in boards}),
            Placement.SAME_RACK: len({(b.rack, b.generation) for b in boards}) == len({b.rack for b in boards}),
        }
        self._indexes: dict[Constraints, _Index] = {}
        self._member_of: dict[str, list[_Index]] = defaultdict(list)
        self._members: dict[Constraints, list[BoardView]] = {}  # every board an index admits, in order
        self._admitted: dict[Constraints, frozenset[str]] = {}  # the same, as a set of ids
        self._groups: dict[tuple[Constraints, Placement], tuple[str, ...]] = {}
        self._warm: dict[str, list[str]] = {}  # artifact -> boards that have it loaded
        self._warm_hosts: dict[str, list[str]] = {}  # artifact -> hosts that have it loaded or cached
        self._warm_of: dict[str, frozenset[str]] = {}
        self._cached_of: dict[str, frozenset[str]] = {}
        self.rewarm(self.boards.values())

    def same_boards(self, boards: Sequence[BoardView]) -> bool:
        """Whether ``boards`` are this pool's, all but what their workers have loaded (:meth:`rewarm`)."""
        mine = self.boards
        if len(boards) != len(mine):
            return False
        for b in boards:
            m = mine.get(b.id)
            if m is b:
                continue
            if m is None or (m.host, m.generation, m.slot, m.rack, m.firmware, m.labels) != (
                b.host,
                b.generation,
                b.slot,
                b.rack,
                b.firmware,
                b.labels,
            ):
                return False
        return True

    def rewarm(self, boards: Iterable[BoardView]) -> None:
        """Take what ``boards`` (this pool's, :meth:`same_boards`) report loaded and cached now."""
        boards = list(boards)
        warm_of = {b.id: b.warm for b in boards if b.warm}
        cached_of = {b.host: b.cached for b in boards if b.cached}
        if (warm_of, cached_of) == (self._warm_of, self._cached_of):
            return
        self._warm_of, self._cached_of = warm_of, cached_of
        warm: dict[str, list[str]] = defaultdict(list)
        hosts: dict[str, set[str]] = defaultdict(set)
        for i, b in self.boards.items():
            for sha in sorted(warm_of.get(i, ())):
                warm[sha].append(i)
                hosts[sha].add(b.host)
        for host, shas in cached_of.items():
            for sha in shas:
                hosts[sha].add(host)
        self._warm = dict(warm)
        self._warm_hosts = {sha: sorted(hs) for sha, hs in hosts.items()}

    def reset(self, free: Iterable[str]) -> None:
        """Mark exactly ``free`` free (unknown ids ignored); the indexes change only where it differs
        (or are rebuilt, when much of the fleet changed: a rebuild costs less than many moves)."""
        want = free if isinstance(free, (set, frozenset)) else set(free)
        gone, came = self.free - want, want - self.free
        if len(gone) + len(came) <= len(self.boards) // 4:
            self.take(gone)
            self.give(came)
            return
        self.free = {i for i in want if i in self.boards}
        for c, idx in self._indexes.items():
            idx.fill(b for b in self._members[c] if b.id in self.free)

    # ---- the state -------------------------------------------------------------------------

    def index(self, c: Constraints) -> _Index:
        idx = self._indexes.get(c)
        if idx is None:
            candidates: Iterable[BoardView] = self.boards.values()
            if c.only:
                candidates = sorted((self.boards[i] for i in c.only if i in self.boards), key=_board_order)
            matching = [b for b in candidates if c.admits(b)]
            free = self.free
            idx = _Index(b for b in matching if b.id in free)
            for b in matching:
                self._member_of[b.id].append(idx)
            self._indexes[c] = idx
            self._members[c] = matching
            self._admitted[c] = frozenset(b.id for b in matching)
        return idx

    def groups(self, c: Constraints, placement: Placement) -> tuple[str, ...]:
        """The hosts (``SAME_HOST``) or racks (``SAME_RACK``) with a board that satisfies ``c``."""
        key = (c, placement)
        got = self._groups.get(key)
        if got is None:
            self.index(c)
            got = self._groups[key] = tuple(dict.fromkeys(group_of(b, placement) for b in self._members[c]))
        return got

    def take(self, ids: Iterable[str]) -> None:
        """Mark boards not free (bound, or held for a job)."""
        free = self.free
        self._move([i for i in ids if i in free], taken=True)

    def give(self, ids: Iterable[str]) -> None:
        """Mark boards free again (in this pass's books: a held board, or one a victim will free)."""
        free, boards = self.free, self.boards
        self._move([i for i in ids if i in boards and i not in free], taken=False)

    def _move(self, ids: Sequence[str], *, taken: bool) -> None:
        # Each index is told once per host: a gang's boards on one host move its bucket once.
        groups: dict[tuple[int, str], tuple[_Index, list[BoardView]]] = {}
        for i in dict.fromkeys(ids):
            if taken:
                self.free.discard(i)
            else:
                self.free.add(i)
            b = self.boards[i]
            for idx in self._member_of[i]:
                key = (id(idx), b.host)
                group = groups.get(key)
                if group is None:
                    groups[key] = (idx, [b])
                else:
                    group[1].append(b)
        for (_, host), (idx, bs) in groups.items():
            if taken:
                idx.remove(host, bs)
            else:
                idx.add(host, bs)

    def admitted(self, c: Constraints) -> frozenset[str]:
        """The ids of the boards that satisfy ``c``, free or not."""
        if c not in self._admitted:
            self.index(c)
        return self._admitted[c]

    def matching(self, c: Constraints, ids: Iterable[str]) -> list[str]:
        """Those of ``ids`` that satisfy ``c``."""
        admitted = self.admitted(c)
        return [i for i in ids if i in admitted]

    # ---- choosing ------------------------------------------------------------------------------

    def pick(
        self, shape: Shape, k: int, *, caps: Mapping[str, int] | None = None, warm: str | None = None
    ) -> tuple[str, ...] | None:
        """``k`` free boards for ``shape`` (rank order), or None. ``caps``: generation -> the most
        boards of it the job's queue may still take (None: no limit). ``warm``: an artifact;
        boards that have it loaded come first, then boards of hosts that have it in their cache
        (a gang that fits on one host: such a host first)."""
        idx = self.index(shape.constraints)
        if idx.total < k or not self.caps_admit(shape, k, caps):
            return None
        if caps is not None and sum(min(caps.get(g, 0), n) for g, n in idx.gen_count.items() if n) < k:
            return None
        if warm is not None:
            got = self._pick_warm(idx, shape, k, caps, warm)
            if got is not None:
                return got
        got = self._pick(idx, shape.placement, shape.packing, k, caps)
        if got is None and not shape.required and shape.placement is not Placement.ANY:
            got = self._pick(idx, Placement.ANY, shape.packing, k, caps)
        return got

    def caps_admit(self, shape: Shape, k: int, caps: Mapping[str, int] | None) -> bool:
        """Whether ``caps`` (as :meth:`pick` takes them) leave room for ``k`` boards of ``shape``
        anywhere, however many were free: a reservation asks before it walks the running jobs."""
        if caps is None:
            return True
        if sum(caps.values()) < k:
            return False
        if shape.required and self._one_gen.get(shape.placement, False):
            return max(caps.values(), default=0) >= k  # all k of one generation
        return True

    def _pick_warm(
        self, idx: _Index, shape: Shape, k: int, caps: Mapping[str, int] | None, sha: str
    ) -> tuple[str, ...] | None:
        if k == 1:
            for i in self._warm.get(sha, ()):
                b = self.boards[i]
                if i in self.free and shape.constraints.admits(b) and (caps is None or caps.get(b.generation, 0) > 0):
                    return (i,)
        spread = shape.placement is Placement.ANY and shape.packing is Packing.SPREAD
        if k > 1 and (shape.placement is Placement.SAME_RACK or spread):
            return None  # a rack's worth of boards, or boards spread on purpose: by topology alone
        for host in self._warm_hosts.get(sha, ()):
            boards = idx.by_host.get(host)
            if boards is not None and len(boards) >= k:
                got = _take_from(boards, k, caps)
                if got is not None:
                    return got
        return None

    def _pick(
        self, idx: _Index, placement: Placement, packing: Packing, k: int, caps: Mapping[str, int] | None
    ) -> tuple[str, ...] | None:
        if placement is Placement.SAME_HOST:
            # pack: the fullest host that fits (best fit keeps whole hosts for big gangs); spread: the emptiest.
            host_gen = idx.host_gen
            for host in idx.hosts_by_count(ascending=packing is Packing.PACK, at_least=k):
                if caps is not None:
                    gen = host_gen[host]
                    if gen is not None and caps.get(gen, 0) < k:
                        continue
                got = _take_from(idx.by_host[host], k, caps)
                if got is not None:
                    return got
            return None
        if placement is Placement.SAME_RACK:
            racks = [r for r, n in idx.rack_count.items() if n >= k]
            racks.sort(key=lambda r: (idx.rack_count[r], r), reverse=packing is Packing.SPREAD)
            for rack in racks:
                if caps is not None:
                    # A rack is mostly of one generation: one its queue may take too few of is
                    # passed at a glance, not board by board (a reservation asks rack after rack).
                    gens = {idx.host_gen[h] for h in idx.rack_hosts[rack]}
                    if all(gens) and sum(caps.get(g, 0) for g in gens if g) < k:
                        continue
                hosts = sorted(idx.rack_hosts[rack], key=lambda h: (-len(idx.by_host[h]), h))
                got = _gather(idx, hosts, k, caps, spread=packing is Packing.SPREAD)
                if got is not None:
                    return got
            return None
        if packing is Packing.PACK and idx.max_count >= k:
            for host in idx.hosts_by_count(ascending=True, at_least=k):  # one host if one fits
                got = _take_from(idx.by_host[host], k, caps)
                if got is not None:
                    return got
        hosts = list(idx.hosts_by_count(ascending=False))  # fewest hosts: the fullest first
        return _gather(idx, hosts, k, caps, spread=packing is Packing.SPREAD)


def group_of(b: BoardView, placement: Placement) -> str:
    """The host (``SAME_HOST``) or rack (``SAME_RACK``) a board counts in for a gang that must be on one."""
    return b.host if placement is Placement.SAME_HOST else b.rack


def _board_order(b: BoardView) -> tuple[str, int, str]:
    return (b.host, b.slot, b.id)


def _slot_order(b: BoardView) -> tuple[int, str]:
    return (b.slot, b.id)


def _take_from(boards: Sequence[BoardView], k: int, caps: Mapping[str, int] | None) -> tuple[str, ...] | None:
    if caps is None:
        return tuple(b.id for b in boards[:k]) if len(boards) >= k else None
    left = dict(caps)
    out = []
    for b in boards:
        if left.get(b.generation, 0) > 0:
            left[b.generation] -= 1
            out.append(b.id)
            if len(out) == k:
                return tuple(out)
    return None


def _gather(
    idx: _Index, hosts: Sequence[str], k: int, caps: Mapping[str, int] | None, *, spread: bool
) -> tuple[str, ...] | None:
    """``k`` boards across ``hosts`` in order: host by host (pack) or one per host per round (spread)."""
    left = None if caps is None else dict(caps)
    out: list[str] = []

    def fits(b: BoardView) -> bool:
        if left is None:
            return True
        if left.get(b.generation, 0) <= 0:
            return False
        left[b.generation] -= 1
        return True

    if not spread:
        for h in hosts:
            for b in idx.by_host[h]:
                if fits(b):
                    out.append(b.id)
                    if len(out) == k:
                        return tuple(out)
        return None
    cursors = {h: 0 for h in hosts}
    while cursors:
        for h in list(cursors):
            boards = idx.by_host[h]
            i = cursors[h]
            while i < len(boards) and not fits(boards[i]):
                i += 1
            if i >= len(boards):
                del cursors[h]
                continue
            out.append(boards[i].id)
            cursors[h] = i + 1
            if len(out) == k:
                return tuple(out)
    return None


class Freeing:
    """Boards that running jobs would free for a job of ``k`` boards of ``shape``, counted as they
    come and given to the pool only once they could complete the shape: a search through hundreds
    of running jobs then moves the pool's indexes a few times, not once per job. A job that must
    be on one host (rack) is given only the boards of hosts (racks) it could fill: a 256-board
    gang's search gives one rack's boards, not every board counted on the way there.
    :meth:`take_back` undoes every give and forgets what was counted."""

    def __init__(self, pool: Pool, shape: Shape, k: int) -> None:
        self.pool, self.k = pool, k
        self.idx = pool.index(shape.constraints)
        self.placement = shape.placement if shape.required else Placement.ANY
        self.given: list[str] = []
        self._base = self.idx.total
        # Boards counted, not given yet: per host (rack) where it must be on one, else under "".
        self._coming: dict[str, list[str]] = defaultdict(list)
        self._n_coming = 0

    @property
    def count(self) -> int:
        """The free boards the job could use, these counted."""
        return self._base + len(self.given) + self._n_coming

    def add(self, ids: Sequence[str]) -> bool:
        """Count ``ids`` in (boards of the shape's constraints, not free); whether the job could
        fit now by their number and topology (its queue's caps aside)."""
        self._n_coming += len(ids)
        if self.placement is Placement.ANY:
            self._coming[""] += ids
            return self.count >= self.k
        boards, k, placement = self.pool.boards, self.k, self.placement
        touched = set()
        for i in ids:
            g = group_of(boards[i], placement)
            self._coming[g].append(i)
            touched.add(g)
        if self.count < k:
            return False
        return any(self.idx.free_in(g, placement) + len(self._coming[g]) >= k for g in touched)

    def flush(self) -> None:
        """Give the boards counted so far to the pool (before a pick): all of them, or where the
        job must be on one host (rack), those of the hosts (racks) they could complete."""
        if self.placement is Placement.ANY:
            ready = list(self._coming)
        else:
            ready = [g for g, ids in self._coming.items() if self.idx.free_in(g, self.placement) + len(ids) >= self.k]
        ids = [i for g in ready for i in self._coming.pop(g)]
        self._n_coming -= len(ids)
        self.pool.give(ids)
        self.given += ids

    def take_back(self) -> None:
        self.pool.take(self.given)
        self.given = []
        self._coming.clear()
        self._n_coming = 0
