"""The per-board worker process, and the agent's handle on it.

One long-lived worker per board builds the driver from its spec, opens a session on its board
once, and then runs one assignment at a time as the agent orders. Messages over the pipe:

    agent -> worker   ("blobs", assignment_id, kind, params) | ("run", RunOrder)
                      | ("stop", assignment_id, reason) | ("exit",)
    worker -> agent   ("ready", pid) | ("fatal", message) | ("blobs", assignment_id, [sha256])
                      ("started", assignment_id, at) | ("log", assignment_id, text)
                      ("done", assignment_id, result: dict, outputs: {name: sha256}, warm: [sha256])

Before a rank runs, the agent asks its worker which blobs the rank's kind declares (``blobs``): a
kind's code (onnx, numpy, a runtime) is imported in workers only, never in the agent, whose
heartbeat must not wait seconds for an import under load.

``warm`` lists the artifacts the worker's session cache holds loaded after the rank, most recently
used last: the agent reports it per board in its heartbeats (warm affinity).

Output files are moved to ``<state_dir>/outbox/<assignment_id>/<sha256>`` for the agent to
upload; the rank's workdir is removed as soon as the run ends.

Workers start from a *forkserver* with this module preloaded: the agent has HTTP threads, so a
plain fork of it is unsafe; ``spawn`` would re-import pydantic and the plugins on every (re)start,
which costs about half a second a worker, where a fork of the preloaded server costs milliseconds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import queue
import shutil
import signal
import stat
import sys
import threading
import time
import traceback
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from fleetyard.agent.rank_host import RankHost, RankHostDied, RankOrder, confines_itself, fleet_code
from fleetyard.domain.job import Cause, Outcome
from fleetyard.drivers.base import BoardFault, BoardSession, load_driver
from fleetyard.errors import FleetyardError
from fleetyard.policy.outcomes import Stop, board_in_question, mismatch_blamed, stopped
from fleetyard.protocol.agent import WARM_MAX, Assignment, FaultKind
from fleetyard.workloads.base import (
    Workload,
    WorkloadContext,
    WorkloadResult,
    required_blobs,
    validate_params,
    workload_class,
)
from fleetyard.workloads.rank_cgroup import RankCgroup
from fleetyard.workloads.sandbox import Sandbox

__all__ = [
    "CRASH_EXIT_CODE",
    "RunOrder",
    "WorkerDied",
    "WorkerHandle",
    "declared_blobs",
    "get_context",
    "loaded_artifacts",
    "outbox_dir",
    "worker_main",
]

log = logging.getLogger("fleetyard.agent.worker")

# Exit status of a worker whose (simulated) board crashed under it: the agent reads it as an infra
# error of the board, not as a bug of the worker.
CRASH_EXIT_CODE = 86
# The most text one log event carries (a longer write is sent in pieces).
LOG_PIECE_CHARS = 64 * 1024
# How long a worker whose agent went away may take to stop its workload before it exits anyway.
ORPHAN_GRACE_S = 5.0


@dataclass
class RunOrder:
    """What the agent sends for one rank: the assignment, the board's faults at dispatch, and
    the blobs its kind declared, already in the agent's cache (sha256 -> local path)."""

    assignment: Assignment
    faults: list[str] = field(default_factory=list)
    blobs: dict[str, str] = field(default_factory=dict)


class WorkerDied(Exception):
    """The worker process ended (its pipe closed)."""

    def __init__(self, exitcode: int | None) -> None:
        super().__init__(f"worker process died (exit code {exitcode})")
        self.exitcode = exitcode


def outbox_dir(state_dir: Path, assignment_id: int) -> Path:
    """Where a finished rank's output files wait, named by sha256, until the agent uploads them."""
    return Path(state_dir) / "outbox" / str(assignment_id)


