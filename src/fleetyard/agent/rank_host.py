"""The process a board's in-process ranks run in, as the board slot's own uid.

A kind such as ``run``, ``validate`` or ``eval`` runs in Python, loading the job's artifact into a
runtime: a hostile ``.vmfb`` carries native code, a hostile ONNX file feeds a parser. In the
worker they would run with the agent's privileges (root, its token file, its blob cache, the
board session). Under the ``uid`` and ``bwrap`` sandboxes they run here instead: a process
started from the worker's forkserver that drops to the slot's uid before it reads any order,
with a scrubbed environment, in the slot's cgroup (or under an address-space limit), and that
sees the job's blobs only as copies the worker made into a directory of its own.

The process is kept between ranks so that a model stays loaded (warm) for the next job of the
same artifact, but only within one team: the next rank of another team gets a fresh process
(and fresh blob copies), so whatever a rank did to the process or its files reaches its own
team's later ranks, never another team's.

Messages over the pipe:

    worker -> host   ("run", RankOrder) | ("stop", assignment_id) | ("exit",)
    host -> worker   ("ready", pid) | ("log", assignment_id, text)
                     ("done", assignment_id, result: dict, warm: [sha256])
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import logging
import os
import queue
import resource
import shutil
import signal
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from fleetyard.domain.job import Outcome
from fleetyard.drivers.base import BoardFault
from fleetyard.workloads.base import Workload, WorkloadContext, WorkloadResult, workload_class
from fleetyard.workloads.rank_cgroup import RankCgroup
from fleetyard.workloads.sandbox import Sandbox, rank_env

__all__ = ["RankHost", "RankHostDied", "RankOrder", "confines_itself", "fleet_code"]

log = logging.getLogger("fleetyard.agent.rank_host")

# How long a stopped rank may take to return before its process is killed (the next rank of
# the team starts a fresh one).
STOP_GRACE_S = 5.0
# How long the host takes to start (fork from the forkserver, drop its uid).
START_TIMEOUT_S = 60.0
_FICLONE = 0x40049409  # ioctl: share the extents of a file (btrfs, xfs): a copy without copying
_PR_SET_DUMPABLE = 4


def confines_itself(cls: type[Workload]) -> bool:
    """Whether a kind starts its rank's processes in the sandbox itself (``command``): it runs in
    the worker, its processes under the slot's uid."""
    return bool(getattr(cls, "confines_itself", False))


def fleet_code(cls: type[Workload]) -> bool:
    """Whether a kind runs nothing of the job's, no file, no code (``health-check`` builds its
    golden model in code, ``lease`` waits): it runs in the worker. Every kind that is neither
    this nor :func:`confines_itself` runs in a :class:`RankHost`."""
    return bool(getattr(cls, "fleet_code", False))


@dataclass
class RankOrder:
    """One rank for the host: what its :class:`WorkloadContext` holds, less what is the worker's."""

    assignment_id: int
    job_id: int
    rank: int
    world_size: int
    board_id: str
    device: str
    kind: str
    params: BaseModel
    time_limit_s: float
    env: dict[str, str]
    workdir: str
    output_dir: str
    blobs: dict[str, str] = field(default_factory=dict)


class RankHostDied(Exception):
    def __init__(self, exitcode: int | None) -> None:
        super().__init__(f"rank process died (exit code {exitcode})")
        self.exitcode = exitcode


# ---- worker side -------------------------------------------------------------------------------


