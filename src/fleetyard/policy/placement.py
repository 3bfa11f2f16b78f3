"""Choosing boards for a job (pure): constraints, topology, packing, quota caps, warm boards.

A :class:`Pool` holds the boards of one scheduling pass and which are free. For each distinct set
of :class:`Constraints` it builds, on first use, an index of the free boards that satisfy them:
per host (boards by slot), hosts bucketed by how many such boards they have free, per rack and per
generation counts. Taking a board updates every index it is in, so a pass over 100,000 pending
jobs asks each index in O(hosts of a bucket) rather than scanning 10,000 boards per job.

:meth:`Pool.pick` never changes the pool; :meth:`Pool.take` does. Everything iterates in an
order fixed by the input (sorted ids, insertion order), so the same snapshot gives the same picks.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from fleetyard.domain.firmware import FirmwareSelector
from fleetyard.domain.spec import Packing, Placement

__all__ = ["BoardView", "Constraints", "Pool", "Shape"]


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


class _Index:
    """The free boards that satisfy one :class:`Constraints`, grouped for fast gang placement."""

    def __init__(self) -> None:
        self.total = 0
        self.by_host: dict[str, list[BoardView]] = {}  # free boards, by slot
        self.buckets: dict[int, dict[str, None]] = defaultdict(dict)  # free count -> hosts (ordered)
        self.rack_count: dict[str, int] = defaultdict(int)
        self.rack_hosts: dict[str, dict[str, None]] = defaultdict(dict)
        self.gen_count: dict[str, int] = defaultdict(int)
        self.max_count = 0

    def add(self, b: BoardView) -> None:
        boards = self.by_host.setdefault(b.host, [])
        n = len(boards)
        if n:
            self.buckets[n].pop(b.host, None)
        boards.append(b)
        if n and boards[-2].slot > b.slot:
            boards.sort(key=lambda x: (x.slot, x.id))
        self.buckets[n + 1][b.host] = None
        self.max_count = max(self.max_count, n + 1)
        self.rack_count[b.rack] += 1
        self.rack_hosts[b.rack][b.host] = None
        self.gen_count[b.generation] += 1
        self.total += 1

    def remove(self, b: BoardView) -> None:
        boards = self.by_host[b.host]
        n = len(boards)
        boards.remove(b)
        self.buckets[n].pop(b.host, None)
        if n > 1:
            self.buckets[n - 1][b.host] = None
        else:
            del self.by_host[b.host]
            self.rack_hosts[b.rack].pop(b.host, None)
        self.rack_count[b.rack] -= 1
        self.gen_count[b.generation] -= 1
        self.total -= 1

    def hosts_by_count(self, *, ascending: bool, at_least: int = 1) -> Iterator[str]:
        counts = range(at_least, self.max_count + 1) if ascending else range(self.max_count, at_least - 1, -1)
        for c in counts:
            bucket = self.buckets.get(c)
            if bucket:
                yield from list(bucket)


class Pool:
    """The boards of one pass, which are free, and an index per distinct :class:`Constraints`."""

    def __init__(self, boards: Sequence[BoardView], free: Iterable[str]) -> None:
        self.boards = {b.id: b for b in sorted(boards, key=lambda b: (b.host, b.slot, b.id))}
        self.free: set[str] = {i for i in free if i in self.boards}
        self._indexes: dict[Constraints, _Index] = {}
        self._member_of: dict[str, list[_Index]] = defaultdict(list)
        self._warm: dict[str, list[str]] = defaultdict(list)  # artifact -> boards that have it loaded
        for b in self.boards.values():
            for sha in sorted(b.warm):
                self._warm[sha].append(b.id)

    # ---- the state -------------------------------------------------------------------------

    def index(self, c: Constraints) -> _Index:
        idx = self._indexes.get(c)
        if idx is None:
            idx = _Index()
            candidates = (
                (self.boards[i] for i in sorted(c.only) if i in self.boards) if c.only else self.boards.values()
            )
            for b in candidates:
                if c.admits(b):
                    self._member_of[b.id].append(idx)
                    if b.id in self.free:
                        idx.add(b)
            self._indexes[c] = idx
        return idx

    def take(self, ids: Iterable[str]) -> None:
        """Mark boards not free (bound, or held for a job)."""
        for i in ids:
            if i in self.free:
                self.free.discard(i)
                b = self.boards[i]
                for idx in self._member_of[i]:
                    idx.remove(b)

    def give(self, ids: Iterable[str]) -> None:
        """Mark boards free again (in this pass's books: a held board, or one a victim will free)."""
        for i in ids:
            if i in self.boards and i not in self.free:
                self.free.add(i)
                b = self.boards[i]
                for idx in self._member_of[i]:
                    idx.add(b)

    def matching(self, c: Constraints, ids: Iterable[str]) -> list[str]:
        """Those of ``ids`` that satisfy ``c``."""
        return [i for i in ids if i in self.boards and c.admits(self.boards[i])]

    # ---- choosing ------------------------------------------------------------------------------

    def pick(
        self, shape: Shape, k: int, *, caps: Mapping[str, int] | None = None, warm: str | None = None
    ) -> tuple[str, ...] | None:
        """``k`` free boards for ``shape`` (rank order), or None. ``caps``: generation -> the most
        boards of it the job's queue may still take (None: no limit). ``warm``: an artifact;
        boards that have it loaded come first."""
        idx = self.index(shape.constraints)
        if idx.total < k:
            return None
        if caps is not None and sum(min(caps.get(g, 0), n) for g, n in idx.gen_count.items() if n) < k:
            return None
        if k == 1 and warm is not None:
            for i in self._warm.get(warm, ()):
                b = self.boards[i]
                if i in self.free and shape.constraints.admits(b) and (caps is None or caps.get(b.generation, 0) > 0):
                    return (i,)
        got = self._pick(idx, shape.placement, shape.packing, k, caps)
        if got is None and not shape.required and shape.placement is not Placement.ANY:
            got = self._pick(idx, Placement.ANY, shape.packing, k, caps)
        return got

    def _pick(
        self, idx: _Index, placement: Placement, packing: Packing, k: int, caps: Mapping[str, int] | None
    ) -> tuple[str, ...] | None:
        if placement is Placement.SAME_HOST:
            # pack: the fullest host that fits (best fit keeps whole hosts for big gangs); spread: the emptiest.
            for host in idx.hosts_by_count(ascending=packing is Packing.PACK, at_least=k):
                got = _take_from(idx.by_host[host], k, caps)
                if got is not None:
                    return got
            return None
        if placement is Placement.SAME_RACK:
            racks = [r for r, n in idx.rack_count.items() if n >= k]
            racks.sort(key=lambda r: (idx.rack_count[r], r), reverse=packing is Packing.SPREAD)
            for rack in racks:
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
