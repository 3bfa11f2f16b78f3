"""The CLI against real processes: `fleetyard run`, `jobs`, `boards`, and `fleetyard up`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from fleetyard.parent_death import die_with_parent
from tests.integration.harness import ROOT, Stack, free_port, running_stack, wait_for


@pytest.fixture
def sqlite_stack(tmp_path: Path) -> Iterator[Stack]:
    with running_stack(f"sqlite:///{tmp_path / 'fleetyard.db'}", tmp_path) as s:
        yield s.start(hosts=1, driver="sim:2:sim-g2")


def cli(stack: Stack, *args: str, token: str = "alice") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FLEETYARD_SERVER": stack.url, "FLEETYARD_TOKEN": stack.tokens[token], "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "fleetyard", *args], capture_output=True, text=True, env=env, timeout=60, cwd=ROOT
    )


def test_run_prints_logs_and_exits_with_the_jobs_result(sqlite_stack: Stack) -> None:
    ok = cli(sqlite_stack, "run", "--boards", "2", "--gen", "sim-g2", "--", "sh", "-c", "echo hi from $FLEETYARD_RANK")
    assert ok.returncode == 0, ok.stderr
    assert "hi from 0" in ok.stdout and "hi from 1" in ok.stdout
    bad = cli(sqlite_stack, "run", "--", "sh", "-c", "exit 5")
    assert bad.returncode == 5
    never = cli(sqlite_stack, "run", "--gen", "sim-g9", "--", "true")
    assert never.returncode == 1 and "unknown generation sim-g9" in never.stderr


def test_jobs_and_boards_commands(sqlite_stack: Stack, tmp_path: Path) -> None:
    spec = tmp_path / "job.yaml"
    spec.write_text("kind: command\nname: yaml-job\nparams:\n  command: echo from-yaml\n")
    sub = cli(sqlite_stack, "jobs", "submit", str(spec), "--wait")
    assert sub.returncode == 0, sub.stderr
    jobs = json.loads(cli(sqlite_stack, "jobs", "ls", "--json").stdout)
    [job] = [j for j in jobs if j["name"] == "yaml-job"]
    assert job["state"] == "succeeded"
    assert "from-yaml" in cli(sqlite_stack, "jobs", "logs", str(job["id"])).stdout
    boards = json.loads(cli(sqlite_stack, "boards", "ls", "--json").stdout)
    board = boards[0]["id"]
    assert cli(sqlite_stack, "boards", "drain", board, "--reason", "x").returncode == 1  # a user may not drain
    assert cli(sqlite_stack, "boards", "drain", board, "--reason", "fan", token="ops").returncode == 0
    hist = json.loads(cli(sqlite_stack, "boards", "history", board, "--json").stdout)
    assert hist[0]["to_state"] == "drained" and "fan" in hist[0]["reason"]
    missing = cli(sqlite_stack, "jobs", "show", "99999")
    assert missing.returncode == 1 and "no job 99999" in missing.stderr
    for what in ("boards", "jobs"):  # a filter value that names nothing is an error, not "none match"
        bogus = cli(sqlite_stack, what, "ls", "--state", "bogus")
        assert bogus.returncode == 2 and "'bogus' is not one of" in bogus.stderr, bogus.stderr


def _as_a_background_job() -> Callable[[], None]:
    """A ``preexec_fn``: the child starts as a background job of a shell without job control does,
    SIGINT ignored (which Python then leaves ignored), and, for the test, dies with the test."""
    with_parent = die_with_parent(signal.SIGKILL)  # made here: it names this process as the parent

    def preexec() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if with_parent is not None:
            with_parent()

    return preexec


def test_up_starts_a_fleet_the_cli_can_use_and_stops_cleanly(tmp_path: Path) -> None:
    """Ctrl-C (SIGINT) stops it, even started with SIGINT ignored, as CI runners and scripts do."""
    port = free_port()
    env = {
        **os.environ,
        "XDG_CONFIG_HOME": str(tmp_path / "cfg"),
        "FLEETYARD_SIM_TIME_SCALE": "0.05",
        "FLEETYARD_SIM_FLASH_SCALE": "0.1",  # a flash takes minutes: about a second here
    }
    env.pop("FLEETYARD_SERVER", None)
    env.pop("FLEETYARD_TOKEN", None)
    up = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fleetyard",
            "up",
            "--data-dir",
            str(tmp_path / "data"),
            "--hosts",
            "2",
            "--boards-per-host",
            "2",
            "--port",
            str(port),
            "--exit-after",
            "120",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        preexec_fn=_as_a_background_job(),
    )
    try:
        config = tmp_path / "cfg" / "fleetyard" / "config.json"
        wait_for(lambda: config.exists(), timeout=60, what="client config")
        token = json.loads(config.read_text())["token"]
        hosts_url = f"http://127.0.0.1:{port}/v1/hosts"
        auth = {"Authorization": f"Bearer {token}"}
        wait_for(
            lambda: {"host-01", "host-02"} <= {h["id"] for h in httpx.get(hosts_url, headers=auth, timeout=2).json()},
            timeout=60,
            what="hosts registered",
        )
        run = subprocess.run(
            [sys.executable, "-m", "fleetyard", "run", "--", "echo", "via-config"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 0 and "via-config" in run.stdout, run.stderr
        # One fleet per data dir: a second `up` there, or a server beside it, is refused, naming it.
        for second in (
            ["up", "--data-dir", str(tmp_path / "data"), "--port", str(free_port()), "--exit-after", "1"],
            ["server", "--data-dir", str(tmp_path / "data"), "--port", str(free_port())],
        ):
            refused = subprocess.run(
                [sys.executable, "-m", "fleetyard", *second], cwd=ROOT, env=env, capture_output=True, text=True,
                timeout=60,
            )  # fmt: skip
            assert refused.returncode == 1, refused.stdout + refused.stderr
            assert f"in use by fleetyard up (pid {up.pid}, port {port})" in " ".join(refused.stderr.split())
        os.killpg(up.pid, signal.SIGINT)
        # Three stop groups (agents, controller, server) of up to 10 s grace each: on a loaded machine
        # a slow stop is allowed, one that never ends is not.
        out, _ = up.communicate(timeout=90)
        assert up.returncode == 0, out
        assert not config.exists()  # the config as it was before the fleet: none
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()


def test_artifacts_push_ls_inspect(sqlite_stack: Stack, tmp_path: Path) -> None:
    from tests.unit.models import mlp, save

    model = save(mlp(batch="N"), tmp_path / "mlp.onnx")
    pushed = cli(sqlite_stack, "artifacts", "push", str(model), "--json")
    assert pushed.returncode == 0, pushed.stderr
    sha = json.loads(pushed.stdout)["sha256"]
    listed = json.loads(cli(sqlite_stack, "artifacts", "ls", "--json").stdout)
    assert [a["name"] for a in listed] == ["mlp.onnx"]
    shown = cli(sqlite_stack, "artifacts", "inspect", sha)
    assert shown.returncode == 0 and "float32" in shown.stdout and "[N, 4]" in shown.stdout
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x07not a model")
    refused = cli(sqlite_stack, "artifacts", "push", str(junk))
    assert refused.returncode == 1 and "unknown artifact format" in refused.stderr
    assert "blobs/" not in refused.stderr  # the server's own paths stay on the server


def test_run_an_artifact_locally_and_on_boards(sqlite_stack: Stack, tmp_path: Path) -> None:
    import numpy as np

    from tests.unit.models import mlp, mlp_reference, save

    model = save(mlp(batch="N"), tmp_path / "mlp.onnx")
    here = cli(sqlite_stack, "run", str(model), "--local", "--dim", "N=3", "--out", str(tmp_path / "local"))
    assert here.returncode == 0, here.stderr
    with np.load(tmp_path / "local" / "inputs.npz") as i, np.load(tmp_path / "local" / "outputs.npz") as o:
        np.testing.assert_allclose(o["y"], mlp_reference(i["x"]), rtol=1e-5, atol=1e-6)
    remote = cli(
        sqlite_stack, "run", str(model), "--boards", "2", "--dim", "N=3", "--out", str(tmp_path / "b"), "--json"
    )
    assert remote.returncode == 0, remote.stderr
    ranks = json.loads(remote.stdout)["ranks"]
    assert [r["outcome"] for r in ranks] == ["success", "success"]
    for r in ranks:
        with np.load(tmp_path / "b" / f"rank{r['rank']}-{r['board']}" / "outputs.npz") as o:
            assert o["y"].shape == (3, 3)
    # Artifact-only options make no sense for a command.
    wrong = cli(sqlite_stack, "run", "--dim", "N=3", "--", "true")
    assert wrong.returncode == 2
