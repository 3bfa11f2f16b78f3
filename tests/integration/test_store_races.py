"""Read-modify-write paths under real concurrency on PostgreSQL (SQLite has one writer at a time:
these races cannot happen there). Each test makes the race happen for certain, by holding one
transaction open at the point that matters, rather than hoping a load test hits it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from fleetyard.controller.reconcile import Reconciler
from fleetyard.domain.auth import Role
from fleetyard.domain.job import Outcome
from fleetyard.server.app import create_app
from fleetyard.store import migrate
from fleetyard.store import tables as t
from fleetyard.store.attempts import end_rank, settle, settle_ended
from fleetyard.store.db import Store
from fleetyard.store.tokens import create_token
from tests.integration.harness import PostgresCluster, wait_for

pytestmark = pytest.mark.postgres


class PgFleet:
    """The server app over a PostgreSQL database, agents played by the test, a controller's reconciler."""

    def __init__(self, url: str, tmp: Path) -> None:
        migrate.upgrade(url)
        self.store = Store(url)
        self.user = create_token(url, name="alice", role=Role.USER, team="compiler")
        self.agents = {h: create_token(url, name=f"agent-{h}", role=Role.AGENT, host=h) for h in ("h1", "h2")}
        self.app = create_app(self.store, blob_dir=tmp / "blobs", heartbeat_flush_s=3600)
        self.client = TestClient(self.app)
        self.rec = Reconciler(self.store, watching_since=0.0)

    def call(self, method: str, path: str, token: str, **kw: Any) -> Any:
        r = self.client.request(method, path, headers={"Authorization": f"Bearer {token}"}, **kw)
        assert r.status_code < 300, r.text
        return r.json()

    def register(self, host: str) -> None:
        board = {"serial": f"{host}-b0", "generation": "sim-g1", "slot": 0, "firmware": "1.0", "device": "sim:0"}
        body = {"host": host, "session": "s1", "driver": "sim:1", "agent_version": "t", "boards": [board]}
        self.call("POST", "/v1/agent/register", self.agents[host], json=body)

    def take(self, host: str) -> list[dict[str, Any]]:
        got = self.call("GET", "/v1/agent/assignments", self.agents[host], params={"session": "s1", "wait": 0})
        return list(got["assignments"])


@pytest.fixture
def pg_fleet(pg_cluster: PostgresCluster, tmp_path: Path) -> Iterator[PgFleet]:
    f = PgFleet(pg_cluster.new_database(), tmp_path)
    yield f
    f.client.close()
    f.store.dispose()


def _two_rank_job(f: PgFleet) -> tuple[int, list[sa.Row[Any]]]:
    """A job of two ranks on two hosts, started; its attempt and its two rank rows."""
    f.register("h1")
    f.register("h2")
    job = f.call("POST", "/v1/jobs", f.user, json={"boards": 2, "packing": "spread", "params": {"command": "true"}})
    assert f.rec.schedule(time.time()) == 1
    assert len(f.take("h1")) == len(f.take("h2")) == 1
    with f.store.read() as conn:
        ranks = conn.execute(sa.select(t.assignments).where(t.assignments.c.job_id == job["id"])).all()
    return ranks[0].attempt_id, sorted(ranks, key=lambda r: r.rank)


def _blocked_on_a_lock(store: Store) -> bool:
    """Whether some session of this database waits for a lock another holds."""
    with store.read() as conn:
        return bool(conn.execute(sa.text("SELECT count(*) FROM pg_locks WHERE NOT granted")).scalar())


def _in_thread(fn: Callable[[], None]) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as exc:
            errors.append(exc)

    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th, errors


