"""`run` jobs through the whole stack: push a model, run it on boards, read back outputs as blobs."""

from __future__ import annotations

import hashlib
import io
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.integration.harness import Stack, wait_for

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from tests.unit import models


def _push_model(stack: Stack) -> str:
    return stack.push_artifact(models.mlp(batch="batch").SerializeToString(), "mlp")


def _arrays(stack: Stack, sha: str) -> dict[str, np.ndarray]:
    r = stack.http("GET", f"/v1/blobs/{sha}")
    assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == sha
    with np.load(io.BytesIO(r.content)) as npz:
        return {k: npz[k] for k in npz.files}


def _ranks(stack: Stack, job_id: int) -> list[dict[str, Any]]:
    return list(stack.ok("GET", f"/v1/jobs/{job_id}/results")["ranks"])


@pytest.mark.one_store("sqlite")
def test_run_job_outputs_match_numpy_and_a_corrupting_board_differs(stack: Stack) -> None:
    stack.start(hosts=1, driver="sim:2:sim-g1")
    artifact = _push_model(stack)
    params = {"artifact": artifact, "seed": 11, "dims": {"batch": 5}}

    job = stack.wait_job(stack.submit(kind="run", boards=2, params=params), timeout=60)
    assert job["state"] == "succeeded", (job, stack.logs())
    healthy: dict[str, str] = {}
    for r in _ranks(stack, job["id"]):
        assert set(r["outputs"]) == {"outputs.npz", "inputs.npz"}
        x = _arrays(stack, r["outputs"]["inputs.npz"])["x"]
        y = _arrays(stack, r["outputs"]["outputs.npz"])["y"]
        assert x.shape == (5, 4)
        np.testing.assert_allclose(y, models.mlp_reference(x), rtol=1e-5, atol=1e-6)
        assert r["result"]["outputs"]["y"]["shape"] == [5, 3] and r["result"]["seed"] == 11
        assert r["result"]["timing"]["session"] == "loaded"  # each board's worker loads it once
        healthy[r["board_id"]] = r["result"]["outputs"]["y"]["sha256"]
    assert len(set(healthy.values())) == 1  # same seed, same numbers on every healthy board
    for board_id in healthy:  # each board's agent reports the model its worker now holds loaded
        wait_for(
            lambda b=board_id: artifact in stack.ok("GET", f"/v1/boards/{b}")["warm"],
            timeout=60,
            what=f"{board_id} warm with {artifact[:12]}",
        )

    bad_board, good_board = sorted(healthy)
    stack.inject(bad_board, "silent_corruption")
    job = stack.wait_job(stack.submit(kind="run", boards=2, params=params), timeout=60)
    assert job["state"] == "succeeded", job  # a corrupting board fails nothing: it is just wrong
    by_board = {r["board_id"]: r for r in _ranks(stack, job["id"])}
    for r in by_board.values():
        # The second job of the same artifact on the same boards finds it loaded in the worker.
        timing = r["result"]["timing"]
        assert timing["session"] == "cached", r
        assert r["created_at"] <= r["delivered_at"] <= r["started_at"] <= r["finished_at"]
        assert r["delivered_at"] <= timing["rank_started_at"] <= timing["compute_started_at"] <= r["finished_at"]
    assert by_board[good_board]["result"]["outputs"]["y"]["sha256"] == healthy[good_board]
    assert by_board[bad_board]["result"]["outputs"]["y"]["sha256"] != healthy[bad_board]
    y_bad = _arrays(stack, by_board[bad_board]["outputs"]["outputs.npz"])["y"]
    x = _arrays(stack, by_board[bad_board]["outputs"]["inputs.npz"])["x"]
    assert not np.allclose(y_bad, models.mlp_reference(x), rtol=1e-5, atol=1e-6)


@pytest.mark.one_store("postgres")  # bounded runs: admission and the agent's blob cache
def test_a_missing_artifact_is_refused_at_submit_and_a_lost_blob_is_a_config_error(stack: Stack) -> None:
    stack.start(hosts=1, driver="sim:1:sim-g1")
    missing = "e" * 64
    r = stack.http("POST", "/v1/jobs", as_="alice", json={"kind": "run", "params": {"artifact": missing}})
    assert r.status_code == 422 and f"artifact {missing} is not registered" in r.json()["error"]["message"]
    r = stack.http("POST", "/v1/jobs", as_="alice", json={"kind": "run", "params": {"artifact": "nope"}})
    assert r.status_code == 422 and "params.artifact" in r.json()["error"]["message"]
    # Registered, then its blob lost from the server's store: the board cannot fetch it.
    data = models.mlp(batch="batch").SerializeToString()
    sha = stack.push_artifact(data, "mlp")
    (stack.dir / "blobs" / sha[:2] / sha).unlink()
    job = stack.wait_job(stack.submit(kind="run", params={"artifact": sha}), timeout=60)
    assert job["state"] == "failed" and job["outcome"] == "config_error", job
    rank = job["attempt_list"][0]["ranks"][0]
    assert sha in (rank["message"] or "")
