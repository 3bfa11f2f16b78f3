"""What the controller's scheduling shell keeps from pass to pass (:class:`SchedulerShell`), through
the API and the reconciler in one process over SQLite: the line of queued jobs, the queued ids read
only when the queue moved, priority class values, and the kept pool of boards."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from tests.unit.test_api_flow import Fleet, finish

from fleetyard.controller.scheduler import QUEUE_RESYNC_S, SchedulerShell
from fleetyard.store import tables as t

# The statement that reads every queued job's id (and nothing else runs exactly this text).
IDS_SQL = "SELECT jobs.id FROM jobs WHERE jobs.state = ? AND (jobs.not_before IS NULL OR jobs.not_before <= ?)"
BOARDS_SQL = "FROM boards JOIN hosts"  # schedulable_boards: a pass that got past its early return


def shell_of(fleet: Fleet) -> SchedulerShell:
    shell = fleet.rec.scheduler
    assert isinstance(shell, SchedulerShell)
    return shell


def line_ids(fleet: Fleet) -> set[int]:
    return set(shell_of(fleet)._line.ids())


def cancel(fleet: Fleet, job_id: int) -> None:
    r = fleet.client.post(f"/v1/jobs/{job_id}/cancel", headers=fleet.h(fleet.user))
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "canceled"


class Statements:
    """The SQL statements the store's engine runs while it listens, whitespace collapsed."""

    def __init__(self, engine: sa.Engine) -> None:
        self.seen: list[str] = []
        self.engine = engine
        sa.event.listen(engine, "before_cursor_execute", self._on)

    def _on(self, conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        self.seen.append(" ".join(statement.split()))

    def ids_reads(self) -> int:
        return sum(1 for s in self.seen if s == IDS_SQL)

    def board_reads(self) -> int:
        return sum(1 for s in self.seen if BOARDS_SQL in s)

    def close(self) -> None:
        sa.event.remove(self.engine, "before_cursor_execute", self._on)


@pytest.fixture
def sql(fleet: Fleet) -> Iterator[Statements]:
    s = Statements(fleet.store.engine)
    yield s
    s.close()


def test_the_line_follows_cancels_submits_bindings_and_preemptions(fleet: Fleet) -> None:
    fleet.register("h1", n=1)
    t0 = time.time()
    low = fleet.submit(boards=1, priority_class="scavenger")
    assert fleet.rec.schedule(t0) == 1
    assert line_ids(fleet) == set()  # bound: out of the line at once
    [a] = fleet.take("h1")
    assert a["job_id"] == low["id"]
    fleet.events("h1", [{"assignment_id": a["id"], "seq": 0, "type": "started", "at": time.time()}])

    gone = fleet.submit(boards=1)
    stays = fleet.submit(boards=1)
    fleet.rec.schedule(t0 + 0.1)
    assert line_ids(fleet) == {gone["id"], stays["id"]}
    cancel(fleet, gone["id"])
    # No board is free and nothing new was queued: the shell looks again only after IDLE_PASS_EVERY_S.
    fleet.rec.schedule(t0 + 3.0)
    assert line_ids(fleet) == {stays["id"]}

    # The board frees: the older of the waiting jobs runs, never the cancelled one.
    fleet.events("h1", finish(a)[1:])
    assert fleet.job(low["id"])["state"] == "succeeded"
    later = fleet.submit(boards=1, priority_class="scavenger")
    assert fleet.rec.schedule(t0 + 3.1) == 1
    [b] = fleet.take("h1")
    assert b["job_id"] == stays["id"]
    assert line_ids(fleet) == {later["id"]}
    fleet.events("h1", finish(b))
    assert fleet.rec.schedule(t0 + 3.2) == 1
    [c] = fleet.take("h1")
    assert c["job_id"] == later["id"]
    assert line_ids(fleet) == set()
    fleet.events("h1", [{"assignment_id": c["id"], "seq": 0, "type": "started", "at": time.time()}])
    detail = fleet.job(gone["id"])
    assert detail["state"] == "canceled" and detail["attempt_list"] == []

    # A higher class preempts `later`; once its rank stops it is queued again, and back in the line.
    high = fleet.submit(boards=1, priority_class="ci-gate")
    fleet.rec.schedule(t0 + 3.3)
    assert line_ids(fleet) == {high["id"]}
    assert fleet.beat("h1", running=[c["id"]])["cancel"] == [c["id"]]
    fleet.events("h1", [{"assignment_id": c["id"], "seq": 1, "type": "finished", "at": 0, "outcome": "canceled"}])
    assert fleet.job(later["id"])["state"] == "queued"
    assert fleet.rec.schedule(t0 + 3.4) == 1
    [d] = fleet.take("h1")
    assert d["job_id"] == high["id"]
    assert line_ids(fleet) == {later["id"]}
    back = shell_of(fleet)._line.get(later["id"])
    assert back is not None and back.priority == 0  # scavenger's value
    assert shell_of(fleet)._attempts[later["id"]] == 1  # its next attempt is its second


def test_the_queued_ids_are_read_only_when_the_queue_moved_or_now_and_then(fleet: Fleet, sql: Statements) -> None:
    fleet.register("h1", n=2)
    t0 = time.time()
    one = fleet.submit(boards=1, time_limit_s=600)
    gang = fleet.submit(boards=2, time_limit_s=60)  # waits with a board free: every pass goes through
    sql.seen.clear()
    assert fleet.rec.schedule(t0) == 1
    assert sql.ids_reads() == 1
    assert line_ids(fleet) == {gang["id"]}
    assert fleet.job(one["id"])["state"] == "running"

    # Nothing moved (the bound job left the line as it was bound): the count and sum match.
    sql.seen.clear()
    fleet.rec.schedule(t0 + 0.1)
    assert sql.board_reads() == 1, "the pass returned early; it checks nothing"
    assert sql.ids_reads() == 0

    # A new job moves the count and sum: read again, once.
    other = fleet.submit(boards=2, time_limit_s=60)
    sql.seen.clear()
    fleet.rec.schedule(t0 + 0.2)
    assert sql.ids_reads() == 1
    assert line_ids(fleet) == {gang["id"], other["id"]}
    sql.seen.clear()
    fleet.rec.schedule(t0 + 0.3)
    assert sql.board_reads() == 1 and sql.ids_reads() == 0

    # A cancel moves them too.
    cancel(fleet, other["id"])
    sql.seen.clear()
    fleet.rec.schedule(t0 + 0.4)
    assert sql.ids_reads() == 1
    assert line_ids(fleet) == {gang["id"]}

    # Unchanged, but QUEUE_RESYNC_S since the last read: read anyway.
    sql.seen.clear()
    fleet.rec.schedule(t0 + 0.4 + QUEUE_RESYNC_S - 0.1)
    assert sql.board_reads() == 1 and sql.ids_reads() == 0
    fleet.rec.schedule(t0 + 0.4 + QUEUE_RESYNC_S)
    assert sql.ids_reads() == 1
    sql.seen.clear()
    fleet.rec.schedule(t0 + 0.5 + QUEUE_RESYNC_S)
    assert sql.board_reads() == 1 and sql.ids_reads() == 0
    assert line_ids(fleet) == {gang["id"]}


def test_a_priority_class_value_change_reaches_the_views_in_the_line(fleet: Fleet) -> None:
    fleet.register("h1", n=1)
    t0 = time.time()
    first = fleet.submit(boards=1)
    assert fleet.rec.schedule(t0) == 1
    [a] = fleet.take("h1")
    assert a["job_id"] == first["id"]
    plain = fleet.submit(boards=1)  # the default class (batch)
    batch = fleet.submit(boards=1, priority_class="batch")
    scav = fleet.submit(boards=1, priority_class="scavenger")
    fleet.rec.schedule(t0 + 0.1)
    line = shell_of(fleet)._line

    def priorities() -> dict[int, int]:
        views = {j: shell_of(fleet)._line.get(j) for j in (plain["id"], batch["id"], scav["id"])}
        return {j: v.priority for j, v in views.items() if v is not None}

    assert priorities() == {plain["id"]: 100, batch["id"]: 100, scav["id"]: 0}

    config = {
        "priority_classes": [
            {"name": "ci-gate", "value": 1000},
            {"name": "interactive", "value": 500},
            {"name": "batch", "value": 100},
            {"name": "scavenger", "value": 2000, "default": True},
        ]
    }
    r = fleet.client.put("/v1/queues", json=config, headers=fleet.h(fleet.admin))
    assert r.status_code == 200, r.text
    # No board free and nothing new: past IDLE_PASS_EVERY_S, so that the pass reads the classes.
    fleet.rec.schedule(t0 + 3.0)
    assert priorities() == {plain["id"]: 2000, batch["id"]: 100, scav["id"]: 2000}
    assert shell_of(fleet)._line is not line  # rebuilt, with the same jobs
    assert line_ids(fleet) == {plain["id"], batch["id"], scav["id"]}

    # The line's order follows: once the board frees, the jobs now at 2000 run (oldest first),
    # before the batch job submitted ahead of the scavenger one.
    fleet.events("h1", finish(a))
    assert fleet.rec.schedule(t0 + 3.1) == 1
    [b] = fleet.take("h1")
    assert b["job_id"] == plain["id"]
    fleet.events("h1", finish(b))
    assert fleet.rec.schedule(t0 + 3.2) == 1
    [c] = fleet.take("h1")
    assert c["job_id"] == scav["id"]
    assert line_ids(fleet) == {batch["id"]}


def test_the_pool_is_kept_while_only_state_and_warm_change(fleet: Fleet) -> None:
    fleet.register("h1", n=2)
    t0 = time.time()
    fleet.submit(boards=1, time_limit_s=600)
    gang = fleet.submit(boards=2, time_limit_s=60)  # waits with a board free: every pass goes through
    shell = shell_of(fleet)
    assert fleet.rec.schedule(t0) == 1
    pool = shell._pool
    assert pool is not None
    [a] = fleet.take("h1")
    busy = a["board_id"]
    idle = "h1-b1" if busy == "h1-b0" else "h1-b0"

    # The board that ran the job is allocated now, and its rank started: the same pool.
    fleet.events("h1", [{"assignment_id": a["id"], "seq": 0, "type": "started", "at": time.time()}])
    fleet.rec.schedule(t0 + 0.1)
    board = fleet.client.get(f"/v1/boards/{busy}", headers=fleet.h(fleet.user)).json()
    assert board["state"] == "allocated"
    assert shell._pool is pool

    # Artifacts loaded: the same pool, which knows them now.
    sha = "a" * 64
    fleet.beat("h1", boards=[{"id": idle, "warm": [sha]}])
    fleet.rec.schedule(t0 + 0.2)
    assert shell._pool is pool
    assert pool._warm_of == {idle: frozenset({sha})}
    fleet.beat("h1", boards=[{"id": idle, "warm": []}])
    fleet.rec.schedule(t0 + 0.3)
    assert shell._pool is pool and pool._warm_of == {}

    # Labels change: a new pool, with the new view of the board.
    with fleet.store.write() as conn:
        conn.execute(t.boards.update().where(t.boards.c.id == idle).values(labels={"rack": "r9"}))
    fleet.rec.schedule(t0 + 0.4)
    relabelled = shell._pool
    assert relabelled is not None and relabelled is not pool
    assert relabelled.boards[idle].rack == "r9" and relabelled.boards[idle].labels == {"rack": "r9"}
    fleet.rec.schedule(t0 + 0.5)
    assert shell._pool is relabelled

    # Firmware changes: a new pool again.
    with fleet.store.write() as conn:
        conn.execute(t.boards.update().where(t.boards.c.id == busy).values(firmware="2.0"))
    fleet.rec.schedule(t0 + 0.6)
    reflashed = shell._pool
    assert reflashed is not None and reflashed is not relabelled
    assert reflashed.boards[busy].firmware == "2.0"

    # A board comes (a new host): a new pool with it.
    fleet.register("h2", n=1)
    fleet.rec.schedule(t0 + 0.7)
    grown = shell._pool
    assert grown is not None and grown is not reflashed and "h2-b0" in grown.boards
    assert fleet.job(gang["id"])["state"] == "running"  # two free boards now: the gang runs


def test_a_board_that_moves_host_between_the_read_and_the_binding_is_not_bound_to_its_old_host(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pass reads the board on h1; before it binds, an operator releases it and h2's agent
    claims it. The binding is dropped for this pass (its rank would wait on a host that no longer
    has the board); the board serves again, on h2, once it passed its check."""
    from tests.unit.test_api_flow import move, release

    fleet.register("h1", n=1)
    job = fleet.submit()
    real = SchedulerShell._apply
    moved: list[bool] = []

    def apply_after_a_move(self: SchedulerShell, *args: Any) -> int:
        if not moved:
            release(fleet, "h1-b0")
            assert move(fleet, "h1-b0", to="h2") == 200
            moved.append(True)
        return real(self, *args)

    monkeypatch.setattr(SchedulerShell, "_apply", apply_after_a_move)
    t0 = time.time()
    assert fleet.rec.schedule(t0) == 0
    assert moved and fleet.job(job["id"])["state"] == "queued"
    assert line_ids(fleet) == {job["id"]}
    assert fleet.take("h1") == []