def test_two_ranks_ending_at_the_same_moment_settle_their_attempt_once(pg_fleet: PgFleet) -> None:
    """Each transaction ends one rank and looks at its sibling. Without the attempt held, each
    saw the other rank still running under READ COMMITTED, and the job ran forever."""
    f = pg_fleet
    attempt, (r0, r1) = _two_rank_job(f)
    first_ended, commit_first = threading.Event(), threading.Event()

    def end(rank: sa.Row[Any], before_commit: Callable[[], None]) -> None:
        with f.store.write() as conn:
            end_rank(conn, rank, outcome=Outcome.SUCCESS, at=time.time(), exit_code=0)
            settle(conn, rank.attempt_id, at=time.time())
            before_commit()

    def hold() -> None:
        first_ended.set()
        assert commit_first.wait(60)

    a, a_errors = _in_thread(lambda: end(r0, hold))
    assert first_ended.wait(60)
    b, b_errors = _in_thread(lambda: end(r1, lambda: None))
    # The second transaction waits for the first (it needs the attempt the first holds)...
    wait_for(lambda: _blocked_on_a_lock(f.store), timeout=60, what="the second rank's end to wait for the first")
    commit_first.set()  # ...and, once the first commits, reads its rank ended, and settles the attempt.
    a.join(60)
    b.join(60)
    assert not a_errors and not b_errors, (a_errors, b_errors)
    with f.store.read() as conn:
        att = conn.execute(sa.select(t.attempts).where(t.attempts.c.id == attempt)).one()
        job = conn.execute(sa.select(t.jobs).where(t.jobs.c.id == att.job_id)).one()
    assert (att.state, att.outcome) == ("finished", "success")
    assert (job.state, job.attempts) == ("succeeded", 1)
    with f.store.write() as conn:
        assert settle_ended(conn, at=time.time()) == []  # nothing left for the sweeper


def test_the_sweeper_settles_an_attempt_whose_ranks_all_ended(pg_fleet: PgFleet) -> None:
    """Defence in depth: an attempt left running with every rank ended (written here by hand, as
    the race above once left it) is settled by the controller's sweep, and counted."""
    f = pg_fleet
    attempt, ranks = _two_rank_job(f)
    with f.store.write() as conn:
        conn.execute(
            t.assignments.update()
            .where(t.assignments.c.attempt_id == attempt)
            .values(state="exited", outcome="success", exit_code=0, finished_at=time.time())
        )
    assert f.rec.sweep(time.time()) == [attempt]
    assert f.rec.sweep(time.time()) == []
    with f.store.read() as conn:
        job = conn.execute(sa.select(t.jobs).where(t.jobs.c.id == ranks[0].job_id)).one()
    assert job.state == "succeeded"
    metrics = f.client.get("/metrics", headers={"Authorization": f"Bearer {f.user}"}).text
    assert "fleetyard_attempts_swept_total 1.0" in metrics


def test_a_heartbeat_flush_racing_state_switches_waits_and_writes_every_report(pg_fleet: PgFleet) -> None:
    """A transaction switching two boards (in id order, as every writer of many boards does) and
    a heartbeat flush reporting them in the other order: the flush takes its rows in id order too,
    so one waits for the other instead of the two deadlocking and the flush losing its batch."""
    from fleetyard.domain.board import Actor, BoardState
    from fleetyard.store.boards import switch_board_state

    f = pg_fleet
    board = {"generation": "sim-g1", "firmware": "1.0"}
    boards = [{"serial": f"h1-b{i}", "slot": i, "device": f"sim:{i}", **board} for i in range(2)]
    body = {"host": "h1", "session": "s1", "driver": "sim:2", "agent_version": "t", "boards": boards}
    f.call("POST", "/v1/agent/register", f.agents["h1"], json=body)
    reports = [{"id": b, "telemetry": {"temp_c": 40.0 + i}} for i, b in enumerate(("h1-b1", "h1-b0"))]
    f.call("POST", "/v1/agent/heartbeat", f.agents["h1"], json={"session": "s1", "boards": reports})
    switched_first, switch_second = threading.Event(), threading.Event()

    def switch() -> None:
        with f.store.write() as conn:
            for b in ("h1-b0", "h1-b1"):
                switch_board_state(conn, b, BoardState.DRAINED, reason="test", actor=Actor.OPERATOR, at=time.time())
                if b == "h1-b0":
                    switched_first.set()
                    assert switch_second.wait(60)

    a, a_errors = _in_thread(switch)
    assert switched_first.wait(60)
    flush, flush_errors = _in_thread(f.app.state.heartbeats.flush)
    wait_for(lambda: _blocked_on_a_lock(f.store), timeout=60, what="the flush to wait for the switch")
    switch_second.set()
    a.join(60)
    flush.join(60)
    assert not a_errors and not flush_errors, (a_errors, flush_errors)
    assert f.store.races_retried == 0  # it waited: no deadlock had to be broken and run again
    with f.store.read() as conn:
        rows = conn.execute(sa.select(t.boards.c.id, t.boards.c.state, t.boards.c.telemetry)).all()
    assert {r.id: (r.state, r.telemetry.get("temp_c")) for r in rows} == {
        "h1-b0": ("drained", 41.0),
        "h1-b1": ("drained", 40.0),
    }


