"""`validate` jobs through the whole stack: healthy boards pass; a corrupting board takes the blame for its mismatch."""

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

    # A board that computes wrong numbers: its rank's mismatch is followed at once by the board's
    # own L1 check, which it fails, so the mismatch is the board's (an infra error, the board out
    # of service with why) and the job runs again on healthy boards, where it passes.
    bad_board, good_board = sorted(r["board_id"] for r in ranks)
    stack.inject(bad_board, "silent_corruption")
    job = stack.wait_job(stack.submit(kind="validate", boards=2, params=params, board_ids=[bad_board, good_board],
                                      max_infra_retries=0), timeout=60)  # fmt: skip
    assert job["state"] == "failed" and job["outcome"] == "infra_error", job
    by_board = {r["board_id"]: r for r in stack.ok("GET", f"/v1/jobs/{job['id']}/results")["ranks"]}
    bad = by_board[bad_board]
    assert bad["outcome"] == "infra_error" and bad["cause"] == "board_fault", bad
    assert "numerical mismatch: 3 of 3 sets failed" in bad["message"] and "failed its L1 check" in bad["message"]
    assert bad["result"]["board_check"]["passed"] is False and "golden" in bad["result"]["board_check"]["detail"]
    assert bad["result"]["worst_output"] == "y" and "candidate.npz" in bad["outputs"]  # the evidence stays
    history = stack.ok("GET", f"/v1/boards/{bad_board}/history")
    assert any("failed its L1 check" in (e["reason"] or "") and e["to_state"] == "suspect" for e in history), history
    # Left to the fleet (not pinned, retries allowed), the same job runs again elsewhere and passes.
    job = stack.wait_job(stack.submit(kind="validate", boards=2, params=params), timeout=90)
    assert job["state"] == "succeeded", job
    assert bad_board not in {r["board_id"] for r in stack.ok("GET", f"/v1/jobs/{job['id']}/results")["ranks"]}

    # The CLI pushes the file, runs on the boards that can work, and prints a per-board table.
    monkeypatch.setenv("FLEETYARD_SERVER", stack.url)
    monkeypatch.setenv("FLEETYARD_TOKEN", stack.tokens["alice"])
    validate_app = typer.Typer()
    validate_app.command()(validate)
    path = models.save(models.mlp(batch="batch"), tmp_path / "mlp.onnx")
    junit = tmp_path / "v.xml"
    args = [str(path), "--every-board", "--gen", "sim-g1", "--dim", "batch=4", "--sets", "2", "--junit", str(junit)]
    r = CliRunner().invoke(validate_app, args)
    assert r.exit_code == 0, r.output
    assert f"left out 1 board(s) that cannot run work now: {bad_board}" in r.output.replace("\n", " ")
    lines = {line.split()[1]: line for line in r.stdout.splitlines() if line.split()[:1] in (["0"], ["1"])}
    assert set(lines) == {b["id"] for b in stack.boards()} - {bad_board}
    assert all("PASS" in line and "sim-g1" in line for line in lines.values())
    cases = ET.parse(junit).getroot().findall("./testsuite/testcase")
    assert len(cases) == 2 and all(c.find("failure") is None for c in cases)

    # fleetyard repro: the rank again on its own board passes the same way, bit for bit, and so
    # it does on another healthy board.
    repro_app = typer.Typer()
    repro_app.command()(repro)
    r = CliRunner().invoke(repro_app, [str(job["id"]), "--json"])
    assert r.exit_code == 0, r.output
    same = json.loads(r.stdout)
    ranks = sorted(stack.ok("GET", f"/v1/jobs/{job['id']}/results")["ranks"], key=lambda x: x["rank"])
    first = ranks[0]
    assert same["reproduced"] and same["original"] == f"job {job['id']} rank 0 on board {first['board_id']}"
    checks = {c["name"]: c for c in same["checks"]}
    assert checks["passed"]["original"] is True and checks["passed"]["same"]
    assert checks["candidate outputs of set 0"]["same"] and checks["firmware"]["original"]
    assert checks["board serial"]["again"] == first["result"]["board"]["serial"]
    again = stack.job(same["again_job"])
    assert again["spec"]["board_ids"] == [first["board_id"]] and again["spec"]["boards"] == 1
    other = ranks[1]["board_id"]
    r = CliRunner().invoke(repro_app, [f"{job['id']}/0", "--board", other, "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["reproduced"]

    # A board that is not in the fleet is refused at submit, naming it.
    r = CliRunner().invoke(repro_app, [str(job["id"]), "--board", "no-such-board"])
    assert "no-such-board not in the fleet" in str(r.exception), r.output
