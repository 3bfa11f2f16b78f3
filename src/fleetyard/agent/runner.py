"""One board's runner in the agent: feeds its worker process, turns what it says into events.

A thread per board owns the board's :class:`~fleetyard.agent.worker.WorkerHandle`: it sends run
orders one at a time, reads the worker's messages, numbers them into events, and enforces the
agent's side of stops: a worker that does not finish within the grace period after a stop (or
after its time limit) is killed with everything it started, and started again.

A board op (a reset, a flash) *holds* the board: :meth:`BoardRunner.hold` ends its ranks,
:meth:`~BoardRunner.wait_idle` waits for the running one to go, :meth:`~BoardRunner.stop_worker`
lets go of the device, and :meth:`~BoardRunner.release` starts a fresh worker and lets ranks run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleetyard.agent.blobs import BlobCache, BlobError, BlobNotFound
from fleetyard.agent.worker import CRASH_EXIT_CODE, WorkerDied, WorkerHandle, outbox_dir
from fleetyard.domain.job import Cause, Outcome
from fleetyard.drivers.base import BoardDriver, FaultInjectable
from fleetyard.policy.outcomes import Stop, stopped
from fleetyard.protocol.agent import Assignment, Event, EventType, FaultKind
from fleetyard.workloads.rank_cgroup import RankLimits
from fleetyard.workloads.sandbox import Backend, Sandbox

__all__ = ["BoardRunner", "RunnerConfig"]

log = logging.getLogger("fleetyard.agent")

# How often a runner looks at its clocks while a rank runs (stop grace, time-limit backstop).
TICK_S = 0.25


@dataclass(frozen=True)
class RunnerConfig:
    driver_spec: str
    host: str
    state_dir: Path
    stop_grace_s: float = 5.0  # after a stop (or the time limit), how long before the agent kills
    blobs: BlobCache | None = None  # where the blobs a job's kind declares are fetched to
    sandbox: Backend = "none"  # how ranks are confined (see fleetyard.workloads.sandbox)
    rank_uid_base: int = 0  # under the uid sandbox, the uid of slot 0's ranks
    rank_dir: Path | None = None  # where ranks' private dirs are made (default: <state_dir>/work)
    rank_limits: RankLimits | None = None  # what one board's ranks may use (uid sandbox only)
    rank_hosts: bool = True  # in-process kinds run as the slot's uid (see fleetyard.agent.rank_host)


@dataclass
class _Run:
    assignment: Assignment
    seq: int = 0
    started: bool = False
    stop_reason: Stop | None = None
    kill_at: float | None = None  # monotonic; set by a stop
    backstop_at: float = 0.0  # monotonic; the time limit plus grace

    def next_seq(self) -> int:
        s = self.seq
        self.seq += 1
        return s


Emit = Callable[[Event, dict[str, Path] | None, Path | None], None]


class BoardRunner:
    """Runs one board's assignments, one at a time, in its worker process."""

    def __init__(self, serial: str, driver: BoardDriver, config: RunnerConfig, emit: Emit, slot: int = 0) -> None:
        self.serial = serial
        self.driver = driver
        self.config = config
        self._emit = emit
        self.handle = WorkerHandle(
            driver=config.driver_spec,
            host=config.host,
            serial=serial,
            state_dir=config.state_dir,
            rank_dir=config.rank_dir,
            sandbox=Sandbox.for_slot(
                config.sandbox, config.rank_uid_base, slot, config.rank_limits, in_process=config.rank_hosts
            ),
        )
        self._queue: deque[Assignment] = deque()
        self._current: _Run | None = None
        self._cond = threading.Condition()
        self._closing = False
        self._held = 0  # board ops under way: no rank starts while held
        self._restarts = 0
        # What the worker said it holds loaded after its last rank; a new process holds nothing.
        # Replaced whole, never mutated: the heartbeat thread reads it without the lock.
        self._warm: list[str] = []
        self._thread = threading.Thread(target=self._loop, name=f"board-{serial}", daemon=True)

    # -- called from other threads

    def start(self) -> None:
        self.handle.start()
        self._thread.start()

    def submit(self, a: Assignment) -> None:
        with self._cond:
            if self._closing:
                self._end_unstarted(a, (Cause.AGENT_STOPPED, ""))
                return
            if self._current is not None:
                log.warning("board %s busy with %d; queueing %d", self.serial, self._current.assignment.id, a.id)
            self._queue.append(a)
            self._cond.notify()

    @property
    def warm(self) -> list[str]:
        """sha256 of the artifacts this board's worker holds loaded, most recently used last."""
        return list(self._warm)

    def live_ids(self) -> list[int]:
        with self._cond:
            ids = [a.id for a in self._queue]
            if self._current is not None:
                ids.append(self._current.assignment.id)
            return ids

    def stop(self, assignment_id: int, cause: Cause, detail: str = "", *, hard: bool = False) -> bool:
        """Stop an assignment (queued or running) for ``cause`` (``detail``: what happened);
        False if it is not here."""
        reason: Stop = (cause, detail)
        with self._cond:
            for a in self._queue:
                if a.id == assignment_id:
                    self._queue.remove(a)
                    self._end_unstarted(a, reason)
                    return True
            run = self._current
            if run is None or run.assignment.id != assignment_id:
                return False
            if run.stop_reason is None:
                run.stop_reason = reason
            now = time.monotonic()
            kill_at = now if hard else now + self.config.stop_grace_s
            run.kill_at = kill_at if run.kill_at is None else min(run.kill_at, kill_at)
        if not hard:
            self.handle.stop(assignment_id, reason)
        return True

    def hold(self, reason: str) -> None:
        """Take the board for an op: no rank starts until :meth:`release`; its queued and running
        ranks end now, as infra errors for ``reason`` (the op would pull the board from under them)."""
        with self._cond:
            self._held += 1
            ids = [a.id for a in self._queue]
            if self._current is not None:
                ids.append(self._current.assignment.id)
        for aid in ids:
            self.stop(aid, Cause.BOARD_GONE, reason, hard=True)

    def wait_idle(self, timeout_s: float) -> bool:
        """While held: wait until no rank runs; False if one still does after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._current is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def stop_worker(self) -> None:
        """While held and idle: end the worker process, which holds the device open."""
        self.handle.kill()
        self._warm = []

    def release(self) -> None:
        """End a hold: a fresh worker opens the board as the op left it, and ranks run again."""
        with self._cond:
            # Idle and held, the board's thread leaves the handle alone: it is ours to restart.
            restart = self._held == 1 and not self._closing and self._current is None and not self.handle.alive
        if restart:
            self._restarts = 0
            self.handle.start()
        with self._cond:
            self._held -= 1
            self._cond.notify_all()

    def close(self) -> None:
        """Stop taking work: queued ranks end now, a running one is asked to stop."""
        with self._cond:
            self._closing = True
            while self._queue:
                self._end_unstarted(self._queue.popleft(), (Cause.AGENT_STOPPED, ""))
            current = self._current
            self._cond.notify_all()
        if current is not None:
            self.stop(current.assignment.id, Cause.AGENT_STOPPED)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        self.handle.close(timeout=2.0)

    # -- the board's thread

    def _end_unstarted(self, a: Assignment, reason: Stop) -> None:
        outcome, message = stopped(*reason, time_limit_s=a.time_limit_s)
        event = Event(
            assignment_id=a.id, seq=0, type=EventType.FINISHED, at=time.time(), outcome=outcome, cause=reason[0],
            message=message,
        )  # fmt: skip
        self._emit(event, None, None)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while (not self._queue or self._held) and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                a = self._queue.popleft()
                run = self._current = _Run(a)
            try:
                self._execute(run)
            except Exception:  # never lose a board's thread: end the rank, restart the worker
                log.exception("board %s: running assignment %d failed", self.serial, a.id)
                self._finish(
                    run, Outcome.INFRA_ERROR, message="agent error while running the rank", cause=Cause.AGENT_ERROR
                )
                self._restart_worker()
            finally:
                with self._cond:
                    self._current = None
                    self._cond.notify_all()  # a hold may be waiting for the board to go idle

    def _faults_for_run(self) -> list[str]:
        if not isinstance(self.driver, FaultInjectable):
            return []
        faults = self.driver.active_faults(self.serial)
        if FaultKind.CRASH.value in faults:
            # One-shot: this run triggers it, so it is consumed now.
            self.driver.clear(self.serial, FaultKind.CRASH.value)
        return sorted(faults)

    def _set_busy(self, busy: bool) -> None:
        set_busy: Any = getattr(self.driver, "set_busy", None)
        if set_busy is not None:
            set_busy(self.serial, busy)

    def _execute(self, run: _Run) -> None:
        """Fetch the blobs the rank needs (on this board's thread: other boards go on), then run it."""
        needed = self._declared_blobs(run)
        if needed is None:
            return  # the run ended while its worker was asked
        if not needed:
            self._dispatch(run, {})
            return
        cache = self.config.blobs
        if cache is None:
            self._finish(
                run,
                Outcome.INFRA_ERROR,
                message="the job needs blobs and this agent has no blob cache",
                cause=Cause.AGENT_ERROR,
            )
            return
        try:
            with cache.held(needed, should_stop=lambda: run.stop_reason is not None) as paths:
                if run.stop_reason is not None:
                    self._finish_stopped(run)
                    return
                self._dispatch(run, {sha: str(p) for sha, p in paths.items()})
        except BlobError as exc:
            if run.stop_reason is not None:
                self._finish_stopped(run)
            elif isinstance(exc, BlobNotFound):
                # The spec names a blob nobody uploaded: the job's fault, not the board's.
                self._finish(run, Outcome.CONFIG_ERROR, message=exc.message)
            else:
                self._finish(run, Outcome.INFRA_ERROR, message=exc.message, cause=Cause.AGENT_ERROR)

    def _declared_blobs(self, run: _Run) -> list[str] | None:
        """The blobs the rank's kind declares, as its worker answers (a kind's code is imported
        there, never here); None if the run ended meanwhile (its worker died, or it was stopped)."""
        a = run.assignment
        if not self.handle.alive:
            self._restart_worker()
        try:
            self.handle.ask_blobs(a)
            while True:
                msg = self.handle.recv(TICK_S)
                if msg is None:
                    if run.stop_reason is not None:
                        self._finish_stopped(run)
                        return None
                    continue
                if msg[0] == "blobs" and msg[1] == a.id:
                    return [str(sha) for sha in msg[2]]
                if self._on_message(run, msg):
                    return None
        except WorkerDied as died:
            self._worker_died(run, died)
            return None

    def _finish_stopped(self, run: _Run) -> None:
        assert run.stop_reason is not None
        outcome, message = stopped(*run.stop_reason, time_limit_s=run.assignment.time_limit_s)
        self._finish(run, outcome, message=message, cause=run.stop_reason[0])

    def _dispatch(self, run: _Run, blobs: dict[str, str]) -> None:
        a = run.assignment
        run.backstop_at = time.monotonic() + a.time_limit_s + self.config.stop_grace_s
        if not self.handle.alive:
            self._restart_worker()
        faults = self._faults_for_run()
        self._set_busy(True)
        try:
            try:
                self.handle.run(a, faults, blobs)
            except WorkerDied as died:
                self._worker_died(run, died)
                return
            while True:
                try:
                    msg = self.handle.recv(TICK_S)
                except WorkerDied as died:
                    self._worker_died(run, died)
                    return
                if msg is not None and self._on_message(run, msg):
                    return
                now = time.monotonic()
                with self._cond:
                    kill = run.kill_at is not None and now >= run.kill_at
                    if not kill and now >= run.backstop_at:
                        kill = True
                        run.stop_reason = run.stop_reason or (Cause.TIMEOUT, "")
                    reason = run.stop_reason
                if kill:
                    assert reason is not None
                    log.warning("board %s: killing worker of assignment %d (%s)", self.serial, a.id, reason)
                    self.handle.kill()
                    self._warm = []
                    outcome, message = stopped(*reason, time_limit_s=a.time_limit_s)
                    self._finish(run, outcome, message=f"{message} (worker killed)", cause=reason[0])
                    self._restart_worker()
                    return
        finally:
            self._set_busy(False)

    def _on_message(self, run: _Run, msg: tuple[Any, ...]) -> bool:
        """Handle one worker message; True once the run is over."""
        kind = msg[0]
        if kind == "ready":
            self._restarts = 0
            return False
        if kind == "fatal":
            self._warm = []
            self._finish(run, Outcome.INFRA_ERROR, message=str(msg[1]), cause=Cause.BOARD_FAULT)
            self.handle.kill()
            return True
        if msg[1] != run.assignment.id:
            log.warning("board %s: message for %s while running %d", self.serial, msg[1], run.assignment.id)
            return False
        if kind == "started":
            self._started(run, float(msg[2]))
        elif kind == "log":
            self._emit(
                Event(assignment_id=msg[1], seq=run.next_seq(), type=EventType.LOG, at=time.time(), data=msg[2]),
                None,
                None,
            )
        elif kind == "done":
            result: dict[str, Any] = msg[2]
            outputs: dict[str, str] = msg[3]
            if len(msg) > 4:
                self._warm = [str(sha) for sha in msg[4]]
            self._finish(
                run,
                Outcome(result["outcome"]),
                exit_code=result.get("exit_code"),
                message=result.get("message"),
                result=result.get("result") or {},
                outputs=outputs,
                cause=Cause(result.get("cause") or Cause.WORKLOAD),
            )
            return True
        return False

    def _started(self, run: _Run, at: float) -> None:
        if not run.started:
            run.started = True
            self._emit(
                Event(assignment_id=run.assignment.id, seq=run.next_seq(), type=EventType.STARTED, at=at), None, None
            )

    def _worker_died(self, run: _Run, died: WorkerDied) -> None:
        self._warm = []  # before the rank's end is told: whoever hears it sees the list empty
        code = died.exitcode
        cause = Cause.BOARD_FAULT  # a worker holds nothing but the board: its death is the board's
        if run.stop_reason is not None:
            cause = run.stop_reason[0]
            outcome, message = stopped(*run.stop_reason, time_limit_s=run.assignment.time_limit_s)
        elif code == CRASH_EXIT_CODE:
            outcome, message = Outcome.INFRA_ERROR, "the board crashed: its worker process died"
        else:
            outcome, message = Outcome.INFRA_ERROR, f"worker process died (exit code {code})"
        log.warning("board %s: assignment %d: %s", self.serial, run.assignment.id, message)
        self._finish(run, outcome, message=message, cause=cause)
        self._restart_worker()

    def _restart_worker(self) -> None:
        self.handle.kill()
        self._warm = []  # its models went with it
        with self._cond:
            if self._closing or self._held:
                return  # closing: for good; held: release() starts it once the op is done
        if self._restarts:
            # A worker that keeps dying at start (the board will not open): do not spin.
            time.sleep(min(5.0, 0.2 * 2 ** (self._restarts - 1)))
        self._restarts += 1
        self.handle.start()

    def _finish(
        self,
        run: _Run,
        outcome: Outcome,
        *,
        exit_code: int | None = None,
        message: str | None = None,
        result: dict[str, Any] | None = None,
        outputs: dict[str, str] | None = None,
        cause: Cause = Cause.WORKLOAD,
    ) -> None:
        a = run.assignment
        board_ok, probe_reason = True, None
        try:
            probe = self.driver.probe(self.serial)
            board_ok, probe_reason = probe.ok, (None if probe.ok else (probe.reason or "")[:500] or None)
        except Exception as exc:
            log.warning("board %s: probe failed: %s", self.serial, exc)
            board_ok, probe_reason = False, f"the probe raised: {exc}"[:500]
        uploads: dict[str, Path] | None = None
        cleanup: Path | None = None
        if outputs:
            cleanup = outbox_dir(self.config.state_dir, a.id)
            uploads = {sha: cleanup / sha for sha in set(outputs.values())}
        event = Event(
            assignment_id=a.id,
            seq=run.next_seq(),
            type=EventType.FINISHED,
            at=time.time(),
            exit_code=exit_code,
            outcome=outcome,
            cause=cause,
            message=message,
            board_ok=board_ok,
            probe_reason=probe_reason,
            result=result or {},
            outputs=outputs or {},
        )
        self._emit(event, uploads, cleanup)
        log.debug("board %s: assignment %d %s", self.serial, a.id, outcome)
