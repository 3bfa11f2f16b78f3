"""A board's in-process ranks run in a rank host: a process of the slot's uid, one team at a time,
that sees the job's blobs as its own copies, stops when told and ends as the user's error when
the job's artifact takes it down."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.unit.models import mlp, save

from fleetyard.agent.rank_host import RankHost, RankOrder
from fleetyard.domain.job import Outcome
from fleetyard.workloads.base import WorkloadContext
from fleetyard.workloads.eval import EvalParams
from fleetyard.workloads.sandbox import FIRST_RANK_UID, Sandbox, private_root, python_unreadable

UID = FIRST_RANK_UID + 77

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or python_unreadable(UID) is not None, reason="needs root, and a Python the rank uid can run"
)


@pytest.fixture
def slot() -> Iterator[tuple[Sandbox, Path]]:
    # Where an agent keeps its ranks' dirs: a path the rank's uid can pass (pytest's tmp is 0700).
    root = private_root(private_root(Path(tempfile.gettempdir()), "fleetyard-ranks"), f"test-{os.getpid()}")
    sandbox = Sandbox("uid", UID)
    for d in ("work", "out"):
        (root / d).mkdir()
        sandbox.prepare(root / d)
    yield sandbox, root
    sandbox.reap()
    shutil.rmtree(root, ignore_errors=True)


def _order(root: Path, artifact: Path, metrics: Path, **params: object) -> RankOrder:
    sha = hashlib.sha256(artifact.read_bytes()).hexdigest()
    msha = hashlib.sha256(metrics.read_bytes()).hexdigest()
    p = EvalParams.model_validate(
        {"artifact": sha, "generated": {"n": 2}, "metrics_module": msha, "user_metrics": ["uid"], **params}
    )
    ctx = WorkloadContext(
        assignment_id=1, job_id=1, rank=0, world_size=1, board_id="b0", device="", params=p, time_limit_s=60,
        env={}, workdir=root / "work", output_dir=root / "out", log=print, should_stop=lambda: False,
        blobs={sha: artifact, msha: metrics},
    )  # fmt: skip
    return RankOrder.of("eval", ctx)


def test_a_rank_host_runs_as_the_slots_uid_per_team_stops_and_dies_as_the_users_error(
    tmp_path: Path, slot: tuple[Sandbox, Path]
) -> None:
    sandbox, root = slot
    cache = tmp_path / "cache"  # the agent's: its uid alone reads it
    cache.mkdir(mode=0o700)
    artifact = save(mlp(batch=1), cache / "model")
    metrics = cache / "metrics"
    metrics.write_text("import os\ndef uid(outputs, labels):\n    return float(os.getuid())\n")
    logs: list[str] = []
    never = lambda: False  # noqa: E731

    host = RankHost(sandbox, None, "compiler", root / "blobs")
    try:
        res = host.run(_order(root, artifact, metrics), logs.append, never)
        assert res.outcome is Outcome.SUCCESS, (res.message, logs)
        assert res.result["user"]["uid"]["value"] == float(UID)
        assert host.warm == [hashlib.sha256(artifact.read_bytes()).hexdigest()]
        # Its copies are its own; one a rank changed is made again before the next rank.
        [copy] = [p for p in (root / "blobs").iterdir() if p.read_bytes() == artifact.read_bytes()]
        assert copy.stat().st_uid == UID and copy.stat().st_mode & 0o777 == 0o400
        os.chmod(copy, 0o600)
        copy.write_bytes(b"swapped")
        assert host.run(_order(root, artifact, metrics), logs.append, never).outcome is Outcome.SUCCESS
        assert copy.read_bytes() == artifact.read_bytes()

        # A stop reaches the rank (a slow eval: the sim's latency per sample).
        stop = threading.Event()
        threading.Timer(1.0, stop.set).start()
        slow = _order(root, artifact, metrics, generated={"n": 10_000}, sim_latency_ms=50.0)
        slow.context["env"] = {
            "FLEETYARD_SIM_GENERATION": "sim-g1",
            "FLEETYARD_SIM_TIME_SCALE": "1",
            "FLEETYARD_DEVICE": "sim:0",
        }
        res = host.run(slow, logs.append, stop.is_set)
        assert res.outcome is Outcome.CANCELED, res

        # The job's artifact takes the process down: the user's error, and the next rank gets
        # a fresh process.
        pid = host._proc.pid
        assert pid is not None
        threading.Timer(1.0, os.kill, args=(pid, signal.SIGKILL)).start()
        res = host.run(slow, logs.append, never)
        assert res.outcome is Outcome.USER_ERROR and "signal SIGKILL" in (res.message or ""), res
        assert not host.alive and not (root / "blobs").exists()
    finally:
        host.close()


# The job's Python writes a pickle to its pipe to the (root) worker: unpickled there, it would
# run `touch` as root. The worker reads JSON only: the rank ends as the job's error.
PICKLE_BOMB = """
import os, pickle, struct

class Bomb:
    def __reduce__(self):
        return (os.system, ("touch {marker}",))

def uid(outputs, labels):
    payload = pickle.dumps(Bomb())
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{{fd}}").startswith("socket:"):
                os.write(int(fd), struct.pack("!i", len(payload)) + payload)
        except OSError:
            pass
    return 0.0
"""


def test_a_rank_host_that_sends_a_pickle_is_killed_and_nothing_is_unpickled(
    tmp_path: Path, slot: tuple[Sandbox, Path]
) -> None:
    sandbox, root = slot
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    marker = Path(tempfile.gettempdir()) / f"fleetyard-pwned-{os.getpid()}"
    artifact = save(mlp(batch=1), cache / "model")
    metrics = cache / "metrics"
    metrics.write_text(PICKLE_BOMB.format(marker=marker))
    host = RankHost(sandbox, None, "compiler", root / "blobs")
    try:
        res = host.run(_order(root, artifact, metrics), lambda _: None, lambda: False)
        assert res.outcome is Outcome.USER_ERROR and "malformed message" in (res.message or ""), res
        assert not host.alive
        assert not marker.exists()
    finally:
        host.close()
        marker.unlink(missing_ok=True)
