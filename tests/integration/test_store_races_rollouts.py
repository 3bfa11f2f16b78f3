"""Rollouts and pipeline runs under real concurrency on PostgreSQL: the controller's pass against
an operator's pause, abort or cancel, and two starts of one generation's rollout (docs/concurrency.md,
G3, G4, G5). As in test_store_races, each race is made to happen for certain: one transaction is
held open at the point that matters until the other waits for it."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from fleetyard.controller.pipelines import Pipeliner
from fleetyard.controller.rollouts import Roller
from fleetyard.domain.auth import Role
from fleetyard.domain.firmware_image import sim_image
from fleetyard.server.services import pipelines as pipeline_service
from fleetyard.server.services import rollouts as rollout_service
from fleetyard.store import tables as t
from fleetyard.store.tokens import create_token
from tests.integration.harness import PostgresCluster, wait_for
from tests.integration.test_store_races import PgFleet, _blocked_on_a_lock, _in_thread

pytestmark = pytest.mark.postgres


class Fleet(PgFleet):
    """:class:`PgFleet` with an operator (rollouts are staff's) and hosts of several boards."""

    def __init__(self, url: str, tmp: Path) -> None:
        super().__init__(url, tmp)
        self.admin = create_token(url, name="admin", role=Role.ADMIN)

    def register_boards(self, host: str, n: int) -> None:
        boards = [
            {"serial": f"{host}-b{i}", "generation": "sim-g1", "slot": i, "firmware": "1.0", "device": f"sim:{i}"}
            for i in range(n)
        ]
        body = {"host": host, "session": "s1", "driver": f"sim:{n}", "agent_version": "t", "boards": boards}
        self.call("POST", "/v1/agent/register", self.agents[host], json=body)

    def push(self, version: str) -> None:
        data = sim_image("sim-g1", version, payload=b"fw")
        sha = hashlib.sha256(data).hexdigest()
        self.call("PUT", f"/v1/blobs/{sha}", self.admin, content=data)
        self.call("POST", "/v1/firmware", self.admin, json={"generation": "sim-g1", "version": version, "sha256": sha})

    def post(self, path: str, token: str, **kw: Any) -> Any:
        """A request on a client of its own (for a thread), answered as it came: status and body."""
        client = TestClient(self.app)
        try:
            return client.post(path, headers={"Authorization": f"Bearer {token}"}, **kw)
        finally:
            client.close()

    def ok(self, path: str, token: str, **kw: Any) -> None:
        r = self.post(path, token, **kw)
        assert r.status_code < 300, r.text


@pytest.fixture
def fleet(pg_cluster: PostgresCluster, tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(pg_cluster.new_database(), tmp_path)
    yield f
    f.client.close()
    f.store.dispose()


class Hold:
    """Stops a service's transaction just before it commits (in its audit note, its last write),
    for the calls ``when`` picks, until :meth:`release`."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, module: Any, when: Callable[..., bool]) -> None:
        self.reached, self._go = threading.Event(), threading.Event()
        original = module.note

        def note(*args: Any, **kw: Any) -> None:
            original(*args, **kw)
            if when(*args, **kw):
                self.reached.set()
                assert self._go.wait(60)

        monkeypatch.setattr(module, "note", note)

    def release(self) -> None:
        self._go.set()


def _waits_or_ended(f: Fleet, th: threading.Thread, what: str) -> None:
    """Until ``th`` waits for a lock (or has ended: without the fix, it may not wait at all)."""
    wait_for(lambda: _blocked_on_a_lock(f.store) or not th.is_alive(), timeout=30, what=what)


# ---- G3: the rollout pass against pause and abort


def _rollout_at_its_gate(f: Fleet) -> tuple[int, list[str], list[str]]:
    """A running rollout of 4 boards in two waves (a canary of one, then the rest), its first
    wave flashed, soaked and through its gate (written by hand: the agent's flash and check are
    not this test's subject), so that the next pass starts the second wave; the rollout, and its
    waves' boards."""
    f.register_boards("h1", 4)
    f.push("1.0")
    f.push("2.0.0")
    body = {"generation": "sim-g1", "version": "2.0.0", "reason": "t", "control": 0, "soak_s": 0, "canary": 1,
            "shares": [1.0]}  # fmt: skip
    r = f.call("POST", "/v1/rollouts", f.admin, json=body)
    first = [b["board_id"] for b in r["boards"] if b["wave"] == 0]
    second = [b["board_id"] for b in r["boards"] if b["wave"] == 1]
    assert len(first) == 1 and len(second) == 3
    at = time.time() - 60
    RB, R = t.rollout_boards, t.rollouts
    with f.store.write() as conn:
        conn.execute(
            RB.update()
            .where(RB.c.rollout_id == r["id"], RB.c.board_id.in_(first))
            .values(step="done", step_at=at, flashed_at=at)
        )
        waves = conn.execute(sa.select(R.c.waves).where(R.c.id == r["id"])).scalar_one()
        waves[0].update(flashed_at=at, soak_checks_at=at, checks_in=True, verdict=True)
        conn.execute(R.update().where(R.c.id == r["id"]).values(waves=waves))
    return r["id"], first, second


@pytest.mark.parametrize(("action", "state"), [("pause", "paused"), ("abort", "aborted")])
def test_a_rollout_paused_or_aborted_while_the_pass_waits_stays_so_and_starts_no_wave(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch, action: str, state: str
) -> None:
    """The operator's pause (or abort) holds the rollout row; the controller's pass, which would
    start the second wave, waits for it and then reads the rollout paused. Without the row held,
    the pass read it running, drained and flashed the second wave's boards, and wrote ``running``
    over the pause."""
    f = fleet
    rollout_id, first, second = _rollout_at_its_gate(f)
    hold = Hold(monkeypatch, rollout_service, lambda *a, **kw: True)
    op, op_errors = _in_thread(lambda: f.ok(f"/v1/rollouts/{rollout_id}/{action}", f.admin, json={"reason": "hold on"}))
    assert hold.reached.wait(30)

    def pass_() -> None:
        with f.store.write() as conn:
            Roller().pass_(conn, time.time())

    roll, roll_errors = _in_thread(pass_)
    _waits_or_ended(f, roll, "the rollout pass to wait for the operator")
    hold.release()
    op.join(30)
    roll.join(30)
    assert not op_errors and not roll_errors, (op_errors, roll_errors)
    got = f.call("GET", f"/v1/rollouts/{rollout_id}", f.admin)
    assert got["state"] == state
    assert got["wave"] == 0 and got["wave_records"][1]["started_at"] is None
    assert {b["board_id"]: b["step"] for b in got["boards"] if b["wave"] == 1} == dict.fromkeys(second, "pending")
    with f.store.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(t.board_ops)).scalar_one() == 0
        boards = conn.execute(sa.select(t.boards.c.id, t.boards.c.state, t.boards.c.drain_reason)).all()
    assert {b.id: (b.state, b.drain_reason) for b in boards} == dict.fromkeys([*first, *second], ("available", None))


# ---- G5: two starts of one generation's rollout


def test_two_rollouts_of_one_generation_started_at_once_one_is_refused(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first start, its rollout written, holds before it commits; the second waits for the
    generation's lock and then sees that rollout: 409. Without the lock the second read no active
    rollout (the first's was not committed) and both ran, side by side on the same boards."""
    f = fleet
    f.register_boards("h1", 2)
    f.push("1.0")
    f.push("2.0.0")
    f.push("2.1.0")
    hold = Hold(monkeypatch, rollout_service, lambda *a, **kw: kw.get("reason") == "first")
    answers: dict[str, Any] = {}

    def start(version: str, reason: str) -> None:
        body = {"generation": "sim-g1", "version": version, "reason": reason, "control": 0, "soak_s": 0}
        answers[reason] = f.post("/v1/rollouts", f.admin, json=body)

    a, a_errors = _in_thread(lambda: start("2.0.0", "first"))
    assert hold.reached.wait(30)
    b, b_errors = _in_thread(lambda: start("2.1.0", "second"))
    _waits_or_ended(f, b, "the second start to wait for the first")
    hold.release()
    a.join(30)
    b.join(30)
    assert not a_errors and not b_errors, (a_errors, b_errors)
    assert answers["first"].status_code == 201, answers["first"].text
    assert answers["second"].status_code == 409, answers["second"].text
    assert "one rollout per generation" in answers["second"].json()["error"]["message"]
    with f.store.read() as conn:
        rows = conn.execute(sa.select(t.rollouts.c.version, t.rollouts.c.state)).all()
    assert [(r.version, r.state) for r in rows] == [("2.0.0", "running")]


# ---- G4: a pipeline run's cancel against the pipeline pass

SPEC = """
name: one
time_limit: 1h
stages:
  only:
    job: {kind: command, params: {command: "true"}}
"""


def _pipeline(f: Fleet) -> int:
    f.register("h1")
    run = f.call("POST", "/v1/pipelines", f.user, json={"text": SPEC, "params": {}})
    assert run["state"] == "running" and [s["state"] for s in run["stages"]] == ["waiting"]
    return int(run["id"])


def _canceled_and_no_job_left(f: Fleet, run_id: int) -> None:
    run = f.call("GET", f"/v1/pipelines/{run_id}", f.user)
    assert run["state"] == "canceled"
    assert [s["state"] for s in run["stages"]] == ["skipped"]
    with f.store.read() as conn:
        jobs = conn.execute(sa.select(t.jobs.c.id, t.jobs.c.state)).all()
    assert [j for j in jobs if j.state in ("queued", "running")] == []


def test_a_cancel_that_waits_for_the_pipeline_pass_stops_the_job_the_pass_queued(fleet: Fleet) -> None:
    """The pass queues the run's stage job and holds before it commits; the cancel waits for the
    run, then sees the stage running and stops its job. Without the run held, the cancel read the
    stage waiting, skipped it, and left its job queued: it ran for a canceled run."""
    f = fleet
    run_id = _pipeline(f)
    with f.store.write() as conn:
        Pipeliner().pass_(conn, time.time())
        job_id = conn.execute(sa.select(t.pipeline_stages.c.job_id)).scalar_one()
        assert job_id is not None
        cancel, errors = _in_thread(lambda: f.ok(f"/v1/pipelines/{run_id}/cancel", f.user))
        _waits_or_ended(f, cancel, "the cancel to wait for the pipeline pass")
    cancel.join(30)
    assert not errors, errors
    _canceled_and_no_job_left(f, run_id)
    with f.store.read() as conn:
        assert conn.execute(sa.select(t.jobs.c.state).where(t.jobs.c.id == job_id)).scalar_one() == "canceled"


def test_a_pipeline_pass_that_waits_for_a_cancel_leaves_the_run_alone(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cancel holds before it commits; the pass waits for the run, then reads it canceled and
    queues nothing. Without the run held, the pass read it running, queued the stage's job and
    set the stage running again over the cancel's skip, and no later pass looked at the run."""
    f = fleet
    run_id = _pipeline(f)
    hold = Hold(monkeypatch, pipeline_service, lambda *a, **kw: True)
    cancel, cancel_errors = _in_thread(lambda: f.ok(f"/v1/pipelines/{run_id}/cancel", f.user))
    assert hold.reached.wait(30)

    def pass_() -> None:
        with f.store.write() as conn:
            Pipeliner().pass_(conn, time.time())

    pipe, pipe_errors = _in_thread(pass_)
    _waits_or_ended(f, pipe, "the pipeline pass to wait for the cancel")
    hold.release()
    cancel.join(30)
    pipe.join(30)
    assert not cancel_errors and not pipe_errors, (cancel_errors, pipe_errors)
    _canceled_and_no_job_left(f, run_id)
    with f.store.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(t.jobs)).scalar_one() == 0
