"""The per-board worker process, driven over its pipe as the agent drives it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleetyard.agent.worker import CRASH_EXIT_CODE, WorkerDied, WorkerHandle, outbox_dir
from fleetyard.drivers.sim import SimDriver
from fleetyard.protocol.agent import Assignment

SPEC = "sim:2"
HOST = "test-host"


@pytest.fixture(autouse=True)
def _fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETYARD_SIM_TIME_SCALE", "0")


@pytest.fixture
def driver(tmp_path: Path) -> SimDriver:
    return SimDriver(SPEC, host=HOST, state_dir=tmp_path)


@pytest.fixture
def worker(tmp_path: Path, driver: SimDriver) -> Iterator[WorkerHandle]:
    serial = driver.discover()[0].serial
    handle = WorkerHandle(driver=SPEC, host=HOST, serial=serial, state_dir=tmp_path)
    handle.start()
    msg = handle.recv(timeout=20)
    assert msg is not None and msg[0] == "ready", msg
    yield handle
    handle.close(timeout=2)


_ids = iter(range(1, 10_000))


def assignment(serial: str, params: dict[str, Any], **kw: Any) -> Assignment:
    aid = next(_ids)
    fields: dict[str, Any] = {
        "id": aid,
        "attempt_id": 100 + aid,
        "job_id": 1000 + aid,
        "rank": 0,
        "world_size": 1,
        "board_id": serial,
        "kind": "command",
        "params": params,
        "time_limit_s": 60,
        **kw,
    }
    return Assignment(**fields)


def collect(handle: WorkerHandle, timeout: float = 10) -> list[tuple[Any, ...]]:
    """Messages up to and including the next "done"."""
    out: list[tuple[Any, ...]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = handle.recv(timeout=0.2)
        if msg is None:
            continue
        out.append(msg)
        if msg[0] == "done":
            return out
    raise AssertionError(f"no done message within {timeout}s: {out}")


def logs(msgs: list[tuple[Any, ...]]) -> str:
    return "".join(m[2] for m in msgs if m[0] == "log")


def test_runs_an_assignment_end_to_end(worker: WorkerHandle, tmp_path: Path) -> None:
    a = assignment(
        worker.serial,
        {
            "command": 'echo "$FLEETYARD_BOARD_ID $FLEETYARD_RANK/$FLEETYARD_WORLD_SIZE $FLEETYARD_DEVICE '
            '$FLEETYARD_JOB_ID $FLEETYARD_ATTEMPT_ID $MINE"; echo result > "$FLEETYARD_OUTPUT_DIR/r.txt"; '
            'mkdir "$FLEETYARD_OUTPUT_DIR/sub"; echo x > "$FLEETYARD_OUTPUT_DIR/sub/x.txt"; pwd'
        },
        env={"MINE": "mine"},
        rank=1,
        world_size=2,
    )
    worker.run(a, set())
    msgs = collect(worker)
    assert msgs[0][:2] == ("started", a.id)
    kind, aid, result, outputs = msgs[-1]
    assert (kind, aid) == ("done", a.id)
    assert result["outcome"] == "success" and result["exit_code"] == 0
    first, cwd = logs(msgs).splitlines()
    assert first == f"{worker.serial} 1/2 sim:0 {a.job_id} {a.attempt_id} mine"
    assert set(outputs) == {"r.txt", "sub/x.txt"}
    assert (outbox_dir(tmp_path, a.id) / outputs["r.txt"]).read_text() == "result\n"
    assert Path(cwd).is_dir() and not any(Path(cwd).iterdir())  # emptied after the run


def test_failure_and_bad_params(worker: WorkerHandle) -> None:
    worker.run(assignment(worker.serial, {"command": "exit 7"}))
    result = collect(worker)[-1][2]
    assert result["outcome"] == "user_error" and result["exit_code"] == 7
    worker.run(assignment(worker.serial, {"command": "true", "nope": 1}))
    result = collect(worker)[-1][2]
    assert result["outcome"] == "config_error" and "params.nope" in result["message"]
    worker.run(assignment(worker.serial, {}, kind="no-such-kind"))
    result = collect(worker)[-1][2]
    assert result["outcome"] == "config_error" and "no-such-kind" in result["message"]


def test_time_limit(worker: WorkerHandle) -> None:
    t0 = time.monotonic()
    worker.run(assignment(worker.serial, {"command": "sleep 30"}, time_limit_s=0.3))
    result = collect(worker)[-1][2]
    assert result["outcome"] == "timeout" and "0.3" in result["message"]
    assert time.monotonic() - t0 < 3


def test_cancel(worker: WorkerHandle) -> None:
    a = assignment(worker.serial, {"command": "echo go; sleep 30"})
    worker.run(a)
    assert worker.recv(timeout=10)[0] == "started"  # type: ignore[index]
    assert worker.recv(timeout=10) == ("log", a.id, "go\n")
    worker.stop(a.id, "cancel")
    result = collect(worker)[-1][2]
    assert result["outcome"] == "canceled"


def test_stop_that_overtakes_its_order(worker: WorkerHandle) -> None:
    a = assignment(worker.serial, {"command": "sleep 30"})
    worker.stop(a.id, "cancel")
    worker.run(a)
    assert collect(worker)[-1][2]["outcome"] == "canceled"


def test_board_faults(worker: WorkerHandle, driver: SimDriver) -> None:
    worker.run(assignment(worker.serial, {"command": "true"}), {"bus_drop"})
    result = collect(worker)[-1][2]
    assert result["outcome"] == "infra_error" and "bus" in result["message"]
    # A fault the worker sees only through the shared board state (the session's check).
    driver.inject(worker.serial, "bus_drop")
    worker.run(assignment(worker.serial, {"command": "true"}))
    assert collect(worker)[-1][2]["outcome"] == "infra_error"
    driver.clear(worker.serial)
    driver.inject(worker.serial, "silent_corruption")
    worker.run(assignment(worker.serial, {"command": 'echo "$FLEETYARD_SIM_FAULTS"'}))
    msgs = collect(worker)
    assert logs(msgs) == "silent_corruption\n" and msgs[-1][2]["outcome"] == "success"


def test_crash_kills_the_worker(worker: WorkerHandle) -> None:
    a = assignment(worker.serial, {"command": "true"})
    worker.run(a, {"crash"})
    assert worker.recv(timeout=10) == ("started", a.id, pytest.approx(time.time(), abs=30))
    with pytest.raises(WorkerDied) as info:
        collect(worker)
    assert info.value.exitcode == CRASH_EXIT_CODE
    # The agent restarts it and the board works again.
    worker.start()
    assert worker.recv(timeout=20)[0] == "ready"  # type: ignore[index]
    worker.run(assignment(worker.serial, {"command": "true"}))
    assert collect(worker)[-1][2]["outcome"] == "success"


def test_hang_blocks_until_killed(worker: WorkerHandle) -> None:
    a = assignment(worker.serial, {"command": "true"})
    worker.run(a, {"hang"})
    assert worker.recv(timeout=10)[0] == "started"  # type: ignore[index]
    worker.stop(a.id, "cancel")
    assert worker.recv(timeout=0.5) is None  # a hung board ignores the stop
    assert worker.alive
    worker.kill()
    assert not worker.alive
    with pytest.raises(WorkerDied):
        worker.recv(timeout=1)


def test_kill_takes_the_workload_with_it(worker: WorkerHandle, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    worker.run(assignment(worker.serial, {"command": f"echo $$ > {pidfile}; echo up; exec sleep 30"}))
    msgs = [worker.recv(timeout=10), worker.recv(timeout=10)]
    assert [m[0] for m in msgs if m] == ["started", "log"]
    pid = int(pidfile.read_text())
    worker.kill()
    time.sleep(0.05)
    stat = Path(f"/proc/{pid}/stat")
    assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"


def test_noop_overhead(worker: WorkerHandle) -> None:
    """Per-assignment round trip through the worker for `true` (printed with -s)."""
    n = 100
    orders = [assignment(worker.serial, {"command": "true"}) for _ in range(n + 5)]
    for a in orders[:5]:
        worker.run(a)
        collect(worker)
    t0 = time.perf_counter()
    for a in orders[5:]:
        worker.run(a)
        assert collect(worker)[-1][2]["outcome"] == "success"
    per = (time.perf_counter() - t0) / n
    print(f"worker round trip for `true`: {per * 1000:.2f} ms")
    assert per < 0.05
