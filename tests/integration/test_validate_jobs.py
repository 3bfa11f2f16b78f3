"""`validate` jobs through the whole stack: healthy boards pass; a corrupting board fails, its peer passes."""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from tests.integration.harness import Stack

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
import models
import pytest
import typer
from typer.testing import CliRunner

from fleetyard.cli.repro import repro
from fleetyard.cli.validate import validate


@pytest.mark.one_store("sqlite")
def test_validate_job_passes_and_a_corrupting_board_stands_out(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack.start(hosts=1, driver="sim:3:sim-g1")
    sha = stack.push_artifact(models.mlp(batch="batch").SerializeToString(), "mlp")
    params = {"artifact": sha, "input_sets": 3, "seed": 5, "dims": {"batch": 4}}

    job = stack.wait_job(stack.submit(kind="validate", boards=2, params=params), timeout=60)
    assert job["state"] == "succeeded", (job, stack.logs())
    ranks = stack.ok("GET", f"/v1/jobs/{job['id']}/results")["ranks"]
    assert len(ranks) == 2
    for r in ranks:
        assert r["outcome"] == "success" and r["result"]["passed"] and r["result"]["sets"] == 3
        assert {"report.json", "report.html", "inputs.npz", "candidate.npz", "reference.npz"} <= set(r["outputs"])
        assert r["result"]["artifact"] == sha and r["result"]["seeds"] == [5, 7]

    bad_board, good_board = sorted(r["board_id"] for r in ranks)
    stack.inject(bad_board, "silent_corruption")
    job = stack.wait_job(stack.submit(kind="validate", boards=2, params=params), timeout=60)
    assert job["state"] == "failed" and job["outcome"] == "user_error", job
    by_board = {r["board_id"]: r for r in stack.ok("GET", f"/v1/jobs/{job['id']}/results")["ranks"]}
    assert by_board[good_board]["outcome"] == "success", by_board[good_board]
    bad = by_board[bad_board]
    assert bad["outcome"] == "user_error" and "numerical mismatch: 3 of 3 sets failed" in (bad["message"] or "")
    assert bad["result"]["worst_output"] == "y" and "candidate.npz" in bad["outputs"]

    # The CLI pushes the file, runs on both boards, and prints a per-board table; exit 1 on mismatch.
    monkeypatch.setenv("FLEETYARD_SERVER", stack.url)
    monkeypatch.setenv("FLEETYARD_TOKEN", stack.tokens["alice"])
    validate_app = typer.Typer()
    validate_app.command()(validate)
    path = models.save(models.mlp(batch="batch"), tmp_path / "mlp.onnx")
    junit = tmp_path / "v.xml"
    args = [str(path), "--boards", "2", "--gen", "sim-g1", "--dim", "batch=4", "--sets", "2", "--junit", str(junit)]
    r = CliRunner().invoke(validate_app, args)
    assert r.exit_code == 1, r.output
    lines = {line.split()[1]: line for line in r.stdout.splitlines() if line.split()[:1] in (["0"], ["1"])}
    assert "FAIL" in lines[bad_board] and "PASS" in lines[good_board] and "sim-g1" in lines[good_board]
    cases = ET.parse(junit).getroot().findall("./testsuite/testcase")
    assert len(cases) == 2 and sum(c.find("failure") is not None for c in cases) == 1

    # fleetyard repro: the failing rank again on its own board fails the same way, bit for bit;
    # on its healthy peer it passes, so the result does not reproduce there.
    repro_app = typer.Typer()
    repro_app.command()(repro)
    r = CliRunner().invoke(repro_app, [str(job["id"]), "--json"])
    assert r.exit_code == 0, r.output
    same = json.loads(r.stdout)
    assert same["reproduced"] and same["original"] == f"job {job['id']} rank {bad['rank']} on board {bad_board}"
    checks = {c["name"]: c for c in same["checks"]}
    assert checks["passed"]["original"] is False and checks["passed"]["same"]
    assert checks["candidate outputs of set 0"]["same"] and checks["firmware"]["original"]
    assert checks["board serial"]["again"] == bad["result"]["board"]["serial"]
    again = stack.job(same["again_job"])
    assert again["spec"]["board_ids"] == [bad_board] and again["spec"]["boards"] == 1
    r = CliRunner().invoke(repro_app, [f"{job['id']}/{bad['rank']}", "--board", good_board])
    assert r.exit_code == 1, r.output
    assert "not reproduced" in r.stdout and "DIFFERS" in r.stdout
    # Fleet-wide: a job per board of the generation; the corrupting board fails and its outputs
    # differ from its peers' bit for bit.
    r = CliRunner().invoke(validate_app, [str(path), "--every-board", "--gen", "sim-g1", "--dim", "batch=4", "--json"])
    assert r.exit_code == 1, r.output
    rows = {row["board_id"]: row for row in json.loads(r.stdout)["ranks"]}
    assert len(rows) == 3 and len({row["job_id"] for row in rows.values()}) == 3
    assert not rows[bad_board]["passed"] and rows[bad_board]["peers"] == "differs"
    assert all(row["passed"] and row["peers"] == "same" for b, row in rows.items() if b != bad_board)

    # A board that is not in the fleet is refused at submit, naming it.
    r = CliRunner().invoke(repro_app, [str(job["id"]), "--board", "no-such-board"])
    assert "no-such-board not in the fleet" in str(r.exception), r.output
