"""The line (:class:`fleetyard.policy.line.Line`): the pending jobs kept in scheduling order across
passes. Expected orders are computed here from the documented rule, not from the policy's helpers:
class value desc, then the queue's fair-share key asc (usage / nominal boards, 1 when unlimited),
then the job's rank desc, then submitted_at, then id."""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping

import pytest

from fleetyard.policy.line import Line
from fleetyard.policy.placement import Shape
from fleetyard.policy.queues import QueueSpec
from fleetyard.policy.scheduling import PendingJob, queue_order

QUEUES = {
    "heavy": QueueSpec("heavy", nominal={"g1": 4}),  # weight 4
    "light": QueueSpec("light", nominal={"g1": 1, "g2": 1}),  # weight 2
    "twin": QueueSpec("twin", nominal={"g1": 2}),  # weight 2: same share as light below
    "free": QueueSpec("free"),  # unlimited: weight 1
}
# shares: heavy 400/4 = 100, light 100/2 = 50, twin 100/2 = 50, free 0/1 = 0, ghost (unknown) 30/1 = 30
USAGE = {"heavy": 400.0, "light": 100.0, "twin": 100.0, "ghost": 30.0}
WEIGHT = {"heavy": 4.0, "light": 2.0, "twin": 2.0}  # nominal boards; 1 for the others
SHARE = {"heavy": 100.0, "light": 50.0, "twin": 50.0, "free": 0.0, "ghost": 30.0}


def job(
    jid: int, queue: str, *, priority: int = 0, rank: int = 0, submitted_at: float = 0.0, boards: int = 1
) -> PendingJob:
    return PendingJob(jid, queue, boards, Shape(), priority=priority, rank=rank, submitted_at=submitted_at)


def expected(jobs: Iterable[PendingJob], shares: Mapping[str, float]) -> list[int]:
    return [j.id for j in sorted(jobs, key=lambda j: (-j.priority, shares[j.queue], -j.rank, j.submitted_at, j.id))]


def ids(jobs: Iterable[PendingJob]) -> list[int]:
    return [j.id for j in jobs]


def mixed() -> list[PendingJob]:
    out = []
    rng = random.Random(7)
    jid = 1
    for priority in (0, 100, 1000):
        for queue in ("heavy", "light", "twin", "free", "ghost"):
            for _ in range(4):
                out.append(
                    job(
                        jid,
                        queue,
                        priority=priority,
                        rank=rng.randint(-1, 1),
                        submitted_at=float(rng.randint(0, 3)),
                    )
                )
                jid += 1
    rng.shuffle(out)
    return out


def test_walk_is_class_then_share_then_rank_then_age_then_id() -> None:
    jobs = mixed()
    got = ids(Line(jobs).walk(QUEUES, USAGE))
    assert got == expected(jobs, SHARE)
    assert ids(queue_order(jobs, QUEUES, USAGE)) == got


def test_walk_hand_checked() -> None:
    jobs = [
        job(1, "heavy", priority=100),  # higher class beats any share
        job(2, "free", rank=5),
        job(3, "light", submitted_at=1.0),
        job(4, "twin", submitted_at=2.0),
        job(5, "twin", rank=1, submitted_at=9.0),  # equal share: interleaves with light by rank
        job(6, "light", submitted_at=1.0),  # same age as 3: id breaks the tie
        job(7, "heavy"),
        job(8, "free", rank=-1),
    ]
    got = ids(Line(jobs).walk(QUEUES, USAGE))
    assert got == [1, 2, 8, 5, 3, 6, 4, 7]


def test_usage_decides_between_queues_at_walk_time() -> None:
    jobs = [job(1, "heavy"), job(2, "free"), job(3, "free", rank=9)]
    line = Line(jobs)
    assert ids(line.walk(QUEUES, {"heavy": 0.0, "free": 5.0})) == [1, 3, 2]
    assert ids(line.walk(QUEUES, {"heavy": 40.0, "free": 5.0})) == [3, 2, 1]
    # No usage at all: every share is 0, so the queues interleave by (rank, age, id).
    assert ids(line.walk(QUEUES, {})) == [3, 1, 2]


