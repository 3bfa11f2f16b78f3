"""The scheduler through the API and the controller's shell, in one process over SQLite:
preemption end to end, reservations and reasons, `why`, priority classes."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa
from tests.unit.test_api_flow import Fleet

from fleetyard.store import tables as t


def test_a_higher_class_preempts_a_lower_one_which_is_requeued_with_its_history(fleet: Fleet) -> None:
    fleet.register("h1", n=1)
    low = fleet.submit(boards=1, priority_class="scavenger")
    fleet.rec.schedule(time.time())
    [a] = fleet.take("h1")
    fleet.events("h1", [{"assignment_id": a["id"], "seq": 0, "type": "started", "at": time.time()}])
    high = fleet.submit(boards=1, priority_class="ci-gate")
    fleet.rec.schedule(time.time())
    job = fleet.job(low["id"])
    assert job["state"] == "running"
    attempt = job["attempt_list"][0]
    assert "preempted for job" in (attempt["message"] or "")
    assert fleet.job(high["id"])["pending_reason"] == f"preempting job(s) {low['id']} for their boards"
    # The agent is told to stop the rank; it reports "canceled", which ends as preempted.
    assert fleet.beat("h1", running=[a["id"]])["cancel"] == [a["id"]]
    fleet.events("h1", [{"assignment_id": a["id"], "seq": 1, "type": "finished", "at": 0, "outcome": "canceled"}])
    job = fleet.job(low["id"])
    assert job["state"] == "queued" and job["attempt_list"][0]["outcome"] == "preempted"
    fleet.rec.schedule(time.time())
    [b] = fleet.take("h1")
    assert b["job_id"] == high["id"]
    # The preempted job waits with a reason and keeps its first attempt.
    job = fleet.job(low["id"])
    assert job["state"] == "queued" and len(job["attempt_list"]) == 1 and job["pending_reason"]


def test_why_explains_a_waiting_gang_and_its_reservation(fleet: Fleet) -> None:
    fleet.register("h1", n=2)
    first = fleet.submit(boards=1, time_limit_s=600)
    fleet.rec.schedule(time.time())
    gang = fleet.submit(boards=2, time_limit_s=60)
    fleet.rec.schedule(time.time())
    r = fleet.client.get(f"/v1/jobs/{gang['id']}/why", headers=fleet.h(fleet.user))
    assert r.status_code == 200, r.text
    w = r.json()
    assert w["state"] == "queued" and "waiting for 2 board(s)" in w["summary"] and "1 free match now" in w["summary"]
    assert "boards reserved for it" in w["summary"]
    assert w["details"]["boards_matching"] == 2 and w["details"]["boards_matching_free_now"] == 1
    assert w["reservation"] is not None and len(w["reservation"]["boards"]) == 2
    with fleet.store.read() as conn:
        assert conn.execute(sa.select(t.reservations.c.job_id)).scalars().all() == [gang["id"]]
    # A short job may not take the held board if it would overrun the reservation's start.
    long = fleet.submit(boards=1, time_limit_s=3000)
    fleet.rec.schedule(time.time())
    assert fleet.job(long["id"])["state"] == "queued"
    assert "held for job" in (fleet.job(long["id"])["pending_reason"] or "")
    short = fleet.submit(boards=1, time_limit_s=30)
    fleet.rec.schedule(time.time())
    assert fleet.job(short["id"])["state"] == "running"
    w = fleet.client.get(f"/v1/jobs/{first['id']}/why", headers=fleet.h(fleet.user)).json()
    assert w["summary"] == "it is running"
    assert fleet.client.get("/v1/jobs/999/why", headers=fleet.h(fleet.user)).status_code == 404


def test_runtime_estimates_come_from_the_history_of_the_kind_and_artifact(fleet: Fleet) -> None:
    from tests.unit.test_api_flow import finish

    from fleetyard.controller.scheduler import _runtime_estimates
    from fleetyard.domain.spec import JobSpec

    fleet.register("h1", n=1)
    for _ in range(3):
        fleet.submit(boards=1, time_limit_s=3600)
        fleet.rec.schedule(time.time())
        [a] = fleet.take("h1")
        fleet.events("h1", finish(a))
    with fleet.store.read() as conn:
        estimates = _runtime_estimates(conn)
    assert set(estimates) == {("command", None)} and 60.0 <= estimates[("command", None)] < 120.0
    shell = fleet.rec.scheduler
    shell._estimates = estimates
    assert shell._runtime(JobSpec(time_limit_s=3600)) == estimates[("command", None)]
    assert shell._runtime(JobSpec(time_limit_s=30)) == 30  # never beyond the time limit
    assert shell._runtime(JobSpec(kind="run", params={"artifact": "a" * 64})) == 3600  # no history


def test_fair_share_usage_accrues_between_writes() -> None:
    from fleetyard.controller.scheduler import SchedulerShell

    shell = SchedulerShell(store=None)  # type: ignore[arg-type]  # _usage touches no store
    first = shell._usage({}, {"a": 4}, 100.0)
    assert first["a"] == (0.0, 100.0)
    later = shell._usage({}, {"a": 4}, 110.0)  # nothing written yet: it goes on from what it saw
    assert later["a"][0] == pytest.approx(40.0, rel=1e-3) and later["a"][1] == 110.0
    # A stored value newer than what it saw wins (another controller led meanwhile).
    assert shell._usage({"a": (7.0, 120.0)}, {}, 120.0)["a"] == (7.0, 120.0)


def test_a_job_preempted_twice_runs_to_its_end(fleet: Fleet) -> None:
    """The controller's preemption holds count a job's preempted attempts in the store: after the
    second, no ci-gate job takes its board (protection time off here, so only the count holds)."""
    from tests.unit.test_api_flow import finish

    from fleetyard.policy.preemption_holds import PreemptionHolds

    fleet.rec.scheduler.holds = PreemptionHolds(protect_s=0.0, max_preemptions=2)
    fleet.register("h1", n=1)
    low = fleet.submit(boards=1, priority_class="scavenger")

    def run_low() -> dict[str, object]:
        fleet.rec.schedule(time.time())
        [a] = fleet.take("h1")
        assert a["job_id"] == low["id"]
        fleet.events("h1", [{"assignment_id": a["id"], "seq": 0, "type": "started", "at": time.time()}])
        fleet.rec.schedule(time.time())  # the holds see the new attempt
        return a

    for _ in range(2):
        a = run_low()
        high = fleet.submit(boards=1, priority_class="ci-gate")
        fleet.rec.schedule(time.time())
        assert fleet.beat("h1", running=[a["id"]])["cancel"] == [a["id"]]
        fleet.events("h1", [{"assignment_id": a["id"], "seq": 1, "type": "finished", "at": 0, "outcome": "canceled"}])
        fleet.rec.schedule(time.time())
        [b] = fleet.take("h1")
        assert b["job_id"] == high["id"]
        fleet.events("h1", finish(b))
    a = run_low()
    third = fleet.submit(boards=1, priority_class="ci-gate")
    fleet.rec.schedule(time.time())
    assert fleet.beat("h1", running=[a["id"]])["cancel"] == []
    assert fleet.job(low["id"])["state"] == "running"
    assert fleet.job(third["id"])["state"] == "queued"
