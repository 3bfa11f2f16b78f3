"""The per-board worker process, driven over its pipe as the agent drives it, and the agent's runner."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleetyard.agent.daemon import IdSet
from fleetyard.agent.outbox import Outbox
from fleetyard.agent.runner import BoardRunner, RunnerConfig
from fleetyard.agent.worker import CRASH_EXIT_CODE, WorkerDied, WorkerHandle, outbox_dir
from fleetyard.domain.job import Cause, Outcome
from fleetyard.drivers.sim import SimDriver
from fleetyard.protocol.agent import Assignment, Event, EventBatch, EventType

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
    kind, aid, result, outputs, warm = msgs[-1]
    assert (kind, aid, warm) == ("done", a.id, [])  # a command loads no model
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
    assert result["cause"] == Cause.TIMEOUT
    assert time.monotonic() - t0 < 15  # not its `sleep 30`


def test_cancel(worker: WorkerHandle) -> None:
    a = assignment(worker.serial, {"command": "echo go; sleep 30"})
    worker.run(a)
    assert worker.recv(timeout=10)[0] == "started"  # type: ignore[index]
    assert worker.recv(timeout=10) == ("log", a.id, "go\n")
    worker.stop(a.id, (Cause.CANCELED, ""))
    result = collect(worker)[-1][2]
    assert result["outcome"] == "canceled" and result["cause"] == Cause.CANCELED
    assert result["exit_code"] == 128 + 15  # SIGTERM works in commands (not ignored as in the worker)


def test_stop_that_overtakes_its_order(worker: WorkerHandle) -> None:
    a = assignment(worker.serial, {"command": "sleep 30"})
    worker.stop(a.id, (Cause.CANCELED, ""))
    worker.run(a)
    assert collect(worker)[-1][2]["outcome"] == "canceled"


def test_board_faults(worker: WorkerHandle, driver: SimDriver) -> None:
    worker.run(assignment(worker.serial, {"command": "true"}), {"bus_drop"})
    result = collect(worker)[-1][2]
    assert result["outcome"] == "infra_error" and "bus" in result["message"]
    assert result["cause"] == Cause.BOARD_FAULT
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
    worker.stop(a.id, (Cause.CANCELED, ""))
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


def test_a_new_worker_kills_what_an_earlier_one_left(tmp_path: Path, driver: SimDriver) -> None:
    """What this agent's earlier worker of the board started dies; a process of a board of the
    same serial served by another agent on this machine (another state folder) does not."""
    import os
    import subprocess

    serial = driver.discover()[1].serial

    def sleeper(state_dir: Path) -> subprocess.Popen[bytes]:
        out = state_dir / "work" / serial / "out"  # the FLEETYARD_OUTPUT_DIR a worker gives a rank
        return subprocess.Popen(
            ["sleep", "30"], env={**os.environ, "FLEETYARD_BOARD_ID": serial, "FLEETYARD_OUTPUT_DIR": str(out)}
        )

    orphan, other = sleeper(tmp_path), sleeper(tmp_path / "another-agent")
    handle = WorkerHandle(driver=SPEC, host=HOST, serial=serial, state_dir=tmp_path)
    handle.start()
    try:
        assert handle.recv(timeout=20)[0] == "ready"  # type: ignore[index]
        assert orphan.wait(5) == -9
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()
        handle.close()


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


# ---- the agent's side: a board runner driving a real worker ------------------------------------


class Events:
    """Collects what a runner emits, as the agent's outbox would."""

    def __init__(self) -> None:
        self.items: list[tuple[Event, dict[str, Path] | None]] = []
        self.cond = threading.Condition()

    def __call__(self, event: Event, uploads: dict[str, Path] | None, cleanup: Path | None) -> None:
        with self.cond:
            self.items.append((event, uploads))
            self.cond.notify_all()

    def finished(self, aid: int, timeout: float = 15) -> Event:
        with self.cond:
            ok = self.cond.wait_for(
                lambda: any(e.assignment_id == aid and e.type is EventType.FINISHED for e, _ in self.items),
                timeout=timeout,
            )
            assert ok, f"no finished event for {aid}: {self.items}"
            return next(e for e, _ in self.items if e.assignment_id == aid and e.type is EventType.FINISHED)

    def of(self, aid: int) -> list[Event]:
        with self.cond:
            return [e for e, _ in self.items if e.assignment_id == aid]


@pytest.fixture
def runner(tmp_path: Path, driver: SimDriver) -> Iterator[tuple[BoardRunner, Events]]:
    events = Events()
    config = RunnerConfig(driver_spec=SPEC, host=HOST, state_dir=tmp_path, stop_grace_s=0.3)
    r = BoardRunner(driver.discover()[0].serial, driver, config, events)
    r.start()
    yield r, events
    r.close()
    r.join(5)


def test_runner_sequences_events(runner: tuple[BoardRunner, Events], tmp_path: Path) -> None:
    r, events = runner
    a = assignment(r.serial, {"command": 'echo one; echo data > "$FLEETYARD_OUTPUT_DIR/o.txt"'})
    r.submit(a)
    done = events.finished(a.id)
    evs = events.of(a.id)
    assert [(e.seq, e.type) for e in evs] == [(0, EventType.STARTED), (1, EventType.LOG), (2, EventType.FINISHED)]
    assert evs[1].data == "one\n"
    assert done.outcome is Outcome.SUCCESS and done.exit_code == 0 and done.board_ok
    sha = done.outputs["o.txt"]
    uploads = next(u for e, u in events.items if e is done)
    assert uploads is not None and uploads[sha].read_text() == "data\n"