class RankHost:
    """The worker's handle on the host process of one team's ranks on one board."""

    def __init__(self, sandbox: Sandbox, cgroup: RankCgroup | None, team: str | None, blob_dir: Path) -> None:
        assert sandbox.uid is not None, "a rank host needs a uid of its own"
        self.sandbox, self.cgroup, self.team, self.blob_dir = sandbox, cgroup, team, blob_dir
        self.warm: list[str] = []
        self._copies: dict[str, tuple[int, int, int]] = {}  # sha256 -> (inode, size, mtime_ns) of our copy
        from fleetyard.agent.worker import get_context  # the worker's forkserver, modules preloaded

        ctx = get_context()
        self._conn, child = ctx.Pipe(duplex=True)
        memory = sandbox.limits.memory_bytes if cgroup is None else None
        self._proc = ctx.Process(  # type: ignore[attr-defined]
            target=host_main,
            # The worker's cores (a cpu board's session pins it to the board's): the forkserver has every core.
            args=(child, sandbox.uid, memory, sorted(os.sched_getaffinity(0))),
            name="fleetyard-rank-host",
            daemon=True,
        )
        self._proc.start()
        child.close()
        try:
            if cgroup is not None:
                cgroup.add(self._proc.pid)  # before it reads an order: nothing of a rank runs outside it
            shutil.rmtree(blob_dir, ignore_errors=True)
            blob_dir.mkdir(mode=0o700)
            sandbox.prepare(blob_dir)
            msg = self._recv(START_TIMEOUT_S)
            if msg is None or msg[0] != "ready":
                raise RankHostDied(self._proc.exitcode)
        except BaseException:
            self.kill()
            raise

    @property
    def alive(self) -> bool:
        return bool(self._proc.is_alive())

    def run(self, order: RankOrder, log_text: Any, should_stop: Any) -> WorkloadResult:
        """Run one rank to its end: its logs go to ``log_text``; a stop is passed on once
        ``should_stop()`` is true, and the process killed if the rank has not returned in
        STOP_GRACE_S. A process that dies (its memory limit, a crash in the runtime) ends the rank
        as the user's error: it ran the job's own artifact."""
        order.blobs = {sha: str(self._copy(sha, Path(p))) for sha, p in order.blobs.items()}
        ooms = self.cgroup.oom_kills() if self.cgroup is not None else 0
        stop_at: float | None = None
        try:
            self._send(("run", order))
            while True:
                msg = self._recv(0.1)
                if msg is None:
                    if stop_at is None and should_stop():
                        self._send(("stop", order.assignment_id))
                        stop_at = time.monotonic()
                    elif stop_at is not None and time.monotonic() - stop_at > STOP_GRACE_S:
                        self.kill()
                        return WorkloadResult(Outcome.CANCELED, message="stopped")
                    continue
                if msg[0] == "log" and msg[1] == order.assignment_id:
                    log_text(msg[2])
                elif msg[0] == "done" and msg[1] == order.assignment_id:
                    self.warm = list(msg[3])
                    return WorkloadResult(**msg[2])
        except RankHostDied as died:
            self.kill()
            if stop_at is not None:
                return WorkloadResult(Outcome.CANCELED, message="stopped")
            limit = self.sandbox.limits.memory_bytes
            if self.cgroup is not None and limit is not None and self.cgroup.oom_kills() > ooms:
                why = f"over its memory limit of {limit // 2**20} MiB: the kernel killed its process"
            else:
                code = died.exitcode
                how = f"signal {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"
                why = f"its process died ({how}) running the job's artifact"
                if self.cgroup is None and limit is not None:
                    why += f" (it may map at most {limit // 2**20} MiB)"
            return WorkloadResult(Outcome.USER_ERROR, message=why)

    def _copy(self, sha: str, src: Path) -> Path:
        """The host's own read-only copy of a blob of the agent's cache (which the rank's uid
        cannot read): a reflink where the filesystem shares extents, else a copy; made again if
        a rank changed it."""
        dest = self.blob_dir / sha
        with contextlib.suppress(FileNotFoundError):
            st = os.lstat(dest)
            if self._copies.get(sha) == (st.st_ino, st.st_size, st.st_mtime_ns):
                return dest
        with contextlib.suppress(FileNotFoundError):
            os.unlink(dest)
        with open(src, "rb") as fin, open(dest, "xb") as fout:
            try:
                fcntl.ioctl(fout.fileno(), _FICLONE, fin.fileno())
            except OSError:
                shutil.copyfileobj(fin, fout, 1 << 20)
        os.chmod(dest, 0o400)
        if self.sandbox.uid is not None:
            os.chown(dest, self.sandbox.uid, self.sandbox.uid)
        st = os.lstat(dest)
        self._copies[sha] = (st.st_ino, st.st_size, st.st_mtime_ns)
        return dest

    def _send(self, msg: tuple[Any, ...]) -> None:
        try:
            self._conn.send(msg)
        except (OSError, EOFError, ValueError):
            raise RankHostDied(self._reap()) from None

    def _recv(self, timeout: float) -> tuple[Any, ...] | None:
        try:
            if not self._conn.poll(timeout):
                return None
            msg: tuple[Any, ...] = self._conn.recv()
            return msg
        except (EOFError, OSError):
            raise RankHostDied(self._reap()) from None

    def _reap(self) -> int | None:
        self._proc.join(2.0)
        code: int | None = self._proc.exitcode
        return code

    def close(self) -> None:
        """Ask the process to exit; kill it (and every process of its uid) if it does not."""
        with contextlib.suppress(OSError, EOFError, ValueError):
            self._conn.send(("exit",))
        self._proc.join(2.0)
        self.kill()

    def kill(self) -> None:
        if self._proc.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._proc.pid, signal.SIGKILL)
            self._proc.join(5.0)
        self.sandbox.reap()  # what it started, as its uid
        with contextlib.suppress(OSError):
            self._conn.close()
        shutil.rmtree(self.blob_dir, ignore_errors=True)


