"""Properties of the v0 scheduler over random fleets and queues."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from fleetyard.domain.spec import Placement
from fleetyard.policy.scheduling import FreeBoard, PendingJob, matches, queue_order, schedule

GENS = ["g1", "g2", "g3"]


@st.composite
def fleets(draw: st.DrawFn) -> list[FreeBoard]:
    n_hosts = draw(st.integers(1, 6))
    boards = []
    for h in range(n_hosts):
        gen = draw(st.sampled_from(GENS))
        for slot in range(draw(st.integers(0, 8))):
            pool = draw(st.sampled_from(["ci", "batch"]))
            boards.append(FreeBoard(f"h{h}-{slot}", f"h{h}", slot, gen, {"pool": pool}))
    return boards


@st.composite
def queues(draw: st.DrawFn) -> list[PendingJob]:
    jobs = []
    for i in range(draw(st.integers(0, 25))):
        labels = draw(st.sampled_from([{}, {"pool": "ci"}, {"pool": "batch"}]))
        jobs.append(
            PendingJob(
                id=i + 1,
                priority=draw(st.integers(-2, 2)),
                submitted_at=float(draw(st.integers(0, 100))),
                boards=draw(st.integers(1, 10)),
                generations=frozenset(draw(st.lists(st.sampled_from(GENS), max_size=2))),
                labels=labels,
                placement=draw(st.sampled_from(list(Placement))),
            )
        )
    return jobs


def fits(job: PendingJob, free: list[FreeBoard]) -> bool:
    ok = [b for b in free if matches(job, b)]
    if job.placement is Placement.SAME_HOST:
        return any(n >= job.boards for n in Counter(b.host_id for b in ok).values())
    return len(ok) >= job.boards


@settings(max_examples=300, deadline=None)
@given(fleets(), queues())
def test_bindings_are_valid_gangs(boards: list[FreeBoard], jobs: list[PendingJob]) -> None:
    by_id = {b.id: b for b in boards}
    jobs_by_id = {j.id: j for j in jobs}
    bindings = schedule(jobs, boards)
    used = [bid for b in bindings for bid in b.board_ids]
    assert len(used) == len(set(used)), "a board bound twice"
    assert len({b.job_id for b in bindings}) == len(bindings), "a job bound twice"
    for b in bindings:
        job = jobs_by_id[b.job_id]
        assert len(b.board_ids) == job.boards, "a gang got fewer or more boards than asked"
        assert all(matches(job, by_id[i]) for i in b.board_ids)
        if job.placement is Placement.SAME_HOST:
            assert len({by_id[i].host_id for i in b.board_ids}) == 1


@settings(max_examples=300, deadline=None)
@given(fleets(), queues())
def test_greedy_in_priority_order(boards: list[FreeBoard], jobs: list[PendingJob]) -> None:
    """A job left queued did not fit in what jobs ahead of it left free."""
    bindings = {b.job_id: b for b in schedule(jobs, boards)}
    taken: set[str] = set()
    for job in queue_order(jobs):
        free = [b for b in boards if b.id not in taken]
        if job.id in bindings:
            taken |= set(bindings[job.id].board_ids)
        else:
            assert not fits(job, free), f"job {job.id} fit but was skipped"
