"""Pipelines with the real server, controller and agents: stages run as jobs in DAG order over a
matrix, a gate on earlier metrics holds a stage back, and the CLI exits non-zero with JUnit for CI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from fleetyard.parent_death import die_with_parent
from tests.integration.harness import Stack

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
import models

COMPILER_CI = Path(__file__).resolve().parents[2] / "examples" / "pipelines" / "compiler-ci.yaml"

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


def _env(stack: Stack) -> dict[str, str]:
    return {**os.environ, "FLEETYARD_SERVER": stack.url, "FLEETYARD_TOKEN": stack.tokens["alice"], "COLUMNS": "250"}


def _cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fleetyard", *args], capture_output=True, text=True, env=_env(stack),
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


def test_the_compiler_ci_example_runs_end_to_end_and_its_accuracy_gate_fails_the_step(
    sqlite_stack: Stack, tmp_path: Path
) -> None:
    """examples/pipelines/compiler-ci.yaml as CI runs it, on sim boards of three generations: the
    build validated on each, benchmarked, evaluated over 4 boards, reported; and the same build
    against a bar it cannot reach, at the same time: the report is gated and the step exits 1."""
    stack = sqlite_stack.start(hosts=1, driver="sim:4:sim-g1,sim-g2,sim-g3")
    model = models.mlp(batch="batch").SerializeToString()  # generated here: nothing is downloaded
    sha = stack.push_artifact(model, "mlp")
    run = [sys.executable, "-m", "fleetyard", "pipeline", "run", str(COMPILER_CI), "--set", f"artifact={sha}",
           "--set", "bench_s=0.2", "--set", "eval_samples=40", "--poll", "0.3", "--json"]  # fmt: skip
    procs = {
        name: subprocess.Popen(
            [*run, *extra, "--junit", str(tmp_path / f"{name}.xml")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(stack),
            preexec_fn=die_with_parent(signal.SIGKILL),
        )
        for name, extra in (("passed", []), ("gated", ["--set", "min_top1=1.01"]))
    }
    done = {name: p.communicate(timeout=120) for name, p in procs.items()}
    assert procs["passed"].returncode == 0, [(s["name"], s["message"]) for s in json.loads(done["passed"][0])["stages"]]
    assert procs["gated"].returncode == 1, done["gated"]
    runs = {name: json.loads(out) for name, (out, _) in done.items()}
    names = [*(f"validate[generation=sim-g{n}]" for n in (1, 2, 3)), "bench", "eval", "report"]

    passed = stack.ok("GET", f"/v1/pipelines/{runs['passed']['id']}")
    assert passed["state"] == "succeeded"
    stages = {s["name"]: s for s in passed["stages"]}
    assert list(stages) == names and all(s["state"] == "succeeded" and s["job_id"] for s in stages.values())
    jobs = {n: stack.job(s["job_id"]) for n, s in stages.items()}
    for n in (1, 2, 3):  # each generation's validate ran on a board of it
        [rank] = stack.ok("GET", f"/v1/jobs/{stages[f'validate[generation=sim-g{n}]']['job_id']}/results")["ranks"]
        assert rank["result"]["board"]["generation"] == f"sim-g{n}"
    assert jobs["bench"]["submitted_at"] >= max(jobs[n]["finished_at"] for n in names[:3])
    assert jobs["eval"]["submitted_at"] >= jobs["bench"]["finished_at"]
    assert jobs["report"]["submitted_at"] >= jobs["eval"]["finished_at"]
    assert jobs["bench"]["spec"]["params"]["min_duration_s"] == 0.2 and jobs["eval"]["spec"]["boards"] == 4
    ev = stages["eval"]
    assert ev["metrics"]["top1"] == 1.0 and ev["metrics"]["samples"] == 40  # labels are the reference's
    # Four ranks each wrote samples.jsonl: every rank's is kept as NAME@RANK, rank 0's also as NAME.
    assert {f"samples.jsonl@{r}" for r in range(4)} <= set(ev["outputs"])
    assert ev["outputs"]["samples.jsonl"] == ev["outputs"]["samples.jsonl@0"] != ev["outputs"]["samples.jsonl@3"]
    command = jobs["report"]["spec"]["params"]["command"]
    assert f"release {sha}," in command
    assert f"records {ev['outputs']['samples.jsonl@0']} {ev['outputs']['samples.jsonl@3']}" in command
    suite = ET.parse(tmp_path / "passed.xml").getroot().find("testsuite")
    assert suite is not None and (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("6", "0", "0")
    assert [c.get("name") for c in suite.iter("testcase")] == names

    gated = stack.ok("GET", f"/v1/pipelines/{runs['gated']['id']}")
    assert gated["state"] == "gated" and "skipped report" in gated["message"]
    states = {s["name"]: (s["state"], s["gated"]) for s in gated["stages"]}
    assert states == {**{n: ("succeeded", False) for n in names[:-1]}, "report": ("skipped", True)}
    report = gated["stages"][-1]
    assert report["job_id"] is None and "its condition is false" in report["message"]
    suite = ET.parse(tmp_path / "gated.xml").getroot().find("testsuite")
    assert suite is not None and (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("6", "1", "0")
    [failed] = [c for c in suite.iter("testcase") if c.find("failure") is not None]
    assert failed.get("name") == "report" and "min_top1" in (failed.find("failure").get("message") or "")  # type: ignore[union-attr]