def test_equal_shares_interleave_by_rank_age_and_id() -> None:
    jobs = [job(i, q, submitted_at=float(i % 3)) for i, q in enumerate(["a", "b", "c"] * 4, start=1)]
    assert ids(Line(jobs).walk({}, {})) == expected(jobs, {"a": 0.0, "b": 0.0, "c": 0.0})


def test_a_weight_of_zero_uses_the_raw_usage() -> None:
    queues = {"zero": QueueSpec("zero", nominal={"g1": 0}), "one": QueueSpec("one")}
    jobs = [job(1, "zero"), job(2, "one")]
    assert ids(Line(jobs).walk(queues, {"zero": 3.0, "one": 2.0})) == [2, 1]
    assert ids(Line(jobs).walk(queues, {"zero": 1.0, "one": 2.0})) == [1, 2]


def test_add_of_a_present_job_with_a_changed_rank_replaces_it() -> None:
    line = Line([job(1, "free"), job(2, "free"), job(3, "free")])
    assert ids(line.walk(QUEUES, {})) == [1, 2, 3]
    line.add(job(3, "free", rank=1))
    assert ids(line.walk(QUEUES, {})) == [3, 1, 2]
    assert len(line) == 3
    assert line.get(3) == job(3, "free", rank=1)
    line.add(job(3, "free", rank=-1))
    assert ids(line.walk(QUEUES, {})) == [1, 2, 3]
    assert len(line) == 3


def test_add_of_a_present_job_with_a_changed_class_or_queue_replaces_it() -> None:
    line = Line([job(1, "free"), job(2, "heavy"), job(3, "free")])
    line.add(job(3, "free", priority=100))
    assert ids(line.walk(QUEUES, USAGE)) == [3, 1, 2]
    line.add(job(1, "heavy"))  # moves to another queue (and so another group)
    assert ids(line.walk(QUEUES, USAGE)) == [3, 1, 2]
    assert line.queues() == {"free", "heavy"}
    line.add(job(3, "heavy", priority=0))
    assert ids(line.walk(QUEUES, USAGE)) == [1, 2, 3]
    assert line.queues() == {"heavy"}
    assert len(line) == 3


def test_add_of_the_same_job_again_is_a_no_op() -> None:
    line = Line([job(1, "free"), job(2, "free")])
    line.add(job(1, "free"))
    assert len(line) == 2
    assert ids(line.walk(QUEUES, {})) == [1, 2]


def test_add_of_a_job_with_other_fields_changed_keeps_one_copy() -> None:
    line = Line([job(1, "free"), job(2, "free")])
    line.add(job(1, "free", boards=4))
    assert len(line) == 2
    walked = list(line.walk(QUEUES, {}))
    assert [(j.id, j.boards) for j in walked] == [(1, 4), (2, 1)]


def test_discard_of_an_absent_id_is_a_no_op() -> None:
    line = Line([job(1, "free"), job(2, "heavy")])
    line.discard(99)
    line.discard(-1)
    assert len(line) == 2
    assert ids(line.walk(QUEUES, USAGE)) == [1, 2]
    line.discard(2)
    line.discard(2)  # a second time: gone already
    assert ids(line.walk(QUEUES, USAGE)) == [1]


def test_discard_then_walk_excludes_the_job() -> None:
    jobs = mixed()
    line = Line(jobs)
    gone = {j.id for j in jobs[::3]}
    for jid in gone:
        line.discard(jid)
    rest = [j for j in jobs if j.id not in gone]
    got = ids(line.walk(QUEUES, USAGE))
    assert got == expected(rest, SHARE)
    assert not gone & set(got)
    assert len(line) == len(rest)
    for jid in gone:
        assert jid not in line
        assert line.get(jid) is None


