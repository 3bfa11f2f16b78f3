"""A team's jobs are its own: another team's user sees that a job exists, not what it runs, what it
logged or what it found; staff read all; a team shares a job with ``visibility: fleet``; and
secret-looking env values are masked in every answer, the owner's included."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.test_api_flow import Fleet, finish


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path)
    with f.client:
        yield f


def _run(fleet: Fleet, **spec: object) -> int:
    """Submit as alice (team compiler), run it to success with a log line and a result."""
    job = fleet.submit(**spec)
    assert fleet.rec.schedule(time.time()) == 1
    [a] = fleet.take("h1")
    events = finish(a)
    events[-1]["result"] = {"top1": 0.91}
    fleet.events("h1", events)
    assert fleet.job(job["id"])["state"] == "succeeded"
    return int(job["id"])


ENV = {"HF_TOKEN": "hf_secret", "DB_PASSWORD": "pw", "API_KEY": "k", "MODE": "fast"}


def test_another_teams_user_cannot_read_a_jobs_spec_logs_or_results(fleet: Fleet) -> None:
    fleet.register("h1", n=1)
    job = _run(fleet, params={"command": "echo hi", "env": ENV})
    bob, alice, admin = fleet.h(fleet.other), fleet.h(fleet.user), fleet.h(fleet.admin)
    for path in (f"/v1/jobs/{job}", f"/v1/jobs/{job}/logs", f"/v1/jobs/{job}/results"):
        r = fleet.client.get(path, headers=bob)
        assert r.status_code == 403, (path, r.text)
        assert "team 'compiler'" in r.json()["error"]["message"] and "hf_secret" not in r.text
        assert fleet.client.get(path, headers=alice).status_code == 200
        assert fleet.client.get(path, headers=admin).status_code == 200
        # An agent's token (a host taken over) reads no team's work either.
        assert fleet.client.get(path, headers=fleet.h(fleet.agents["h1"])).status_code == 403
    # The list shows bob that the job exists (the queue is shared), not its parameters.
    [listed] = [j for j in fleet.client.get("/v1/jobs", headers=bob).json() if j["id"] == job]
    assert listed["team"] == "compiler" and listed["spec"]["params"] == {}
    # Bob's dashboard: the job's page is refused, and no result of it is on the result pages.
    login = fleet.client.post("/ui/login", data={"token": fleet.other}, follow_redirects=False)
    assert login.status_code in (302, 303), login.text
    page = fleet.client.get(f"/ui/jobs/{job}")
    assert "hf_secret" not in page.text and "echo hi" not in page.text and "team &#x27;compiler&#x27;" in page.text


def test_secret_looking_env_values_are_masked_for_everyone(fleet: Fleet) -> None:
    fleet.register("h1", n=1)
    job = fleet.submit(params={"command": "true", "env": ENV})
    for who in (fleet.user, fleet.admin):
        for body in (fleet.client.get(f"/v1/jobs/{job['id']}", headers=fleet.h(who)).json(), job):
            assert body["spec"]["params"]["env"] == {
                "HF_TOKEN": "***",
                "DB_PASSWORD": "***",
                "API_KEY": "***",
                "MODE": "fast",
            }
    # The rank itself gets the values.
    assert fleet.rec.schedule(time.time()) == 1
    [a] = fleet.take("h1")
    assert a["params"]["env"]["HF_TOKEN"] == "hf_secret"


def test_a_job_shared_with_the_fleet_is_read_by_every_team(fleet: Fleet) -> None:
    fleet.register("h1", n=1)
    job = _run(fleet, params={"command": "echo shared"}, visibility="fleet")
    bob = fleet.h(fleet.other)
    assert fleet.client.get(f"/v1/jobs/{job}", headers=bob).json()["spec"]["params"]["command"] == "echo shared"
    assert fleet.client.get(f"/v1/jobs/{job}/results", headers=bob).json()["ranks"][0]["result"] == {"top1": 0.91}
    chunks = fleet.client.get(f"/v1/jobs/{job}/logs", headers=bob).json()["chunks"]
    assert "rank 0" in "".join(c["data"] for c in chunks)


def _put(fleet: Fleet, token: str, data: bytes) -> tuple[str, int]:
    sha = hashlib.sha256(data).hexdigest()
    return sha, fleet.client.put(f"/v1/blobs/{sha}", content=data, headers=fleet.h(token)).status_code


def test_a_teams_blobs_are_read_by_that_team_its_jobs_outputs_too(fleet: Fleet) -> None:
    """Alice's uploads and her jobs' outputs are her team's: bob neither downloads them, nor
    learns they exist, nor hands them to a job of his, nor publishes them as an artifact."""
    from tests.unit.models import mlp

    fleet.register("h1", n=1)
    fleet.app.state.max_blob_bytes = 1 << 20
    alice, bob, admin, agent = (fleet.h(x) for x in (fleet.user, fleet.other, fleet.admin, fleet.agents["h1"]))
    inputs, status = _put(fleet, fleet.user, b"alice's private inputs")
    model, status2 = _put(fleet, fleet.user, mlp(seed=7).SerializeToString())
    assert status == status2 == 201
    for sha in (inputs, model):
        for method in ("GET", "HEAD"):
            assert fleet.client.request(method, f"/v1/blobs/{sha}", headers=bob).status_code == 404
            for who in (alice, admin, agent):
                assert fleet.client.request(method, f"/v1/blobs/{sha}", headers=who).status_code == 200
    denied = fleet.client.get(f"/v1/blobs/{inputs}", headers=bob).json()["error"]["message"]
    assert "team robotics" in denied and "upload it" in denied
    # Not as an artifact of his: the model's inspection would make it every team's.
    r = fleet.client.post("/v1/artifacts", json={"sha256": model}, headers=bob)
    assert r.status_code == 404, r.text
    # Nor as a job's blob: his ranks would read it (refused before the kind looks at the file).
    r = fleet.client.post("/v1/artifacts", json={"sha256": model}, headers=alice)
    assert r.status_code == 201, r.text
    r = fleet.client.post(
        "/v1/jobs", json={"kind": "run", "params": {"artifact": model, "inputs": inputs}}, headers=bob
    )
    assert r.status_code == 422 and inputs in r.json()["error"]["message"], r.text
    # The registered artifact is the fleet's now; uploading the same bytes makes them bob's too.
    assert fleet.client.get(f"/v1/blobs/{model}", headers=bob).status_code == 200
    assert _put(fleet, fleet.other, b"alice's private inputs")[1] == 201
    assert fleet.client.get(f"/v1/blobs/{inputs}", headers=bob).status_code == 200

    # A rank's output is read by its job's team only; by every team once the job is shared.
    out = {}
    for visibility in ("team", "fleet"):
        sha, code = _put(fleet, fleet.agents["h1"], f"output of a {visibility} job".encode())
        assert code == 201
        job = fleet.submit(params={"command": "true"}, visibility=visibility)
        assert fleet.rec.schedule(time.time()) == 1
        [a] = fleet.take("h1")
        events = finish(a)
        events[-1]["outputs"] = {"out.bin": sha}
        fleet.events("h1", events)
        assert fleet.job(job["id"])["state"] == "succeeded"
        out[visibility] = sha
    assert fleet.client.get(f"/v1/blobs/{out['team']}", headers=alice).status_code == 200
    assert fleet.client.get(f"/v1/blobs/{out['team']}", headers=bob).status_code == 404
    assert fleet.client.get(f"/v1/blobs/{out['fleet']}", headers=bob).status_code == 200


PIPELINE = """
name: private-eval
stages:
  build:
    job: {kind: command, params: {command: "true"}}