def test_a_board_written_twice_while_a_flush_holds_its_host_does_not_deadlock(pg_fleet: PgFleet) -> None:
    """A transaction writes a board twice; a heartbeat flush holds the board's host and waits for
    the board. The second write checks the board's host key (PostgreSQL does, for a row the
    transaction wrote already), FOR KEY SHARE: held FOR UPDATE, the host made that a cycle and
    PostgreSQL aborted one of the two (an onboarding test's quarantine failed so under load). Rows
    are held FOR NO KEY UPDATE, which a key check does not wait for."""
    from fleetyard.domain.board import Actor, BoardState
    from fleetyard.store.boards import switch_board_state

    f = pg_fleet
    f.register("h1")
    f.call("POST", "/v1/agent/heartbeat", f.agents["h1"], json={"session": "s1", "boards": [{"id": "h1-b0"}]})
    wrote_once, go_on = threading.Event(), threading.Event()

    def write_twice() -> None:
        with f.store.write() as conn:
            switch_board_state(conn, "h1-b0", BoardState.DRAINED, reason="fan", actor=Actor.OPERATOR, at=time.time())
            wrote_once.set()
            assert go_on.wait(60)
            switch_board_state(conn, "h1-b0", BoardState.AVAILABLE, reason="ok", actor=Actor.OPERATOR, at=time.time())

    a, a_errors = _in_thread(write_twice)
    assert wrote_once.wait(60)
    flush, flush_errors = _in_thread(f.app.state.heartbeats.flush)
    wait_for(lambda: _blocked_on_a_lock(f.store), timeout=60, what="the flush to wait for the board")
    go_on.set()
    a.join(60)
    flush.join(60)
    assert not a_errors and not flush_errors, (a_errors, flush_errors)
    assert f.store.races_retried == 0  # nothing was aborted and run again
    with f.store.read() as conn:
        assert conn.execute(sa.select(t.boards.c.state).where(t.boards.c.id == "h1-b0")).scalar() == "available"