def test_discarding_a_whole_group_drops_its_queue() -> None:
    line = Line([job(1, "free"), job(2, "heavy"), job(3, "heavy", priority=100)])
    line.discard(2)
    assert line.queues() == {"free", "heavy"}  # heavy still has a job in class 100
    line.discard(3)
    assert line.queues() == {"free"}
    assert ids(line.walk(QUEUES, USAGE)) == [1]
    line.discard(1)
    assert len(line) == 0
    assert line.queues() == set()
    assert list(line.walk(QUEUES, USAGE)) == []


def test_a_duplicate_id_in_the_constructor_raises() -> None:
    with pytest.raises(ValueError, match="job 2"):
        Line([job(1, "free"), job(2, "free"), job(2, "heavy")])
    with pytest.raises(ValueError):
        Line([job(5, "free"), job(5, "free")])  # even an identical copy


def test_len_contains_get_queues_iter() -> None:
    jobs = [job(1, "free"), job(2, "heavy", priority=100), job(3, "ghost")]
    line = Line(jobs)
    assert len(line) == 3
    assert 1 in line and 2 in line and 3 in line
    assert 4 not in line and "1" not in line
    assert line.get(2) == jobs[1]
    assert line.get(4) is None
    assert line.queues() == {"free", "heavy", "ghost"}
    assert sorted(ids(line)) == [1, 2, 3]
    empty = Line()
    assert len(empty) == 0 and empty.queues() == set() and list(empty.walk({}, {})) == []


def test_walk_is_lazy_and_can_be_repeated() -> None:
    jobs = mixed()
    line = Line(jobs)
    walk = line.walk(QUEUES, USAGE)
    first = [next(walk).id for _ in range(5)]
    assert first == expected(jobs, SHARE)[:5]
    assert ids(line.walk(QUEUES, USAGE)) == expected(jobs, SHARE)  # a fresh walk starts over


@pytest.mark.parametrize("seed", range(8))
def test_a_line_built_incrementally_walks_as_a_fresh_one(seed: int) -> None:
    rng = random.Random(seed)
    queues = ["heavy", "light", "twin", "free", "ghost"]
    line = Line()
    current: dict[int, PendingJob] = {}
    next_id = 1
    for _ in range(300):
        op = rng.random()
        if op < 0.55 or not current:
            j = job(
                next_id,
                rng.choice(queues),
                priority=rng.choice([0, 100, 1000]),
                rank=rng.randint(-2, 2),
                submitted_at=float(rng.randint(0, 20)),
            )
            next_id += 1
        elif op < 0.75:
            old = current[rng.choice(sorted(current))]
            j = job(
                old.id,
                rng.choice([old.queue, rng.choice(queues)]),
                priority=rng.choice([old.priority, 0, 100]),
                rank=rng.randint(-2, 2),
                submitted_at=old.submitted_at,
            )
        else:
            jid = rng.choice([*sorted(current), next_id + 5])  # sometimes an absent id
            line.discard(jid)
            current.pop(jid, None)
            continue
        line.add(j)
        current[j.id] = j
        if rng.random() < 0.1:
            usage = {q: float(rng.choice([0, 10, 20, 40])) for q in queues}
            assert ids(line.walk(QUEUES, usage)) == ids(Line(current.values()).walk(QUEUES, usage))
    fresh = Line(list(current.values()))
    assert len(line) == len(fresh) == len(current)
    assert line.queues() == fresh.queues()
    for usage in (USAGE, {}, {"free": 500.0, "ghost": 1.0}):
        got = ids(line.walk(QUEUES, usage))
        assert got == ids(fresh.walk(QUEUES, usage))
        shares = {q: usage.get(q, 0.0) / WEIGHT.get(q, 1.0) for q in queues}
        assert got == expected(current.values(), shares)