"""


def test_a_teams_pipeline_runs_and_lease_notes_are_its_own(fleet: Fleet) -> None:
    fleet.register("h1", n=1)
    alice, bob, admin = fleet.h(fleet.user), fleet.h(fleet.other), fleet.h(fleet.admin)
    run = fleet.client.post("/v1/pipelines", json={"text": PIPELINE}, headers=alice)
    assert run.status_code == 201, run.text
    run_id = run.json()["id"]
    r = fleet.client.get(f"/v1/pipelines/{run_id}", headers=bob)
    assert r.status_code == 403 and "team 'compiler'" in r.json()["error"]["message"], r.text
    assert fleet.client.get(f"/v1/pipelines/{run_id}", headers=alice).json()["stages"]
    assert fleet.client.get(f"/v1/pipelines/{run_id}", headers=admin).status_code == 200
    [listed] = [x for x in fleet.client.get("/v1/pipelines", headers=bob).json() if x["id"] == run_id]
    assert listed["team"] == "compiler" and listed["stages"] == []
    login = fleet.client.post("/ui/login", data={"token": fleet.other}, follow_redirects=False)
    assert login.status_code in (302, 303), login.text
    assert "build" not in fleet.client.get(f"/ui/pipelines/{run_id}").text

    lease = fleet.client.post("/v1/leases", json={"ttl_s": 60, "note": "bring-up of the secret board"}, headers=alice)
    assert lease.status_code == 201, lease.text
    lid = lease.json()["id"]
    assert fleet.client.get(f"/v1/leases/{lid}", headers=alice).json()["note"] == "bring-up of the secret board"
    theirs = fleet.client.get(f"/v1/leases/{lid}", headers=bob).json()
    assert theirs["note"] is None and theirs["team"] == "compiler"
    assert all(x["note"] is None for x in fleet.client.get("/v1/leases", headers=bob).json())
