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

    worker -> host   ("run", RankOrder) | ("stop", assignment_id) | ("exit",)     (pickled)
    host -> worker   {"type": "ready"} | {"type": "log", ...} | {"type": "done", ...}  (JSON)

The host runs the job's code: what it sends is untrusted. It is JSON of a bounded size, parsed
with :data:`HostMessage` (never unpickled: a pickle from the host would run code as root in the
worker), and an outcome it reports is the job's word, not the board's: the worker believes an
``infra_error`` only if the board's own check then fails (see ``_Worker._run_in_host``).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
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
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from fleetyard.domain.job import Outcome
from fleetyard.drivers.base import BoardFault
from fleetyard.protocol.agent import WARM_MAX
from fleetyard.workloads.base import Workload, WorkloadContext, WorkloadResult, workload_class
from fleetyard.workloads.rank_cgroup import RankCgroup
from fleetyard.workloads.sandbox import Sandbox, rank_env

__all__ = ["HostMessage", "RankHost", "RankHostDied", "RankOrder", "confines_itself", "fleet_code"]

log = logging.getLogger("fleetyard.agent.rank_host")

# How long a stopped rank may take to return before its process is killed (the next rank of
# the team starts a fresh one).
STOP_GRACE_S = 5.0
# How long the host takes to start (fork from the forkserver, drop its uid).
START_TIMEOUT_S = 60.0
_FICLONE = 0x40049409  # ioctl: share the extents of a file (btrfs, xfs): a copy without copying
_PR_SET_DUMPABLE = 4
# The longest message a host may send (a rank's result; its log goes in pieces of LOG_PIECE_CHARS).
MAX_MESSAGE_BYTES = 16 * 2**20
LOG_PIECE_CHARS = 64 * 1024
# What a rank may report of itself. Timeout and preemption are the agent's to decide; an
# infra_error is checked against the board before it is believed.
REPORTABLE = frozenset(
    {Outcome.SUCCESS, Outcome.USER_ERROR, Outcome.CONFIG_ERROR, Outcome.CANCELED, Outcome.INFRA_ERROR}
)
# What of a WorkloadContext is the worker's alone, never sent to a host.
_WORKER_ONLY = frozenset({"log", "should_stop", "sandbox", "cgroup"})


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
    """One rank for the host: its kind and its :class:`WorkloadContext`, less what is the worker's."""

    kind: str
    context: dict[str, Any]

    @classmethod
    def of(cls, kind: str, ctx: WorkloadContext) -> RankOrder:
        fields = (f.name for f in dataclasses.fields(ctx) if f.name not in _WORKER_ONLY)
        return cls(kind, {name: getattr(ctx, name) for name in fields})

    @property
    def assignment_id(self) -> int:
        return int(self.context["assignment_id"])


class _Ready(BaseModel):
    type: Literal["ready"]


class _Log(BaseModel):
    type: Literal["log"]
    assignment_id: int
    text: str = Field(max_length=LOG_PIECE_CHARS)


class _Done(BaseModel):
    type: Literal["done"]
    assignment_id: int
    outcome: Outcome
    exit_code: int | None = Field(None, ge=-(2**31), le=2**31)
    message: str | None = Field(None, max_length=64 * 1024)
    result: dict[str, Any] = Field(default_factory=dict)
    warm: list[Annotated[str, Field(max_length=64)]] = Field(default_factory=list, max_length=WARM_MAX)


HostMessage: TypeAdapter[_Ready | _Log | _Done] = TypeAdapter(
    Annotated[_Ready | _Log | _Done, Field(discriminator="type")]
)


