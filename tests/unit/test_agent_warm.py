"""Warm affinity, the agent's half: a worker says which artifacts it holds loaded after each rank,
its board's runner keeps the latest list (emptied when the worker restarts), and the agent's
heartbeat reports it per board."""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.unit import models
from tests.unit.test_worker import HOST, SPEC, Events, assignment, collect

from fleetyard.agent.blobs import BlobCache
from fleetyard.agent.daemon import Agent
from fleetyard.agent.link import ServerLink
from fleetyard.agent.runner import BoardRunner, RunnerConfig
from fleetyard.agent.worker import WorkerHandle
from fleetyard.domain.job import Outcome
from fleetyard.drivers.sim import SimDriver


@pytest.fixture(autouse=True)
def _fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETYARD_SIM_TIME_SCALE", "0")


@pytest.fixture
def driver(tmp_path: Path) -> SimDriver:
    return SimDriver(SPEC, host=HOST, state_dir=tmp_path)


@pytest.fixture
def artifacts(tmp_path: Path) -> dict[str, Path]:
    """Two different ONNX models by sha256, in the layout of the agent's blob cache."""
    out: dict[str, Path] = {}
    for seed in (0, 1):
        data = models.mlp(batch="batch", seed=seed).SerializeToString()
        sha = hashlib.sha256(data).hexdigest()
        path = tmp_path / "blobs" / sha[:2] / sha
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        out[sha] = path
    return out


def run_params(sha: str) -> dict[str, Any]:
    return {"artifact": sha, "dims": {"batch": 2}}


def test_a_worker_reports_what_it_holds_loaded_most_recent_last(
    tmp_path: Path, driver: SimDriver, artifacts: dict[str, Path]
) -> None:
    first, second = artifacts
    handle = WorkerHandle(driver=SPEC, host=HOST, serial=driver.discover()[0].serial, state_dir=tmp_path)
    handle.start()
    try:
        msg = handle.recv(timeout=20)
        assert msg is not None and msg[0] == "ready", msg

        def run(kind: str, params: dict[str, Any]) -> list[str]:
            handle.run(assignment(handle.serial, params, kind=kind), (), {s: str(p) for s, p in artifacts.items()})
            done = collect(handle, timeout=30)[-1]
            assert done[2]["outcome"] == "success", done
            return list(done[4])

        assert run("command", {"command": "true"}) == []
        assert run("run", run_params(first)) == [first]
        assert run("run", run_params(second)) == [first, second]
        assert run("run", run_params(first)) == [second, first]  # a hit moves it to the end
        assert run("command", {"command": "true"}) == [second, first]  # models stay across jobs
    finally:
        handle.close(timeout=2)


@pytest.fixture
def runner(tmp_path: Path, driver: SimDriver, artifacts: dict[str, Path]) -> Iterator[tuple[BoardRunner, Events]]:
    """A runner whose host cache already holds the ``artifacts``."""
    events = Events()
    cache = BlobCache(tmp_path / "blobs", lambda: ServerLink("http://127.0.0.1:9", "t"), retry_for_s=0.3)
    config = RunnerConfig(driver_spec=SPEC, host=HOST, state_dir=tmp_path, stop_grace_s=0.3, blobs=cache)
    r = BoardRunner(driver.discover()[0].serial, driver, config, events)
    r.start()
    yield r, events
    r.close()
    r.join(5)


def test_the_runner_keeps_the_latest_list_and_forgets_it_with_its_worker(
    runner: tuple[BoardRunner, Events], driver: SimDriver, artifacts: dict[str, Path]
) -> None:
    r, events = runner
    sha = next(iter(artifacts))
    assert r.warm == []
    a = assignment(r.serial, run_params(sha), kind="run")
    r.submit(a)
    assert events.finished(a.id, timeout=30).outcome is Outcome.SUCCESS
    assert r.warm == [sha]
    # A crash takes the worker, and its loaded models, with it; a fresh worker holds none.
    driver.inject(r.serial, "crash")
    b = assignment(r.serial, {"command": "true"})
    r.submit(b)
    assert events.finished(b.id).outcome is Outcome.INFRA_ERROR
    assert r.warm == []
    c = assignment(r.serial, {"command": "true"})
    r.submit(c)
    assert events.finished(c.id).outcome is Outcome.SUCCESS and r.warm == []


def test_the_heartbeat_reports_each_boards_warm_list(tmp_path: Path, artifacts: dict[str, Path]) -> None:
    state = tmp_path / "agent"
    shutil.copytree(tmp_path / "blobs", state / "blobs")  # the host already has the artifact
    agent = Agent(server="http://127.0.0.1:9", token="t", host=HOST, driver=SPEC, state_dir=state)
    agent._add_boards(agent.driver.discover())  # the boards' runners, without the server threads
    try:
        busy, idle = agent.serials
        sha = next(iter(artifacts))
        assert all(b.warm == [] for b in agent.reports())
        agent.runners[busy].submit(assignment(busy, run_params(sha), kind="run"))
        deadline = time.monotonic() + 30
        while agent.runners[busy].warm == [] and time.monotonic() < deadline:
            time.sleep(0.05)
        reports = {b.id: b for b in agent.reports()}
        assert reports[busy].warm == [sha] and reports[idle].warm == []
        # The host's cache: the artifact, used last; the older blobs before it.
        assert agent.heartbeat([]).cached[-1] == sha and agent.blobs.recent(1) == [sha] and agent.blobs.recent(0) == []
        assert sorted(agent.heartbeat([]).cached) == sorted(p.name for p in (state / "blobs").glob("*/*"))
    finally:
        for r in agent.runners.values():
            r.close()
        for r in agent.runners.values():
            r.join(5)
