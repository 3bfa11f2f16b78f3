"""A torch ExportedProgram (.pt2) through the whole stack: pushed, inspected by the server, run on a sim board."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest

from fleetyard import runtimes
from tests.integration.harness import Stack

torch = pytest.importorskip("torch")


def _exported_mlp(path: Path) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).eval()
    batch = torch.export.Dim("batch", min=1, max=64)
    ep = torch.export.export(module, (torch.randn(2, 4),), dynamic_shapes=({0: batch},))
    torch.export.save(ep, path)
    return path, module


def _arrays(stack: Stack, sha: str) -> dict[str, np.ndarray]:
    r = stack.http("GET", f"/v1/blobs/{sha}")
    assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == sha
    with np.load(io.BytesIO(r.content)) as npz:
        return {k: npz[k] for k in npz.files}


@pytest.mark.one_store("sqlite")
def test_run_job_of_a_pt2_matches_torch_eager(stack: Stack, tmp_path: Path) -> None:
    stack.start(hosts=1, driver="sim:1:sim-g1")
    path, module = _exported_mlp(tmp_path / "mlp.pt2")
    sha = stack.push_artifact(path.read_bytes(), "mlp.pt2")
    (spec,) = runtimes.inspect(path).signature.inputs  # nn.Sequential's forward names it "input"
    symbol = spec.shape[0]  # type: ignore[index]
    assert spec.name == "input" and isinstance(symbol, str)

    params = {"artifact": sha, "seed": 11, "dims": {symbol: 5}}
    job = stack.wait_job(stack.submit(kind="run", boards=1, params=params), timeout=90)
    assert job["state"] == "succeeded", (job, stack.logs())
    (rank,) = stack.ok("GET", f"/v1/jobs/{job['id']}/results")["ranks"]
    assert rank["result"]["runtime"]["runtime"] == "torch", rank["result"]
    x = _arrays(stack, rank["outputs"]["inputs.npz"])["input"]
    y = _arrays(stack, rank["outputs"]["outputs.npz"])["output_0"]
    assert x.shape == (5, 4)
    with torch.no_grad():
        want = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(y, want, rtol=1e-6, atol=1e-6)
