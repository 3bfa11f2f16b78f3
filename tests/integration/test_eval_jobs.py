"""`eval` jobs through the whole stack: one data set sharded over 2 boards, metrics, and compare."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

from tests.integration.harness import Stack

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
import models
import numpy as np
import pytest
from typer.testing import CliRunner

from fleetyard.cli.main import app


def test_eval_over_two_boards_aggregates_and_compares(
    sqlite_stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = sqlite_stack.start(hosts=1, driver="sim:2:sim-g1")
    n = 40
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (n, 4)).astype(np.float32)
    labels = models.mlp_reference(x).argmax(1)  # artifact A (weights seed 0) is right on every sample
    buf = io.BytesIO()
    np.savez(buf, x=x, labels=labels, targets=models.mlp_reference(x).astype(np.float32))
    data = stack.put_blob(buf.getvalue())
    shas = [
        stack.push_artifact(models.mlp(batch="batch", seed=seed).SerializeToString(), f"mlp{seed}") for seed in (0, 1)
    ]

    jobs = [stack.submit(kind="eval", boards=2, params={"artifact": sha, "data": data}) for sha in shas]
    for job_id in jobs:
        job = stack.wait_job(job_id, timeout=60)
        assert job["state"] == "succeeded", (job, stack.logs())
    ranks = stack.ok("GET", f"/v1/jobs/{jobs[0]}/results")["ranks"]
    assert sorted(r["result"]["tally"]["samples"] for r in ranks) == [20, 20]
    assert len({r["board_id"] for r in ranks}) == 2 and all("samples.jsonl" in r["outputs"] for r in ranks)

    monkeypatch.setenv("FLEETYARD_SERVER", stack.url)
    monkeypatch.setenv("FLEETYARD_TOKEN", stack.tokens["alice"])
    runner = CliRunner()
    res = runner.invoke(app, ["eval", "show", str(jobs[0]), "--json"])
    assert res.exit_code == 0, res.output
    m = json.loads(res.stdout)
    assert m["samples"] == n and m["top1"] == 1.0 and m["mse"] == pytest.approx(0.0, abs=1e-10)
    assert m["artifact"] == shas[0] and m["dataset"]["sha256"] == data and m["world_size"] == 2

    res = runner.invoke(app, ["eval", "compare", str(jobs[0]), str(jobs[1]), "--json"])
    assert res.exit_code == 0, res.output
    c = json.loads(res.stdout)
    b_top1 = float(np.mean(models.mlp_reference(x, seed=1).argmax(1) == labels))
    assert c["paired"] == n and c["top1"]["b"] == pytest.approx(b_top1) and c["top1"]["a"] == 1.0
    assert c["top1"]["significant"] == (c["top1"]["p_value"] < 0.05) and c["mse"]["delta"] > 0
    res = runner.invoke(app, ["eval", "compare", str(jobs[0]), str(jobs[1])])
    assert res.exit_code == 0 and "McNemar" in res.stdout and "at 0.05" in res.stdout, res.output
