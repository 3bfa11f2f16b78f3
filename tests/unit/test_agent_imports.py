"""The agent process never imports a job kind's code: under load, an import of onnx and numpy in
the agent held its interpreter for seconds, its heartbeat thread could not run, and a healthy
host was declared lost. Kinds' code runs, and declares its blobs, in the workers."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

from tests.unit import models

# Runs in a fresh interpreter: the test process itself has imported everything long ago.
SCRIPT = """
import json, sys, time
from pathlib import Path
from fleetyard.agent.blobs import BlobCache
from fleetyard.agent.link import ServerLink
from fleetyard.agent.runner import BoardRunner, RunnerConfig
from fleetyard.drivers.sim import SimDriver
from fleetyard.protocol.agent import Assignment, EventType

state, sha = Path(sys.argv[1]), sys.argv[2]
driver = SimDriver("sim:1", host="h", state_dir=state)
events = []
cache = BlobCache(state / "blobs", lambda: ServerLink("http://127.0.0.1:9", "t"), retry_for_s=0.3)
config = RunnerConfig(driver_spec="sim:1", host="h", state_dir=state, stop_grace_s=0.3, blobs=cache)
runner = BoardRunner(driver.discover()[0].serial, driver, config, lambda e, u, c: events.append(e))
runner.start()
jobs = [
    ("run", {"artifact": sha, "dims": {"batch": 2}}),
    ("health-check", {"tier": "L1"}),
    ("run", {"artifact": "0" * 64}),  # not cached, and no server to fetch it from
    ("no-such-kind", {}),
]
for i, (kind, params) in enumerate(jobs, 1):
    runner.submit(Assignment(id=i, attempt_id=i, job_id=i, rank=0, world_size=1, board_id=runner.serial,
                             kind=kind, params=params, time_limit_s=60))
deadline = time.monotonic() + 90
while len([e for e in events if e.type is EventType.FINISHED]) < len(jobs) and time.monotonic() < deadline:
    time.sleep(0.05)
runner.close()
runner.join(5)
print(json.dumps({
    "outcomes": [str(e.outcome) for e in sorted(events, key=lambda e: e.assignment_id) if e.type is EventType.FINISHED],
    "imported": sorted(m for m in ("numpy", "onnx", "onnxruntime", "fleetyard.workloads.health_check",
                                   "fleetyard.workloads.run") if m in sys.modules),
}))
"""


def test_the_agent_runs_every_kind_without_importing_its_code(tmp_path: Path) -> None:
    data = models.mlp(batch="batch", seed=0).SerializeToString()
    sha = hashlib.sha256(data).hexdigest()
    blob = tmp_path / "blobs" / sha[:2] / sha
    blob.parent.mkdir(parents=True)
    blob.write_bytes(data)
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path), sha],
        capture_output=True,
        text=True,
        timeout=150,
        env={"FLEETYARD_SIM_TIME_SCALE": "0", "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["outcomes"] == ["success", "success", "infra_error", "config_error"], out.stderr
    assert report["imported"] == []