# ---- host side ---------------------------------------------------------------------------------


def host_main(conn: Connection, uid: int, memory_bytes: int | None, cores: list[int]) -> None:
    """Entry point of a rank host: become the slot's uid, then run ranks until told to exit."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)  # the worker decides when a rank host ends
    os.sched_setaffinity(0, cores)
    if memory_bytes is not None:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    os.umask(0o077)
    # A uid change makes the process undumpable, its /proc files root's: they are its own again.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_DUMPABLE, 1, 0, 0, 0)
    env = rank_env(os.environ, {}, {}, Path("/nonexistent"))
    os.environ.clear()
    os.environ.update(env)
    _Host(conn).loop()


class _Host:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.send_lock = threading.Lock()
        self.orders: queue.SimpleQueue[RankOrder | None] = queue.SimpleQueue()
        self.current: int | None = None
        self.stopped: set[int] = set()
        self.workloads: dict[str, Workload] = {}

    def send(self, msg: tuple[Any, ...]) -> None:
        with self.send_lock:
            self.conn.send(msg)

    def loop(self) -> None:
        threading.Thread(target=self._reader, name="rank-host-reader", daemon=True).start()
        self.send(("ready", os.getpid()))
        while (order := self.orders.get()) is not None:
            result = self._run(order)
            from fleetyard.agent.worker import loaded_artifacts

            self.send(("done", order.assignment_id, asdict(result), loaded_artifacts()))

    def _reader(self) -> None:
        try:
            while True:
                msg = self.conn.recv()
                if msg[0] == "run":
                    self.orders.put(msg[1])
                elif msg[0] == "stop":
                    self.stopped.add(msg[1])
                elif msg[0] == "exit":
                    break
        except (EOFError, OSError):
            pass  # the worker is gone
        self.orders.put(None)
        threading.Timer(STOP_GRACE_S, os._exit, args=(0,)).start()

    def _run(self, order: RankOrder) -> WorkloadResult:
        a = order.assignment_id
        deadline = time.monotonic() + order.time_limit_s
        ctx = WorkloadContext(
            assignment_id=a,
            job_id=order.job_id,
            rank=order.rank,
            world_size=order.world_size,
            board_id=order.board_id,
            device=order.device,
            params=order.params,
            time_limit_s=order.time_limit_s,
            env=order.env,
            workdir=Path(order.workdir),
            output_dir=Path(order.output_dir),
            log=lambda text: self.send(("log", a, text)),
            should_stop=lambda: a in self.stopped or time.monotonic() >= deadline,
            blobs={sha: Path(p) for sha, p in order.blobs.items()},
        )
        os.environ["HOME"] = os.environ["TMPDIR"] = order.workdir
        try:
            if order.kind not in self.workloads:
                self.workloads[order.kind] = workload_class(order.kind)()
            return self.workloads[order.kind].run(ctx)
        except BoardFault as exc:
            return WorkloadResult(Outcome.INFRA_ERROR, message=f"board fault: {exc}")
        except Exception as exc:  # a bug in a workload plugin (or what an artifact did to it)
            self.send(("log", a, traceback.format_exc()))
            return WorkloadResult(Outcome.INFRA_ERROR, message=f"workload {order.kind!r} raised {exc!r}")
        finally:
            self.stopped.discard(a)