class RankHostDied(Exception):
    """The host is gone, or broke the protocol (``why``) and was killed."""

    def __init__(self, exitcode: int | None, why: str | None = None) -> None:
        super().__init__(why or f"rank process died (exit code {exitcode})")
        self.exitcode, self.why = exitcode, why


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
            if not isinstance(self._recv(START_TIMEOUT_S), _Ready):
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
        blobs = order.context["blobs"]
        order.context["blobs"] = {sha: self._copy(sha, Path(p)) for sha, p in blobs.items()}
        aid = order.assignment_id
        ooms = self.cgroup.oom_kills() if self.cgroup is not None else 0
        stop_at: float | None = None
        try:
            self._send(("run", order))
            while True:
                msg = self._recv(0.1)
                if msg is None:
                    if stop_at is None and should_stop():
                        self._send(("stop", aid))
                        stop_at = time.monotonic()
                    elif stop_at is not None and time.monotonic() - stop_at > STOP_GRACE_S:
                        self.kill()
                        return WorkloadResult(Outcome.CANCELED, message="stopped")
                    continue
                if isinstance(msg, _Log) and msg.assignment_id == aid:
                    log_text(msg.text)
                elif isinstance(msg, _Done) and msg.assignment_id == aid:
                    self.warm = msg.warm
                    if msg.outcome not in REPORTABLE:
                        why = f"its process reported {msg.outcome.value}, which only the agent decides"
                        return WorkloadResult(Outcome.USER_ERROR, message=why)
                    return WorkloadResult(msg.outcome, msg.exit_code, msg.message, msg.result)
        except RankHostDied as died:
            self.kill()
            if stop_at is not None:
                return WorkloadResult(Outcome.CANCELED, message="stopped")
            limit = self.sandbox.limits.memory_bytes
            if self.cgroup is not None and limit is not None and self.cgroup.oom_kills() > ooms:
                why = f"over its memory limit of {limit // 2**20} MiB: the kernel killed its process"
            elif died.why is not None:
                why = died.why
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

    def _recv(self, timeout: float) -> _Ready | _Log | _Done | None:
        try:
            if not self._conn.poll(timeout):
                return None
            raw = self._conn.recv_bytes(MAX_MESSAGE_BYTES)
        except EOFError:
            raise RankHostDied(self._reap()) from None
        except OSError:  # closed, or a message over MAX_MESSAGE_BYTES ("bad message length")
            if not self._proc.is_alive():
                raise RankHostDied(self._reap()) from None
            raise RankHostDied(None, f"its process sent a message over {MAX_MESSAGE_BYTES} bytes") from None
        try:
            return HostMessage.validate_json(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(map(str, first["loc"]))
            raise RankHostDied(None, f"its process sent a malformed message ({where}: {first['msg']})") from None

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
        self.stopped: set[int] = set()
        self.workloads: dict[str, Workload] = {}

    def send(self, msg: BaseModel) -> None:
        with self.send_lock:
            self.conn.send_bytes(msg.model_dump_json().encode())

    def log(self, assignment_id: int, text: str) -> None:
        for start in range(0, len(text), LOG_PIECE_CHARS):
            self.send(_Log(type="log", assignment_id=assignment_id, text=text[start : start + LOG_PIECE_CHARS]))

    def loop(self) -> None:
        from fleetyard.agent.worker import loaded_artifacts

        threading.Thread(target=self._reader, name="rank-host-reader", daemon=True).start()
        self.send(_Ready(type="ready"))
        while (order := self.orders.get()) is not None:
            r = self._run(order)
            self.send(
                _Done(
                    type="done",
                    assignment_id=order.assignment_id,
                    outcome=r.outcome,
                    exit_code=r.exit_code,
                    message=r.message,
                    result=r.result,
                    warm=loaded_artifacts(),
                )
            )

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
        # Its own time limit is the worker's to keep: it says stop.
        ctx = WorkloadContext(
            **order.context, log=lambda text: self.log(a, text), should_stop=lambda: a in self.stopped
        )
        os.environ["HOME"] = os.environ["TMPDIR"] = str(ctx.workdir)
        try:
            if order.kind not in self.workloads:
                self.workloads[order.kind] = workload_class(order.kind)()
            return self.workloads[order.kind].run(ctx)
        except BoardFault as exc:
            return WorkloadResult(Outcome.INFRA_ERROR, message=f"board fault: {exc}")
        except Exception as exc:  # a bug in a workload plugin (or what an artifact did to it)
            self.log(a, traceback.format_exc())
            return WorkloadResult(Outcome.INFRA_ERROR, message=f"workload {order.kind!r} raised {exc!r}")
        finally:
            self.stopped.discard(a)