def test_runner_kills_a_hung_worker_after_the_grace_period(
    runner: tuple[BoardRunner, Events], driver: SimDriver
) -> None:
    r, events = runner
    driver.inject(r.serial, "hang")
    a = assignment(r.serial, {"command": "true"})
    r.submit(a)
    with events.cond:
        events.cond.wait_for(lambda: bool(events.of(a.id)), timeout=10)
    t0 = time.monotonic()
    assert r.stop(a.id, Cause.CANCELED)
    done = events.finished(a.id)
    assert 0.25 < time.monotonic() - t0 < 15  # the stop grace, then the kill
    assert done.outcome is Outcome.CANCELED and "killed" in (done.message or "")
    assert not done.board_ok  # still hung
    driver.reset(r.serial)
    b = assignment(r.serial, {"command": "true"})
    r.submit(b)  # on a fresh worker
    assert events.finished(b.id).outcome is Outcome.SUCCESS


def test_runner_backstops_the_time_limit(runner: tuple[BoardRunner, Events], driver: SimDriver) -> None:
    r, events = runner
    driver.inject(r.serial, "hang")
    a = assignment(r.serial, {"command": "true"}, time_limit_s=0.2)
    r.submit(a)
    done = events.finished(a.id)
    assert done.outcome is Outcome.TIMEOUT and done.cause is Cause.TIMEOUT


def test_runner_crash_is_an_infra_error_once(runner: tuple[BoardRunner, Events], driver: SimDriver) -> None:
    r, events = runner
    driver.inject(r.serial, "crash")
    a, b = assignment(r.serial, {"command": "true"}), assignment(r.serial, {"command": "true"})
    r.submit(a)
    r.submit(b)
    first = events.finished(a.id)
    assert first.outcome is Outcome.INFRA_ERROR and "crash" in (first.message or "")
    assert first.cause is Cause.BOARD_FAULT  # a check it ended counts as the board failing it
    assert events.finished(b.id).outcome is Outcome.SUCCESS
    assert driver.active_faults(r.serial) == set()


def test_runner_stop_of_a_queued_assignment(runner: tuple[BoardRunner, Events]) -> None:
    r, events = runner
    a = assignment(r.serial, {"command": "sleep 30"})
    b = assignment(r.serial, {"command": "true"})
    r.submit(a)
    r.submit(b)
    assert set(r.live_ids()) == {a.id, b.id}
    assert r.stop(b.id, Cause.CANCELED)
    assert [(e.seq, e.type, e.outcome, e.cause) for e in events.of(b.id)] == [
        (0, EventType.FINISHED, Outcome.CANCELED, Cause.CANCELED)
    ]
    assert r.stop(a.id, Cause.CANCELED)
    assert events.finished(a.id).outcome is Outcome.CANCELED
    assert not r.stop(12345, Cause.CANCELED)


# ---- agent pieces: the seen-ids set and the outbox -----------------------------------------------


def test_id_set_remembers_every_id() -> None:
    import random

    seen, ref = IdSet(), set()
    rng = random.Random(1)
    for i in [500, 499, 10, 501, 100_000, 7, *(rng.randrange(0, 200_000) for _ in range(3000))]:
        seen.add(i)
        ref.add(i)
    assert all((i in seen) == (i in ref) for i in range(210_000))


def test_outbox_keeps_events_until_done() -> None:
    box, stop = Outbox(), threading.Event()

    def ev(aid: int, seq: int, kind: EventType) -> Event:
        return Event(assignment_id=aid, seq=seq, type=kind, at=0.0)

    box.add(ev(1, 0, EventType.STARTED))
    box.add(ev(1, 1, EventType.FINISHED))
    box.add(ev(2, 0, EventType.FINISHED))
    assert box.unacked_finished() == {1, 2}
    first = box.take(stop)
    assert [(i.event.assignment_id, i.event.seq) for i in first] == [(1, 0), (1, 1), (2, 0)]
    # Not acknowledged: the same events come again, and new ones after them.
    box.add(ev(3, 0, EventType.STARTED))
    again = box.take(stop, linger_s=0.0)
    assert again[:3] == first and len(again) == 4
    box.done(first)
    assert box.unacked_finished() == set() and len(box) == 1
    box.done(box.take(stop, linger_s=0.0))
    stop.set()
    assert box.take(stop) == [] and box.wait_empty(0.1)


def test_an_outbox_batch_stays_under_the_servers_cap_on_an_agents_body() -> None:
    from fleetyard.agent.outbox import MAX_BATCH_BYTES

    box, stop = Outbox(), threading.Event()
    text = "é" * (64 * 1024)  # one log event's most: 128 KiB of UTF-8
    for seq in range(100):
        box.add(Event(assignment_id=1, seq=seq, type=EventType.LOG, at=0.0, data=text))
    sizes = []
    while True:
        batch = box.take(stop, linger_s=0)
        if not batch:
            break
        body = EventBatch(session="s", events=[i.event for i in batch]).model_dump_json().encode()
        sizes.append(len(body))
        box.done(batch)
        if not box._items:
            break
    assert len(sizes) >= 2 and max(sizes) <= MAX_BATCH_BYTES < 16 * 1024 * 1024


def test_a_huge_log_write_goes_out_in_pieces(tmp_path: Path) -> None:
    from fleetyard.agent import worker as w

    sent: list[tuple[object, ...]] = []
    fake = object.__new__(w._Worker)
    fake.send = sent.append  # type: ignore[method-assign]
    fake._log(7, "x" * (3 * w.LOG_PIECE_CHARS + 5))
    assert [len(m[2]) for m in sent] == [w.LOG_PIECE_CHARS] * 3 + [5]  # type: ignore[arg-type]
    assert all(m[:2] == ("log", 7) for m in sent)
