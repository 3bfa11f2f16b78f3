"""Kept state: a :class:`~fleetyard.policy.placement.Pool` and a :class:`~fleetyard.policy.line.Line`
that a controller keeps from pass to pass must plan exactly as a fresh snapshot of plain lists
would (same snapshot, same plan, whatever the history). The strategies are those of
``test_scheduler_props.py``, with fleets whose host names sort otherwise than they were built, and
warm artifacts."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.property.test_scheduler_props import CLASSES, FIRMWARE, GENS, PROPS, queue_specs, shapes

from fleetyard.domain.spec import Placement
from fleetyard.policy.placement import BoardView, Pool, Shape
from fleetyard.policy.queues import QueueSpec
from fleetyard.policy.scheduling import Binding, Line, PendingJob, Plan, RunningJob, Snapshot, plan

ARTIFACTS = ("a1", "a2")
pytestmark = pytest.mark.long  # PROPS: bounded in `make test`


# ---- strategies (test_scheduler_props', with host names out of order and warm artifacts) ---------


@st.composite
def fleets(draw: st.DrawFn) -> list[BoardView]:
    racks = draw(st.integers(1, 3))
    out = []
    # Host names out of order and of different lengths ("h10" < "h2"), so name order is not build order.
    names = draw(st.permutations(["h0", "h1", "h2", "h10", "h3", "h11"]))
    for h, host in enumerate(names[: draw(st.integers(1, 6))]):
        gen = draw(st.sampled_from(GENS))
        labels = draw(st.sampled_from([{}, {"pool": "a"}, {"pool": "b"}]))
        for s in range(draw(st.integers(1, 6))):
            out.append(
                BoardView(
                    f"{host}-{s}",
                    host,
                    gen,
                    slot=s,
                    rack=f"r{h % racks}",
                    firmware=draw(st.sampled_from(FIRMWARE)),
                    labels=labels,
                )
            )
    return out


@st.composite
def job_lists(draw: st.DrawFn, board_ids: list[str], names: list[str], first_id: int, n: int) -> list[PendingJob]:
    return [
        PendingJob(
            j,
            draw(st.sampled_from(names)),
            draw(st.integers(1, 8)),
            draw(shapes(board_ids)),
            priority=draw(st.sampled_from(CLASSES)),
            rank=draw(st.integers(-2, 2)),
            submitted_at=draw(st.integers(0, 20)),
            time_limit_s=draw(st.sampled_from([30.0, 90.0, 600.0, 3600.0])),
            artifact=draw(st.sampled_from([None, None, *ARTIFACTS])),
        )
        for j in range(first_id, first_id + n)
    ]


@dataclass(frozen=True)
class Pass:
    boards: list[BoardView]  # the same boards every pass; what their workers have loaded changes
    offline: frozenset[str]  # not free this pass though no job holds them
    running: list[RunningJob]
    arrivals: list[PendingJob]
    changed: list[tuple[int, int]]  # (index into the line's jobs by id order, new rank)
    cancelled: list[int]  # indexes into the line's jobs by id order
    usage: dict[str, float]
    reservations: int
    window: int | None


@dataclass(frozen=True)
class History:
    queues: dict[str, QueueSpec]
    passes: list[Pass]


def warmed(boards: list[BoardView], draw: st.DrawFn) -> list[BoardView]:
    return [
        replace(b, warm=draw(st.sampled_from([frozenset(), frozenset(), frozenset({"a1"}), frozenset(ARTIFACTS)])))
        for b in boards
    ]


@st.composite
def histories(draw: st.DrawFn) -> History:
    fleet = draw(fleets())
    ids = [b.id for b in fleet]
    queues = draw(queue_specs())
    names = [*queues, *queues, "default"] if queues else ["default"]
    passes = []
    next_id = 1
    for _ in range(draw(st.integers(2, 5))):
        # Running jobs (ids apart from pending ones), as the controller would see them this pass.
        busy = draw(st.lists(st.sampled_from(ids), unique=True, max_size=len(ids)))
        running, i, rid = [], 0, 10_000
        while i < len(busy):
            n = draw(st.integers(1, 4))
            running.append(
                RunningJob(
                    rid,
                    draw(st.sampled_from(names)),
                    tuple(busy[i : i + n]),
                    priority=draw(st.sampled_from(CLASSES)),
                    rank=draw(st.integers(-2, 2)),
                    started_at=draw(st.integers(0, 50)),
                    expected_end=draw(st.sampled_from([60.0, 100.0, 500.0, float("inf")])),
                    preemptible=draw(st.booleans()) or draw(st.booleans()),
                )
            )
            i += n
            rid += 1
        n_new = draw(st.integers(0, 8))
        arrivals = draw(job_lists(ids, names, next_id, n_new))
        next_id += n_new
        passes.append(
            Pass(
                boards=warmed(fleet, draw),
                offline=draw(st.frozensets(st.sampled_from(ids), max_size=3)),
                running=running,
                arrivals=arrivals,
                changed=draw(st.lists(st.tuples(st.integers(0, 30), st.integers(-2, 2)), max_size=2)),
                cancelled=draw(st.lists(st.integers(0, 30), max_size=2)),
                usage=draw(st.dictionaries(st.sampled_from(names), st.floats(0, 1e4), max_size=3)),
                reservations=draw(st.integers(0, 2)),
                window=draw(st.sampled_from([None, None, 0, 2])),
            )
        )
    return History(queues, passes)


def plan_key(p: Plan) -> tuple[object, ...]:
    return (p.bindings, p.preemptions, p.reservations, sorted(p.reasons.items()), sorted(p.kept.items()))


# ---- kept pool and line: the same plans as fresh snapshots --------------------------------------


@PROPS
@given(histories())
def test_a_kept_pool_and_line_plan_as_fresh_snapshots(h: History) -> None:
    pool: Pool | None = None
    line = Line()
    pending: dict[int, PendingJob] = {}  # what the controller's database would say is pending
    for n, p in enumerate(h.passes):
        # The controller between passes: arrivals join, some jobs change rank or are cancelled.
        for j in p.arrivals:
            pending[j.id] = j
            line.add(j)
        in_line = sorted(pending)
        for idx, rank in p.changed:
            if in_line:
                old = pending[in_line[idx % len(in_line)]]
                pending[old.id] = replace(old, rank=rank)
                line.add(pending[old.id])
        for idx in p.cancelled:
            if in_line:
                jid = in_line[idx % len(in_line)]
                pending.pop(jid, None)
                line.discard(jid)
        busy = {b for r in p.running for b in r.boards}
        free = frozenset(b.id for b in p.boards) - busy - p.offline
        if pool is None:
            pool = Pool(p.boards, free)
        else:
            assert pool.same_boards(p.boards)
            pool.rewarm(p.boards)
        common = dict(
            now=50.0 + n,
            free=free,
            running=p.running,
            queues=h.queues,
            usage=p.usage,
            reservations=p.reservations,
            window=p.window,
        )
        fresh_snap = Snapshot(boards=list(p.boards), pending=list(pending.values()), **common)  # type: ignore[arg-type]
        kept_snap = Snapshot(boards=pool, pending=line, **common)  # type: ignore[arg-type]
        expected = plan(fresh_snap)
        got = plan(kept_snap)
        assert plan_key(got) == plan_key(expected), f"pass {n} differs"
        # The pass leaves the pool with its takes applied: bound, reserved and kept boards are not free.
        taken = (
            {b for x in expected.bindings for b in x.board_ids}
            | {b for r in expected.reservations for b in r.board_ids}
            | set(expected.kept)  # free boards a preempting job will run on
        )
        assert pool.free == set(free) - taken
        assert len(line) == len(pending)  # the pass only reads the line
        # The controller: bound jobs leave the line.
        for b in got.bindings:
            pending.pop(b.job_id)
            line.discard(b.job_id)


# ---- Pool.reset: the same observable state as a fresh pool --------------------------------------


@st.composite
def pool_histories(draw: st.DrawFn) -> tuple[list[BoardView], list[frozenset[str]], list[Shape], random.Random]:
    fleet = warmed(draw(fleets()), draw)
    ids = [b.id for b in fleet]
    frees = draw(st.lists(st.frozensets(st.sampled_from([*ids, "unknown-board"])), min_size=2, max_size=5))
    probes = draw(st.lists(shapes(ids), min_size=1, max_size=5))
    return fleet, frees, probes, draw(st.randoms(use_true_random=False))


def observe(pool: Pool, probes: list[Shape], boards: list[BoardView]) -> list[object]:
    """What a pass can see of a pool: which boards are free, and what it picks for each probe, at
    several sizes, with and without quota caps and a warm artifact."""
    out: list[object] = [sorted(pool.free)]
    caps_list = [None, {g: 1 for g in GENS}, {"g1": 3, "g2": 0, "g3": 2}]
    for shape in probes:
        idx = pool.index(shape.constraints)
        out.append((idx.total, sorted((r, n) for r, n in idx.rack_count.items() if n)))
        out.append(sorted(h for h, bs in idx.by_host.items() if bs))
        for k in (1, 2, 3, 5, 8):
            for caps in caps_list:
                out.append(pool.pick(shape, k, caps=caps))
        for art in ARTIFACTS:
            out.append(pool.pick(shape, 1, warm=art))
    return out


@PROPS
@given(pool_histories())
def test_pool_reset_looks_like_a_fresh_pool(
    case: tuple[list[BoardView], list[frozenset[str]], list[Shape], random.Random],
) -> None:
    boards, frees, probes, rnd = case
    kept = Pool(boards, frees[0])
    for free in frees[1:]:
        # A pass: the indexes are built (pick), boards are taken and some given back.
        observe(kept, probes, boards)
        ids = sorted(kept.free)
        kept.take(rnd.sample(ids, rnd.randint(0, len(ids))))
        kept.give(rnd.sample(sorted(kept.boards), rnd.randint(0, min(3, len(kept.boards)))))
        # The next pass.
        kept.reset(free)
        fresh = Pool(list(reversed(boards)), free)
        assert kept.free == fresh.free == {i for i in free if i != "unknown-board"}
        assert observe(kept, probes, boards) == observe(fresh, probes, boards)
        # Observing does not change either pool.
        assert observe(kept, probes, boards) == observe(fresh, probes, boards)


def test_reset_with_a_list_and_with_a_set_agree() -> None:
    boards = [BoardView(f"{h}-{s}", h, "g1", slot=s) for h in ("h2", "h10", "h1") for s in range(3)]
    a = Pool(boards, [b.id for b in boards])
    b = Pool(boards, [b.id for b in boards])
    shape = Shape(placement=Placement.SAME_HOST)
    a.pick(shape, 2)
    b.pick(shape, 2)
    a.reset(["h2-0", "h10-1", "h10-2", "h1-2", "nope"])
    b.reset(frozenset({"h2-0", "h10-1", "h10-2", "h1-2", "nope"}))
    assert a.free == b.free == {"h2-0", "h10-1", "h10-2", "h1-2"}
    assert a.pick(shape, 2) == b.pick(shape, 2) == ("h10-1", "h10-2")
    assert a.pick(shape, 3) is None


def test_same_boards_ignores_warm_but_not_the_rest() -> None:
    boards = [BoardView(f"h0-{s}", "h0", "g1", slot=s) for s in range(3)]
    pool = Pool(boards, [])
    assert pool.same_boards([replace(b, warm=frozenset({"a1"})) for b in boards])
    assert pool.same_boards(list(reversed(boards)))
    assert not pool.same_boards(boards[:2])
    assert not pool.same_boards([*boards[:2], replace(boards[2], generation="g2")])
    assert not pool.same_boards([*boards[:2], replace(boards[2], labels={"pool": "a"})])
    assert not pool.same_boards([*boards[:2], replace(boards[2], id="h0-9")])


# ---- "at most N free on any host" counts the boards free now ----------------------------------------

GANG = Shape(placement=Placement.SAME_HOST)
ONE_HOST = [BoardView(f"h0-{s}", "h0", "g1", slot=s) for s in range(3)]
ALL_FREE = frozenset(b.id for b in ONE_HOST)


def test_regression_same_host_reason_counts_the_boards_free_now() -> None:
    # Job 1 takes one of h0's 3 boards; job 2 (3 on one host) then sees at most 2 free on any host.
    p = plan(
        Snapshot(
            now=0.0,
            boards=ONE_HOST,
            free=ALL_FREE,
            pending=[PendingJob(1, "q", 1, GANG), PendingJob(2, "q", 3, GANG)],
            reservations=0,
        )
    )
    assert p.bindings == [Binding(1, ("h0-0",))]
    assert "at most 2 free on any host" in p.reasons[2], p.reasons[2]


def test_regression_a_kept_pool_explains_as_a_fresh_one() -> None:
    pool = Pool(ONE_HOST, ALL_FREE)
    plan(Snapshot(now=0.0, boards=pool, free=ALL_FREE, pending=Line([PendingJob(1, "q", 1, GANG)]), reservations=0))
    later = dict(now=1.0, free=ALL_FREE - {"h0-0"}, pending=[PendingJob(2, "q", 3, GANG)], reservations=0)
    fresh = plan(Snapshot(boards=ONE_HOST, **later))  # type: ignore[arg-type]
    kept = plan(Snapshot(boards=pool, **later))  # type: ignore[arg-type]
    assert kept.reasons == fresh.reasons