def test_a_cancel_racing_the_binding_of_its_job_stops_the_attempt_it_was_given(
    pg_fleet: PgFleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scheduler binds a queued job while a cancel reads it queued. The cancel waits for the
    binding and stops the attempt it made; unlocked, it marked the job canceled and finished
    while its attempt went on running, unseen by the scheduler and the sweeper."""
    from fleetyard.controller import scheduler

    f = pg_fleet
    f.register("h1")
    job = f.call("POST", "/v1/jobs", f.user, json={"params": {"command": "sleep 60"}})
    bound, commit = threading.Event(), threading.Event()
    real = scheduler.bind_many

    def held(conn: sa.Connection, new: Any, *, at: float, **kw: Any) -> Any:
        ids = real(conn, new, at=at, **kw)
        bound.set()
        assert commit.wait(60)
        return ids

    monkeypatch.setattr(scheduler, "bind_many", held)
    binding, binding_errors = _in_thread(lambda: f.rec.schedule(time.time()))
    assert bound.wait(60)
    cancel, cancel_errors = _in_thread(lambda: f.call("POST", f"/v1/jobs/{job['id']}/cancel", f.user))
    wait_for(lambda: _blocked_on_a_lock(f.store), timeout=60, what="the cancel to wait for the binding")
    commit.set()
    binding.join(60)
    cancel.join(60)
    assert not binding_errors and not cancel_errors, (binding_errors, cancel_errors)
    with f.store.read() as conn:
        j = conn.execute(sa.select(t.jobs).where(t.jobs.c.id == job["id"])).one()
        attempts = conn.execute(sa.select(t.attempts).where(t.attempts.c.job_id == job["id"])).all()
        ranks = conn.execute(sa.select(t.assignments).where(t.assignments.c.job_id == job["id"])).all()
    # The rank no agent had taken ends at once; the attempt settles, and the job with it.
    assert [(a.state, a.outcome) for a in attempts] == [("finished", "canceled")]
    assert [r.state for r in ranks] == ["exited"]
    assert (j.state, j.outcome) == ("canceled", "canceled")
    assert f.take("h1") == []


def test_a_host_heard_from_while_it_is_judged_lost_stays(pg_fleet: PgFleet, monkeypatch: pytest.MonkeyPatch) -> None:
    """The controller reads a host silent past the grace while a server's flush writes the
    heartbeat that ends the silence. Taking it offline waits for the flush, sees the heartbeat, and
    leaves the host (and its boards and work) alone."""
    from fleetyard.policy.liveness import Liveness
    from fleetyard.server.heartbeats import HeartbeatSink

    f = pg_fleet
    f.register("h1")
    f.rec = Reconciler(f.store, liveness_config=Liveness(unreachable_after_s=5, lost_after_s=10), watching_since=0.0)
    sink = f.app.state.heartbeats
    sink.flush()  # the server is known to be alive: its heartbeat writes count
    with f.store.write() as conn:
        conn.execute(t.hosts.update().where(t.hosts.c.id == "h1").values(last_heartbeat_at=time.time() - 100))
    written, commit = threading.Event(), threading.Event()
    real = HeartbeatSink._write

    def held(self: HeartbeatSink, conn: sa.Connection, *args: Any) -> Any:
        out = real(self, conn, *args)
        written.set()
        assert commit.wait(60)
        return out

    monkeypatch.setattr(HeartbeatSink, "_write", held)
    f.call("POST", "/v1/agent/heartbeat", f.agents["h1"], json={"session": "s1"})
    flush, flush_errors = _in_thread(sink.flush)
    assert written.wait(60)
    judged, judge_errors = _in_thread(lambda: f.rec.liveness(time.time()))
    wait_for(lambda: _blocked_on_a_lock(f.store), timeout=60, what="the liveness pass to wait for the flush")
    commit.set()
    flush.join(60)
    judged.join(60)
    assert not flush_errors and not judge_errors, (flush_errors, judge_errors)
    with f.store.read() as conn:
        host = conn.execute(sa.select(t.hosts).where(t.hosts.c.id == "h1")).one()
        boards = conn.execute(sa.select(t.boards.c.state).where(t.boards.c.host_id == "h1")).scalars().all()
    assert host.state == "online" and host.last_heartbeat_at > time.time() - 60
    assert boards == ["available"]


def test_a_drain_racing_the_end_of_the_boards_rank_drains_it(pg_fleet: PgFleet) -> None:
    """An operator drains a board while its rank ends. The drain waits for the end and drains the
    board it released; unlocked, it read the board allocated, only marked it, and the end then
    left it available with a drain reason: counted in service, never given work."""
    f = pg_fleet
    _, (r0, _) = _two_rank_job(f)
    ended, commit = threading.Event(), threading.Event()

    def end() -> None:
        with f.store.write() as conn:
            end_rank(conn, r0, outcome=Outcome.SUCCESS, at=time.time(), exit_code=0)
            ended.set()
            assert commit.wait(60)

    ops = create_token(f.store.url, name="ops", role=Role.OPERATOR)
    a, a_errors = _in_thread(end)
    assert ended.wait(60)
    drain, drain_errors = _in_thread(
        lambda: f.call("POST", f"/v1/boards/{r0.board_id}/drain", ops, json={"reason": "cable swap"})
    )
    wait_for(lambda: _blocked_on_a_lock(f.store), timeout=60, what="the drain to wait for the rank's end")
    commit.set()
    a.join(60)
    drain.join(60)
    assert not a_errors and not drain_errors, (a_errors, drain_errors)
    board = f.call("GET", f"/v1/boards/{r0.board_id}", f.user)
    assert board["state"] == "drained" and "cable swap" in board["drain_reason"], board


def test_a_board_released_while_it_is_bound_is_not_bound(pg_fleet: PgFleet, monkeypatch: pytest.MonkeyPatch) -> None:
    """An operator releases a board (to move it to another host) that the scheduler read free,
    and holds its row while the scheduler binds it. The binding waits for the release, sees the
    board offline and drops the binding for this pass; the job stays queued, nothing runs on h1."""
    from fleetyard.server.services import boards

    f = pg_fleet
    f.register("h1")
    job = f.call("POST", "/v1/jobs", f.user, json={"params": {"command": "true"}})
    switched, commit = threading.Event(), threading.Event()
    real = boards.note

    def held(conn: sa.Connection, *args: Any, **kw: Any) -> None:
        real(conn, *args, **kw)
        if args[1] == "board.release":  # the board's row is switched (and locked) by now
            switched.set()
            assert commit.wait(60)

    monkeypatch.setattr(boards, "note", held)
    ops = create_token(f.store.url, name="ops", role=Role.OPERATOR)
    release, release_errors = _in_thread(
        lambda: f.call("POST", "/v1/boards/h1-b0/release", ops, json={"reason": "to h2"})
    )
    assert switched.wait(60)
    bound: list[int] = []
    binding, binding_errors = _in_thread(lambda: bound.append(f.rec.schedule(time.time())))
    wait_for(lambda: _blocked_on_a_lock(f.store), timeout=60, what="the binding to wait for the release")
    commit.set()
    release.join(60)
    binding.join(60)
    assert not release_errors and not binding_errors, (release_errors, binding_errors)
    assert bound == [0]
    assert f.take("h1") == []
    assert f.call("GET", f"/v1/jobs/{job['id']}", f.user)["state"] == "queued"


def test_two_hosts_claiming_one_released_board_at_once_do_not_both_take_it(
    pg_fleet: PgFleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A board released from h1 is claimed by h2 and h3 at the same moment. Each register used to
    read it offline, free to claim, and both took it (the last write won, two agents served one
    board). Now the second waits for the first, sees the board on h2, and is refused."""
    from fleetyard.server.services import agents

    f = pg_fleet
    f.register("h1")
    ops = create_token(f.store.url, name="ops", role=Role.OPERATOR)
    f.call("POST", "/v1/boards/h1-b0/release", ops, json={"reason": "to another host"})
    f.agents["h3"] = create_token(f.store.url, name="agent-h3", role=Role.AGENT, host="h3")
    checked, commit = threading.Event(), threading.Event()
    real = agents._check_claims

    def held(conn: sa.Connection, host_id: str, moving: list[sa.Row[Any]]) -> None:
        real(conn, host_id, moving)
        if host_id == "h2":
            checked.set()
            assert commit.wait(60)

    monkeypatch.setattr(agents, "_check_claims", held)
    board = {"serial": "h1-b0", "generation": "sim-g1", "slot": 0, "firmware": "1.0", "device": "sim:0"}
    answers: dict[str, int] = {}

    def claim(host: str) -> None:
        body = {"host": host, "session": "s1", "driver": "sim:1", "agent_version": "t", "boards": [board]}
        r = f.client.post("/v1/agent/register", json=body, headers={"Authorization": f"Bearer {f.agents[host]}"})
        answers[host] = r.status_code

    first, first_errors = _in_thread(lambda: claim("h2"))
    assert checked.wait(60)
    second, second_errors = _in_thread(lambda: claim("h3"))
    wait_for(lambda: _blocked_on_a_lock(f.store), timeout=60, what="the second claim to wait for the first")
    commit.set()
    first.join(60)
    second.join(60)
    assert not first_errors and not second_errors, (first_errors, second_errors)
    assert answers == {"h2": 200, "h3": 409}, answers
    with f.store.read() as conn:
        assert conn.execute(sa.select(t.boards.c.host_id).where(t.boards.c.id == "h1-b0")).scalar_one() == "h2"
