"""Pipelines with the real server, controller and agents: stages run as jobs in DAG order over a
matrix, a gate on earlier metrics holds a stage back, and the CLI exits non-zero with JUnit for CI."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from tests.integration.harness import Stack

SPEC = """
name: smoke
params: {ship: true, max_s: 60}
time_limit: 5m
stages:
  build:
    matrix: {n: [1, 2]}
    job: {kind: command, params: {command: "echo build ${{ matrix.n }}"}}
  test:
    needs: [build]
    job: {kind: command, params: {command: "echo test"}}
  ship:
    needs: [test]
    if: "${{ params.ship and stages.test.metrics.duration_s < params.max_s }}"
    job: {kind: command, params: {command: "echo ship after ${{ stages.test.metrics.duration_s }}"}}
"""


def _cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FLEETYARD_SERVER": stack.url, "FLEETYARD_TOKEN": stack.tokens["alice"], "COLUMNS": "250"}
    return subprocess.run([sys.executable, "-m", "fleetyard", *args], capture_output=True, text=True, env=env,
                          timeout=90)  # fmt: skip


def test_a_pipeline_runs_its_dag_and_a_gate_fails_the_ci_step(sqlite_stack: Stack, tmp_path: Path) -> None:
    stack = sqlite_stack  # SQLite only: see conftest.sqlite_stack
    stack.start(hosts=1, driver="sim:2:sim-g1")
    spec = tmp_path / "smoke.yaml"
    spec.write_text(SPEC)
    passed = _cli(stack, "pipeline", "run", str(spec), "--poll", "0.3", "--junit", str(tmp_path / "ok.xml"), "--json")
    assert passed.returncode == 0, passed.stdout + passed.stderr
    run = stack.ok("GET", "/v1/pipelines")[0]
    assert run["state"] == "succeeded"
    detail = stack.ok("GET", f"/v1/pipelines/{run['id']}")
    stages = {s["name"]: s for s in detail["stages"]}
    assert list(stages) == ["build[n=1]", "build[n=2]", "test", "ship"]
    assert all(s["state"] == "succeeded" and s["job_id"] for s in stages.values())
    assert detail["needs"] == {"build": [], "test": ["build"], "ship": ["test"]}
    # The DAG held: test started after both builds ended; ship after test.
    jobs = {n: stack.job(s["job_id"]) for n, s in stages.items()}
    assert jobs["test"]["submitted_at"] >= max(jobs[b]["finished_at"] for b in ("build[n=1]", "build[n=2]"))
    assert jobs["ship"]["submitted_at"] >= jobs["test"]["finished_at"]
    assert "echo build 2" in str(stack.job(stages["build[n=2]"]["job_id"])["spec"]["params"]["command"])
    assert stages["test"]["metrics"]["duration_s"] > 0
    assert "ship after" in stack.job(stages["ship"]["job_id"])["spec"]["params"]["command"]
    ok = ET.parse(tmp_path / "ok.xml").getroot()
    assert ok.find("testsuite").get("tests") == "4" and ok.find("testsuite").get("failures") == "0"  # type: ignore[union-attr]

    # --set ship=false: the gate holds the last stage back; the run is gated and the step fails.
    gated = _cli(stack, "pipeline", "run", str(spec), "--set", "ship=false", "--poll", "0.3",
                 "--junit", str(tmp_path / "gated.xml"))  # fmt: skip
    assert gated.returncode == 1, gated.stdout + gated.stderr
    run = stack.ok("GET", "/v1/pipelines")[0]
    assert run["state"] == "gated"
    ship = next(s for s in stack.ok("GET", f"/v1/pipelines/{run['id']}")["stages"] if s["stage"] == "ship")
    assert ship["state"] == "skipped" and ship["gated"] and "condition is false" in ship["message"]
    suite = ET.parse(tmp_path / "gated.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("failures") == "1"

    # Bad input is refused up front, naming the stage and the fix.
    bad = stack.http(
        "POST", "/v1/pipelines", as_="alice", json={"text": SPEC.replace("needs: [build]", "needs: [bild]")}
    )
    assert bad.status_code == 422 and "needs 'bild', which is not a stage" in bad.json()["error"]["message"]
    bad = stack.http(
        "POST", "/v1/pipelines", as_="alice", json={"text": SPEC.replace("kind: command", "kind: nope", 1)}
    )
    assert bad.status_code == 422 and "stage build[n=1]" in bad.json()["error"]["message"]
