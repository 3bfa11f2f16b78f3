"""What the tests start dies with them: a pytest killed with SIGKILL leaves no server, controller,
agent, board worker, rank or PostgreSQL behind, and the next cluster's start removes the folder
that the dead one left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from fleetyard.parent_death import die_with_parent
from tests.integration.harness import ROOT, sweep_stale_clusters, wait_for

CHILD_TEST = """
import json, os, time
from pathlib import Path
from tests.integration.harness import PostgresCluster, Stack, wait_for

def test_runs_until_killed(tmp_path):
    pg = PostgresCluster()
    pg.start()
    stack = Stack(f"sqlite:///{tmp_path / 'fy.db'}", tmp_path)
    stack.start(hosts=1, driver="sim:1:sim-g1")
    job = stack.submit(params={"command": "echo running; sleep 600"})
    wait_for(lambda: "running" in stack.logs_of(job), what="the rank to run")
    Path(os.environ["READY_FILE"]).write_text(json.dumps({"pg_dir": str(pg.dir)}))
    time.sleep(600)
"""


def test_a_killed_pytest_leaves_no_process_and_its_cluster_folder_is_swept(tmp_path: Path) -> None:
    (tmp_path / "test_child.py").write_text(CHILD_TEST)
    ready = tmp_path / "ready.json"
    env = {**os.environ, "READY_FILE": str(ready), "PYTHONPATH": str(ROOT)}
    env.pop("PYTEST_XDIST_WORKER", None)
    # As `make test` runs it: an xdist worker under the main pytest process.
    pytest = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "1", str(tmp_path / "test_child.py")],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=die_with_parent(signal.SIGKILL),
    )
    try:
        wait_for(
            lambda: ready.exists() or pytest.poll() is not None,
            timeout=120,
            interval=0.2,
            what="the child's stack and cluster",
        )
        assert pytest.poll() is None, f"the child pytest ended early ({pytest.returncode}): run {tmp_path} by hand"
        pg_dir = Path(json.loads(ready.read_text())["pg_dir"])
        started = psutil.Process(pytest.pid).children(recursive=True)
        names = " ".join(" ".join(p.cmdline()) for p in started)
        for what in ("fleetyard server", "fleetyard controller", "fleetyard agent", "forkserver", "postgres", "sleep"):
            assert what in names, f"{what} not among the processes the child started"
        os.kill(pytest.pid, signal.SIGKILL)
        pytest.wait(10)

        def survivors() -> list[str]:
            return [" ".join(p.cmdline()) for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]

        deadline = time.monotonic() + 60
        while survivors() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert survivors() == []
        assert pg_dir.exists()  # killed outright, nobody removed it: the next cluster's start does
        assert pg_dir in sweep_stale_clusters()
        assert not pg_dir.exists()
    finally:
        if pytest.poll() is None:
            os.killpg(pytest.pid, signal.SIGKILL)
            pytest.wait(10)