def get_context() -> BaseContext:
    """The multiprocessing context workers start from (a forkserver with this module preloaded)."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["fleetyard.agent.worker", "fleetyard.workloads.command", "fleetyard.drivers.sim"])
    return ctx


# ---- agent side --------------------------------------------------------------------------------


class WorkerHandle:
    """The agent's end of one board's worker process."""

    def __init__(
        self,
        *,
        driver: str,
        host: str,
        serial: str,
        state_dir: Path,
        rank_dir: Path | None = None,
        sandbox: Sandbox | None = None,
    ) -> None:
        self.driver = driver
        self.host = host
        self.serial = serial
        self.state_dir = Path(state_dir)
        self.rank_dir = Path(rank_dir) if rank_dir is not None else self.state_dir / "work"
        self.sandbox = sandbox or Sandbox()
        self._proc: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self._send_lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.is_alive()

    @property
    def exitcode(self) -> int | None:
        return self._proc.exitcode if self._proc is not None else None

    def start(self) -> None:
        """Start the process; it answers ("ready", pid) once its board session is open."""
        ctx = get_context()
        parent, child = ctx.Pipe(duplex=True)
        proc = ctx.Process(  # type: ignore[attr-defined]
            target=worker_main,
            args=(child, self.driver, self.host, self.serial, str(self.state_dir), str(self.rank_dir), self.sandbox),
            name=f"fleetyard-worker-{self.serial}",
            daemon=True,
        )
        proc.start()
        child.close()
        self._proc, self._conn = proc, parent

    def send(self, msg: tuple[Any, ...]) -> None:
        """Send a message; raises WorkerDied if the worker is gone."""
        if self._conn is None:
            raise WorkerDied(None)
        try:
            with self._send_lock:
                self._conn.send(msg)
        except (OSError, EOFError, ValueError):
            raise WorkerDied(self._reap())

    def ask_blobs(self, assignment: Assignment) -> None:
        """Ask which blobs ``assignment``'s kind declares; answered ("blobs", id, [sha256])."""
        self.send(("blobs", assignment.id, assignment.kind, assignment.params))

    def run(self, assignment: Assignment, faults: Iterable[str] = (), blobs: dict[str, str] | None = None) -> None:
        """Order a run of ``assignment`` with the board's ``faults`` as of now and its fetched ``blobs``."""
        self.send(("run", RunOrder(assignment, sorted(faults), dict(blobs or {}))))

    def stop(self, assignment_id: int, why: Stop) -> None:
        """Ask the running workload to stop, for ``why`` (a cause and what happened)."""
        with contextlib.suppress(WorkerDied):
            self.send(("stop", assignment_id, str(why[0]), why[1]))

    def recv(self, timeout: float | None) -> tuple[Any, ...] | None:
        """The next message, or None after ``timeout`` seconds; raises WorkerDied at EOF."""
        if self._conn is None:
            raise WorkerDied(None)
        try:
            if timeout is not None and not self._conn.poll(timeout):
                return None
            msg: tuple[Any, ...] = self._conn.recv()
            return msg
        except (EOFError, OSError):
            raise WorkerDied(self._reap())

    def _reap(self, timeout: float = 2.0) -> int | None:
        if self._proc is None:
            return None
        self._proc.join(timeout)
        return self._proc.exitcode

    def kill(self) -> None:
        """Kill the worker and everything it started (a workload runs in its own session)."""
        if self._proc is None:
            return
        pid = self._proc.pid
        if pid is not None and self._proc.is_alive():
            _kill_tree(pid)
        self._proc.join(5)
        self._close_conn()

    def close(self, timeout: float = 2.0) -> None:
        """Ask the worker to exit; kill it if it has not within ``timeout``."""
        if self._proc is None:
            return
        with contextlib.suppress(WorkerDied):
            self.send(("exit",))
        self._proc.join(timeout)
        if self._proc.is_alive():
            self.kill()
        self._close_conn()

    def _close_conn(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.close()


def _kill_tree(pid: int) -> None:
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [*root.children(recursive=True), root]
    except psutil.Error:
        procs = []
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.kill()
    if not procs:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# ---- worker side -------------------------------------------------------------------------------


def worker_main(
    conn: Connection, driver_spec: str, host: str, serial: str, state_dir: str, rank_dir: str, sandbox: Sandbox
) -> None:
    """Entry point of a worker process: open the board, then run orders until told to exit."""
    # Ctrl-C and a SIGTERM to the agent's process group reach the workers too; the agent decides
    # when they end (they also end when its pipe closes). A no-op handler rather than SIG_IGN,
    # because an ignored signal stays ignored in the commands a worker starts.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _ignore)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    # A daemonic process may not start processes: a worker starts its rank hosts (daemonic
    # themselves, they end with it).
    multiprocessing.current_process().daemon = False
    try:
        driver = load_driver(driver_spec, host=host, state_dir=Path(state_dir))
        session = driver.open_session(serial)
    except Exception as exc:  # anything: the agent must hear why, not just see an exit
        with contextlib.suppress(OSError):
            conn.send(("fatal", f"cannot open board {serial}: {exc}"))
        return
    root = Path(rank_dir) / serial
    killed = _kill_orphans(root / "out") + sandbox.reap()
    if killed:
        log.warning("board %s: killed %d processes left by an earlier worker", serial, killed)
    worker = _Worker(conn, session, serial, Path(state_dir), root, sandbox)
    conn.send(("ready", os.getpid()))
    try:
        worker.loop()
    finally:
        worker.close_host()
        session.close()
        if worker.cgroup is not None:
            worker.cgroup.close()


def _ignore(signum: int, frame: object) -> None:
    pass


def _kill_orphans(output_dir: Path) -> int:
    """Kill processes a previous worker of this board started (e.g. before the agent was
    SIGKILLed: commands run in their own sessions and outlive it). They carry the output folder
    of this agent's board, which names both (the board's id alone does not: another agent on this
    machine, say a test's, may serve a board of the same serial)."""
    import psutil

    want = str(output_dir)
    killed = 0
    for p in psutil.process_iter():
        if p.pid == os.getpid():
            continue
        try:
            if p.environ().get("FLEETYARD_OUTPUT_DIR") == want:
                p.kill()
                killed += 1
        except psutil.Error:
            continue
    return killed


class _Worker:
    def __init__(
        self, conn: Connection, session: BoardSession, serial: str, state_dir: Path, root: Path, sandbox: Sandbox
    ) -> None:
        self.conn = conn
        self.session = session
        self.serial = serial
        self.state_dir = state_dir
        self.sandbox = sandbox
        # A board that is some of the host's cores (a cpu board's session has them) holds its
        # ranks to them: a cpuset, where the host offers one.
        cores: tuple[int, ...] | None = getattr(session, "cores", None)
        limits = dataclasses.replace(sandbox.limits, cores=tuple(cores) if cores else None)
        self.cgroup = RankCgroup.make(f"fleetyard-u{sandbox.uid}", limits) if sandbox.uid is not None else None
        # A killed predecessor may have left a rank's files behind.
        shutil.rmtree(root, ignore_errors=True)
        # One workdir and one output dir, emptied after every rank: a mkdir and rmdir of fresh
        # ones per rank cost more than running `true` does. Both the rank's own (0700, its uid).
        self.root = root
        self.host: RankHost | None = None  # where in-process kinds run under a sandbox uid
        self.workdir, self.output_dir = root / "work", root / "out"
        root.mkdir(parents=True)
        root.chmod(0o711)  # its rank's uid passes through to its own dirs (whatever the umask)
        self.workdir.mkdir()
        self.output_dir.mkdir()
        sandbox.prepare(self.workdir, self.output_dir)
        self.orders: queue.SimpleQueue[RunOrder | None] = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.current: int | None = None
        self.stop_event = threading.Event()
        self.stop_reason: Stop | None = None
        self.early_stops: dict[int, Stop] = {}  # a stop that overtook its run order
        self.send_lock = threading.Lock()
        self.workloads: dict[str, tuple[type[Workload], Workload]] = {}

    def send(self, msg: tuple[Any, ...]) -> None:
        with self.send_lock:
            self.conn.send(msg)

    def loop(self) -> None:
        threading.Thread(target=self._reader, name="worker-reader", daemon=True).start()
        while True:
            order = self.orders.get()
            if order is None:
                return
            a = order.assignment
            result, outputs = self.run(order)
            # A command rank's end kills every process of the slot's uid, an idle rank host too.
            warm = (self.host.warm if self.host.alive else []) if self.host is not None else loaded_artifacts()
            self.send(("done", a.id, asdict(result), outputs, warm))

    def _reader(self) -> None:
        try:
            while True:
                msg = self.conn.recv()
                if msg[0] == "blobs":
                    # Asked between ranks (the main thread idles): answered here, at once.
                    self.send(("blobs", msg[1], declared_blobs(msg[2], msg[3])))
                elif msg[0] == "run":
                    self.orders.put(msg[1])
                elif msg[0] == "stop":
                    self._stop(msg[1], (Cause(msg[2]), str(msg[3])))
                elif msg[0] == "exit":
                    self.orders.put(None)
                    return
        except (EOFError, OSError):
            pass  # the agent is gone: its end of the pipe closed under a read or a write
        except Exception:
            log.exception("board %s: the pipe to the agent broke", self.serial)
        # Whatever ended the reading, nobody can order this worker any more: stop the workload
        # and leave, forcibly if it hangs (a worker must never outlive its agent).
        self._stop(None, (Cause.AGENT_STOPPED, ""))
        self.orders.put(None)
        threading.Timer(ORPHAN_GRACE_S, os._exit, args=(0,)).start()

    def _stop(self, assignment_id: int | None, reason: Stop) -> None:
        with self.lock:
            if assignment_id is None or assignment_id == self.current:
                if self.stop_reason is None:
                    self.stop_reason = reason
                self.stop_event.set()
            else:
                if len(self.early_stops) > 1000:
                    self.early_stops.clear()  # stops that raced their run's end; never used
                self.early_stops[assignment_id] = reason

    def _workload(self, kind: str) -> tuple[type[Workload], Workload]:
        # entry_points() costs about a millisecond: look each kind up once per worker.
        if kind not in self.workloads:
            cls = workload_class(kind)
            self.workloads[kind] = (cls, cls())
        return self.workloads[kind]

    def run(self, order: RunOrder) -> tuple[WorkloadResult, dict[str, str]]:
        """Run one rank; never raises."""
        a = order.assignment
        with self.lock:
            self.current = a.id
            self.stop_reason = self.early_stops.pop(a.id, None)
            if self.stop_reason is None:
                self.stop_event.clear()
            else:
                self.stop_event.set()
        self.send(("started", a.id, time.time()))
        outputs: dict[str, str] = {}
        try:
            result = self._run(order)
            # Whatever the outcome: a failed health check leaves the wrong outputs as its evidence.
            outputs = self._collect_outputs(a.id, self.output_dir)
        except Exception as exc:  # a bug in a workload plugin: say what, keep the worker
            self._log(a.id, traceback.format_exc())
            result = WorkloadResult(
                Outcome.INFRA_ERROR, message=f"workload {a.kind!r} raised {exc!r}", cause=Cause.AGENT_ERROR
            )
        finally:
            _empty(self.workdir)
            _empty(self.output_dir)
            self.sandbox.prepare(self.workdir, self.output_dir)  # a rank may have opened up its own
            with self.lock:
                self.current = None
        return result, outputs

    def _log(self, assignment_id: int, text: str) -> None:
        # In pieces: one log event stays far under the server's cap on an agent's request body,
        # whatever a workload writes at once.
        for start in range(0, len(text), LOG_PIECE_CHARS):
            self.send(("log", assignment_id, text[start : start + LOG_PIECE_CHARS]))

    def _run(self, order: RunOrder) -> WorkloadResult:
        a = order.assignment
        faults = set(order.faults)
        try:
            cls, workload = self._workload(a.kind)
            try:
                params: BaseModel = cls.params_model.model_validate(a.params)
            except ValidationError:
                params = validate_params(a.kind, a.params)  # raises with the field-naming message
        except FleetyardError as exc:
            return WorkloadResult(Outcome.CONFIG_ERROR, message=exc.message)

        if FaultKind.BUS_DROP.value in faults:
            return WorkloadResult(Outcome.INFRA_ERROR, message="board fell off the bus", cause=Cause.BOARD_FAULT)
        if FaultKind.CRASH.value in faults:
            # The board took the process down with it: no result, no goodbye.
            os._exit(CRASH_EXIT_CODE)
        if FaultKind.HANG.value in faults:
            while True:  # a hung board never answers; only the agent's kill ends this
                time.sleep(3600)
        try:
            self.session.check()
        except BoardFault as exc:
            return _board_fault(exc)

        workdir, output_dir = self.workdir, self.output_dir
        device_env = self.session.env()
        env = {
            **a.env,
            "FLEETYARD_BOARD_ID": a.board_id,
            "FLEETYARD_RANK": str(a.rank),
            "FLEETYARD_WORLD_SIZE": str(a.world_size),
            "FLEETYARD_JOB_ID": str(a.job_id),
            "FLEETYARD_ATTEMPT_ID": str(a.attempt_id),
            "FLEETYARD_ASSIGNMENT_ID": str(a.id),
            "FLEETYARD_OUTPUT_DIR": str(output_dir),
            **device_env,
        }
        deadline = time.monotonic() + a.time_limit_s
        timed_out = False

        def should_stop() -> bool:
            nonlocal timed_out
            if self.stop_event.is_set():
                return True
            if time.monotonic() >= deadline:
                timed_out = True
                return True
            return False

        ctx = WorkloadContext(
            assignment_id=a.id,
            job_id=a.job_id,
            rank=a.rank,
            world_size=a.world_size,
            board_id=a.board_id,
            device=device_env.get("FLEETYARD_DEVICE", ""),
            params=params,
            time_limit_s=a.time_limit_s,
            env=env,
            workdir=workdir,
            output_dir=output_dir,
            log=lambda text: self._log(a.id, text),
            should_stop=should_stop,
            blobs={sha: Path(p) for sha, p in order.blobs.items()},
            sandbox=self.sandbox,
            cgroup=self.cgroup,
        )
        try:
            if self.sandbox.uid is None or not self.sandbox.in_process or fleet_code(cls):
                result = workload.run(ctx)
            elif confines_itself(cls):
                # One team's processes at a time under the slot's uid: a command rank must find
                # no other team's loaded models to reach.
                if self.host is not None and self.host.team != a.team:
                    self.close_host()
                result = workload.run(ctx)
            else:
                result = self._run_in_host(a, ctx)
        except BoardFault as exc:
            return _board_fault(exc)
        if result.outcome is Outcome.SUCCESS:
            return result
        why = self.stop_reason or ((Cause.TIMEOUT, "") if timed_out else None)
        if why is not None:
            # A rank that ended because it was told to takes the class of why it was told.
            outcome, message = stopped(*why, time_limit_s=a.time_limit_s)
            return WorkloadResult(outcome, result.exit_code, message, result.result, cause=why[0])
        if board_in_question(a.kind, result.outcome, result.result):
            return self._judge_mismatch(ctx, result)
        return result

    def _judge_mismatch(self, ctx: WorkloadContext, result: WorkloadResult) -> WorkloadResult:
        """A validation that found wrong numbers: the board's own L1 check, here and now, says
        whose they are. Its verdict goes in the result (``board_check``) either way."""
        from fleetyard.workloads.health_check import golden_check  # onnx and numpy: not in the agent's import

        try:
            failed = golden_check(ctx.env)
        except (BoardFault, FleetyardError) as exc:
            failed = f"the golden model would not run: {exc}"
        verdict = {"tier": "L1", "passed": failed is None, "detail": failed}
        if failed is None:
            return dataclasses.replace(result, result={**result.result, "board_check": verdict})
        outcome, cause, message = mismatch_blamed(result.message, f"the board then failed its L1 check ({failed})")
        return WorkloadResult(outcome, result.exit_code, message, {**result.result, "board_check": verdict}, cause)

    def _run_in_host(self, a: Assignment, ctx: WorkloadContext) -> WorkloadResult:
        """Run an in-process kind's rank in the rank host of its team (started if need be). The
        host ran the job's code: an infra_error it reports stands only if the board's own check
        then fails; else it is the job's error, and the board stays in service."""
        if self.host is not None and (self.host.team != a.team or not self.host.alive):
            self.close_host()
        if self.host is None:
            try:
                self.host = RankHost(self.sandbox, self.cgroup, a.team, self.root / "blobs")
            except (RankHostDied, OSError) as exc:
                return WorkloadResult(
                    Outcome.INFRA_ERROR, message=f"cannot start the rank's process: {exc}", cause=Cause.AGENT_ERROR
                )
        result = self.host.run(RankOrder.of(a.kind, ctx), ctx.log, ctx.should_stop)
        if result.outcome is not Outcome.INFRA_ERROR:
            return result
        try:
            self.session.check()
        except BoardFault as exc:
            return _board_fault(exc)
        return dataclasses.replace(
            result, outcome=Outcome.USER_ERROR, message=f"{result.message} (the board checks healthy)"
        )

    def close_host(self) -> None:
        if self.host is not None:
            self.host.close()
            self.host = None

    def _collect_outputs(self, assignment_id: int, output_dir: Path) -> dict[str, str]:
        if not _has_entries(output_dir):
            return {}
        # Regular files only, and no link followed: the rank made these, and a link to a file of
        # the agent's (its token) must not come back as an output, read with the worker's rights.
        files = [
            Path(top) / name
            for top, _dirs, names in os.walk(output_dir, followlinks=False)
            for name in names
            if stat.S_ISREG(os.lstat(Path(top) / name).st_mode)
        ]
        dest = outbox_dir(self.state_dir, assignment_id)
        dest.mkdir(parents=True, exist_ok=True)
        outputs: dict[str, str] = {}
        for path in sorted(files):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            except OSError:
                continue  # swapped for a link since the walk
            with open(fd, "rb") as f:
                sha = hashlib.file_digest(f, "sha256").hexdigest()
            os.replace(path, dest / sha)
            outputs[path.relative_to(output_dir).as_posix()] = sha
        return outputs


def declared_blobs(kind: str, params: dict[str, Any]) -> list[str]:
    """The blobs a rank of ``kind`` needs; none for a kind or params that are wrong (its run says why)."""
    try:
        return required_blobs(kind, params)
    except Exception:  # an unknown kind, bad params, a plugin's bug: its run reports it
        return []


def loaded_artifacts() -> list[str]:
    """sha256 of the artifacts this process's session cache holds, most recently used last, at
    most ``WARM_MAX``; an artifact loaded with several settings counts once, where last used."""
    if "fleetyard.runtimes.cache" not in sys.modules:
        return []  # no workload of this worker ever loaded a model (and the import is not free)
    from fleetyard.runtimes.cache import default_cache

    latest: dict[str, None] = {}
    for key in reversed(default_cache().keys()):
        latest.setdefault(key.sha256)
    return list(latest)[:WARM_MAX][::-1]


def _has_entries(path: Path) -> bool:
    try:
        with os.scandir(path) as it:
            return next(it, None) is not None
    except FileNotFoundError:
        return False


def _empty(path: Path) -> None:
    """Remove what is in a directory, keeping the directory (re-made if a workload removed it)."""
    try:
        with os.scandir(path) as it:
            entries = list(it)
    except FileNotFoundError:
        path.mkdir(parents=True, exist_ok=True)
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)


def _board_fault(exc: BoardFault) -> WorkloadResult:
    return WorkloadResult(Outcome.INFRA_ERROR, message=f"board fault: {exc}", cause=Cause.BOARD_FAULT)
