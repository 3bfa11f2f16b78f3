"""`bench` jobs through the whole stack: a job's LoadGen-style result, and `fleetyard bench` on boards."""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from fleetyard.cli.bench import bench
from tests.integration.harness import Stack

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
import models

FAST = {"warmup_s": 0.0, "min_duration_s": 0.2, "min_queries": 50}


@pytest.mark.one_store("sqlite")
def test_bench_job_reports_percentiles_and_the_cli_gates_on_the_verdict(stack: Stack, tmp_path: Path) -> None:
    stack.start(hosts=1, driver="sim:1:sim-g2")
    path = models.save(models.mlp(batch="batch"), tmp_path / "mlp.onnx")
    art = stack.ok("POST", "/v1/artifacts", as_="alice", json={"sha256": _put(stack, path), "name": "mlp"})

    job = stack.wait_job(stack.submit(kind="bench", params={"artifact": art["sha256"], **FAST}), timeout=60)
    assert job["state"] == "succeeded", (job, stack.logs())
    [rank] = stack.ok("GET", f"/v1/jobs/{job['id']}/results")["ranks"]
    r = rank["result"]
    assert r["verdict"] == "VALID" and r["queries"] >= 50 and r["duration_s"] >= 0.2, r
    lat = r["latency_ms"]
    assert lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99.9"]
    assert r["board"]["id"] == rank["board_id"] and r["board"]["sim"]["generation"] == "sim-g2"
    assert r["runtime"]["runtime"] == "onnxruntime" and r["artifact"] == art["sha256"]
    assert "bench.json" in rank["outputs"]

    # The CLI: push the file, bench on the board, a table row; a capped run is INVALID and exits 1.
    app = typer.Typer()
    app.command()(bench)
    env = {"FLEETYARD_SERVER": stack.url, "FLEETYARD_TOKEN": stack.tokens["alice"]}
    args = [str(path), "--warmup", "0", "--min-duration", "0.1", "--min-queries", "20"]
    ok = CliRunner().invoke(app, [*args, "--gen", "sim-g2"], env=env)
    assert ok.exit_code == 0, ok.output
    assert "VALID" in ok.stdout and "single-stream" in ok.stdout and "2.1.0" in ok.stdout  # sim-g2 firmware
    junit = tmp_path / "bench.xml"
    capped = CliRunner().invoke(
        app, [*args, "--scenario", "offline", "--max-duration", "0.01", "--json", "--junit", str(junit)], env=env
    )
    assert capped.exit_code == 1, capped.output
    [row] = json.loads(capped.stdout)
    assert row["result"]["verdict"] == "INVALID" and row["result"]["samples_per_s"] > 0
    assert row["result"]["board"]["firmware"] == "2.1.0"  # the board's session names it
    [case] = ET.parse(junit).getroot().findall("./testsuite/testcase")
    failure = case.find("failure")
    assert case.get("classname") == "bench.offline" and failure is not None
    assert failure.get("message", "").startswith("INVALID: ")


def _put(stack: Stack, path: Path) -> str:
    return stack.put_blob(path.read_bytes())
