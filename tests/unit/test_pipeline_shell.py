"""The pipeline shell over the store, in-process: retries, a job spec that turns out invalid,
the time limit, cancel (the agent's part played by the test, as in test_api_flow)."""

from __future__ import annotations

import time

from tests.unit.test_api_flow import Fleet, finish

SPEC = """
name: retry
params: {cmd: "true"}
time_limit: 1h
stages:
  flaky:
    retries: 1
    job: {kind: command, params: {command: "${{ params.cmd }}"}}
  after:
    needs: [flaky]
    job: {kind: command, boards: "${{ stages.flaky.metrics.boards_wanted }}", params: {command: "true"}}
"""


def _start(fleet: Fleet, text: str = SPEC, **params: object) -> dict:
    r = fleet.client.post("/v1/pipelines", json={"text": text, "params": params}, headers=fleet.h(fleet.user))
    assert r.status_code == 201, r.text
    return r.json()


def _run(fleet: Fleet, run_id: int) -> dict:
    return fleet.client.get(f"/v1/pipelines/{run_id}", headers=fleet.h(fleet.user)).json()


def _job_ends(fleet: Fleet, outcome: str, code: int) -> None:
    assert fleet.rec.schedule(time.time()) == 1
    [a] = fleet.take("h1")
    fleet.events("h1", finish(a, code=code, outcome=outcome))


def test_a_failed_stage_runs_again_then_a_job_that_cannot_be_filled_fails_the_run(fleet: Fleet) -> None:
    fleet.register("h1", n=1)
    run = _start(fleet)
    assert run["state"] == "running" and [s["state"] for s in run["stages"]] == ["waiting", "waiting"]
    fleet.rec.pipelines(time.time())
    first = _run(fleet, run["id"])["stages"][0]
    assert first["state"] == "running" and first["attempts"] == 1
    job = fleet.job(first["job_id"])
    assert job["owner"] == "alice" and job["team"] == "compiler" and job["name"] == f"pipeline {run['id']} flaky"
    _job_ends(fleet, "user_error", 1)
    fleet.rec.pipelines(time.time())  # sees the failure, retries (retries: 1)
    again = _run(fleet, run["id"])["stages"][0]
    assert again["state"] == "running" and again["attempts"] == 2 and again["job_id"] != first["job_id"]
    _job_ends(fleet, "success", 0)
    fleet.rec.pipelines(time.time())
    # `after` reads a metric the command kind does not report: it cannot be filled in, and fails.
    done = _run(fleet, run["id"])
    after = done["stages"][1]
    assert after["state"] == "failed" and "stages.flaky.metrics.boards_wanted has no value" in after["message"]
    assert done["state"] == "failed" and done["finished_at"] is not None


def test_past_its_time_limit_a_run_cancels_its_jobs_and_times_out(fleet: Fleet) -> None:
    fleet.register("h1", n=1)
    run = _start(fleet, SPEC.replace("time_limit: 1h", "time_limit: 30s"))
    t0 = time.time()
    fleet.rec.pipelines(t0)
    job_id = _run(fleet, run["id"])["stages"][0]["job_id"]
    fleet.rec.pipelines(t0 + 31.0)
    done = _run(fleet, run["id"])
    assert done["state"] == "timed_out"
    assert fleet.job(job_id)["state"] == "canceled"


def test_cancel_stops_the_run_and_only_its_owner_or_staff_may(fleet: Fleet) -> None:
    fleet.register("h1", n=1)
    run = _start(fleet)
    fleet.rec.pipelines(time.time())
    r = fleet.client.post(f"/v1/pipelines/{run['id']}/cancel", headers=fleet.h(fleet.other))
    assert r.status_code == 403
    r = fleet.client.post(f"/v1/pipelines/{run['id']}/cancel", headers=fleet.h(fleet.user))
    assert r.status_code == 200 and r.json()["state"] == "canceled"
    assert {s["state"] for s in r.json()["stages"]} == {"skipped"}
    assert fleet.client.post(f"/v1/pipelines/{run['id']}/cancel", headers=fleet.h(fleet.admin)).status_code == 409


REFUSED = """
name: refused
time_limit: 1h
stages:
  ok:
    job: {kind: command, params: {command: "true"}}
  nowhere:
    needs: [ok]
    job: {kind: command, generations: ["${{ stages.ok.metrics.gen }}"], params: {command: "true"}}
  classless:
    needs: [ok]
    job: {kind: command, priority_class: "${{ stages.ok.metrics.klass }}", params: {command: "true"}}
  after:
    needs: [nowhere]
    job: {kind: command, params: {command: "true"}}
"""


def test_a_stage_job_that_a_submit_would_refuse_fails_its_stage_with_the_submits_message(fleet: Fleet) -> None:
    """The Pipeliner inserts stage jobs itself: it runs the submit's admission checks
    (fleetyard.store.admission.check_jobs), so a job that could never run, known only once an
    earlier stage reported, fails its stage, saying why in the submit's words, and the pass goes
    on (the loop lives; what needs it is skipped; the run fails)."""
    fleet.register("h1", n=1)
    run = _start(fleet, REFUSED)
    fleet.rec.pipelines(time.time())
    assert fleet.rec.schedule(time.time()) == 1
    [a] = fleet.take("h1")
    events = finish(a)
    events[-1]["result"] = {"gen": "sim-g9", "klass": "platinum"}  # what `ok` reported
    fleet.events("h1", events)
    fleet.rec.pipelines(time.time())
    stages = {s["name"]: s for s in _run(fleet, run["id"])["stages"]}
    assert stages["ok"]["state"] == "succeeded"
    for name, spec in (("nowhere", {"generations": ["sim-g9"]}), ("classless", {"priority_class": "platinum"})):
        r = fleet.client.post(
            "/v1/jobs", json={"kind": "command", "params": {"command": "true"}, **spec}, headers=fleet.h(fleet.user)
        )
        assert r.status_code == 422
        refused = stages[name]
        assert refused["state"] == "failed" and refused["job_id"] is None
        assert refused["message"] == f"its job was refused: {r.json()['error']['message']}"
    assert "sim-g9" in stages["nowhere"]["message"] and "platinum" in stages["classless"]["message"]
    fleet.rec.pipelines(time.time())
    done = _run(fleet, run["id"])
    assert done["state"] == "failed"
    after = done["stages"][3]
    assert after["state"] == "skipped" and "needs nowhere failed" in after["message"]


def test_a_stage_job_that_can_be_checked_at_start_is_refused_up_front(fleet: Fleet) -> None:
    """What a stage's job is, when it reads no earlier stage, is known at start: the run is
    refused as its submit would be, naming the stage."""
    fleet.register("h1", n=1)
    text = REFUSED.replace('"${{ stages.ok.metrics.gen }}"', "sim-g9")
    r = fleet.client.post("/v1/pipelines", json={"text": text}, headers=fleet.h(fleet.user))
    assert r.status_code == 422
    assert r.json()["error"]["message"].startswith("stage nowhere: job can never run: unknown generation sim-g9")
    assert r.json()["error"]["detail"]["stage"] == "nowhere"
