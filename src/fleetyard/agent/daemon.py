"""The host agent daemon: :func:`run_agent`.

Threads, each with its own HTTP connection:

    heartbeat   register (again, on 409 stale_session), then every interval report the boards'
                probes, telemetry and warm artifacts (what each worker holds loaded), the live
                assignment ids, applied fault orders and finished board ops; apply the answer's
                cancels and fault orders, start its board ops
    op-*        one per board op (reset, reflash, host reboot) while it runs: heartbeats go on
    poller      long-poll GET /v1/agent/assignments; hand each new id to its board's runner
    events      the outbox sender: batches of started/log/finished events, outputs uploaded first
    board-*     one per board (see runner.py), driving that board's worker process

When the server is unreachable every thread backs off (0.2 s doubling to 5 s, with jitter) while
the workers keep running and events wait in the outbox; when it is back, the outbox drains.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
import signal
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from fleetyard import __version__
from fleetyard.agent.blobs import BlobCache
from fleetyard.agent.link import Backoff, Revival, ServerLink, Unreachable, describe
from fleetyard.agent.outbox import EventSender, Outbox
from fleetyard.agent.runner import BoardRunner, RunnerConfig
from fleetyard.domain.job import Cause
from fleetyard.drivers.base import BoardDriver, FaultInjectable, Flashable, Reflashable, Resettable, load_driver
from fleetyard.errors import FleetyardError, StaleSession
from fleetyard.policy.outcomes import stopped
from fleetyard.protocol.agent import (
    CACHED_MAX,
    Assignment,
    AssignmentBatch,
    BoardInfo,
    BoardOp,
    BoardReport,
    Event,
    EventType,
    FaultAction,
    FaultKind,
    FaultOrder,
    HeartbeatRequest,
    HeartbeatResponse,
    LeaveRequest,
    OpOrder,
    OpResult,
    RegisterRequest,
    RegisterResponse,
)
from fleetyard.workloads.rank_cgroup import RankLimits, default_memory_bytes
from fleetyard.workloads.sandbox import SandboxError, choose_backend, private_root, python_unreadable, rank_uid_base

__all__ = ["Agent", "IdSet", "OpFailed", "run_agent"]

log = logging.getLogger("fleetyard.agent")

POLL_WAIT_S = 25.0
DEFAULT_HEARTBEAT_S = 2.0
SHUTDOWN_FLUSH_S = 5.0  # at exit, how long to keep trying to deliver the last events
# How long a board op waits for the board's running rank to end (it is killed at once; this
# covers a rank still fetching its blobs).
OP_IDLE_WAIT_S = 30.0
OP_MESSAGE_MAX = 2000  # a driver's error can be a whole log: the server keeps this much


def run_agent(
    server: str,
    token: str,
    driver: str,
    host: str,
    state_dir: Path,
    labels: dict[str, str] | None = None,
    heartbeat_interval_s: float | None = None,
    *,
    stop: threading.Event | None = None,
    sandbox: str = "auto",
    rank_dir: Path | None = None,
    rank_memory_mb: int | None = None,
    rank_cpus: float | None = None,
) -> None:
    """Run the agent until SIGTERM/SIGINT (or ``stop`` is set); then stop its workers cleanly.

    Ranks still running at exit are stopped and end as ``preempted`` ("the agent stopped"): their
    jobs go back to the queue and their boards stay in service.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx logs every request at INFO: hundreds a second on a busy host.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    stop = stop or threading.Event()
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():

        def on_signal(signum: int, frame: FrameType | None) -> None:
            log.info("signal %d: stopping", signum)
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, on_signal)
    agent = Agent(
        server=server,
        token=token,
        driver=driver,
        host=host,
        state_dir=Path(state_dir),
        labels=labels,
        heartbeat_interval_s=heartbeat_interval_s,
        sandbox=sandbox,
        rank_dir=rank_dir,
        rank_memory_mb=rank_memory_mb,
        rank_cpus=rank_cpus,
    )
    try:
        agent.start()
        while not stop.wait(1.0):
            pass
    finally:
        agent.shutdown()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class OpFailed(Exception):
    """A board op that could not be carried out; the message says why."""


class IdSet:
    """A set of non-negative ints kept as a bitmap from the first id seen: ids come from one
    growing sequence, so a day at 500 jobs/s is ~5 MB here where a ``set`` would take ~300 MB."""

    def __init__(self) -> None:
        self._base: int | None = None
        self._bits = bytearray()
        self._below: set[int] = set()  # the rare id older than the first one seen

    def add(self, i: int) -> None:
        if self._base is None:
            self._base = i
        if i < self._base:
            self._below.add(i)
            return
        off = i - self._base
        need = off // 8 + 1
        if need > len(self._bits):
            self._bits.extend(bytes(max(need - len(self._bits), len(self._bits) // 2, 1024)))
        self._bits[off // 8] |= 1 << (off % 8)

    def __contains__(self, i: object) -> bool:
        if not isinstance(i, int) or self._base is None:
            return False
        if i < self._base:
            return i in self._below
        off = i - self._base
        return off // 8 < len(self._bits) and bool(self._bits[off // 8] & (1 << (off % 8)))


class Agent:
    """The agent's state and threads; :func:`run_agent` is the blocking front door."""

    def __init__(
        self,
        *,
        server: str,
        token: str,
        driver: str,
        host: str,
        state_dir: Path,
        labels: dict[str, str] | None = None,
        heartbeat_interval_s: float | None = None,
        stop_grace_s: float = 5.0,
        sandbox: str = "auto",
        rank_dir: Path | None = None,
        rank_memory_mb: int | None = None,
        rank_cpus: float | None = None,
    ) -> None:
        self.server = server
        self.token = token
        self.host = host
        self.state_dir = state_dir
        self.labels = dict(labels or {})
        self.heartbeat_interval_s = heartbeat_interval_s
        self.session = uuid.uuid4().hex  # one per process: a restarted agent is a new session
        state_dir.mkdir(parents=True, exist_ok=True)
        state_dir.chmod(0o700)  # blobs, outputs on their way, the board state: the agent's alone
        self.sandbox = choose_backend(sandbox)
        uid_base = rank_uid_base(host, state_dir) if self.sandbox != "none" else 0
        rank_hosts = False
        if self.sandbox != "none":
            # Ranks' dirs live outside the data dir, which their uids cannot enter.
            parent = rank_dir or private_root(Path(tempfile.gettempdir()), "fleetyard-ranks")
            rank_dir = private_root(parent, f"u{uid_base}")
            log.info("ranks run in the %s sandbox: slot N as uid %d+N, in %s", self.sandbox, uid_base, rank_dir)
            unreadable = python_unreadable(uid_base)
            if unreadable is not None and sandbox != "auto":
                raise SandboxError(f"--sandbox {sandbox}: {unreadable}")
            if unreadable is not None:
                log.warning("in-process kinds (run, validate, eval) run unconfined, as this agent: %s", unreadable)
            rank_hosts = unreadable is None
        else:
            log.warning(
                "ranks run unsandboxed, as this agent's user: a job can read what the agent can"
                " (run the agent as root for the uid sandbox)"
            )
        self.driver: BoardDriver = load_driver(driver, host=host, state_dir=state_dir)
        self.driver_spec = driver
        # Kept across restarts, unlike outbox/ and work/: a blob is the same blob tomorrow.
        self.blobs = BlobCache(state_dir / "blobs", lambda: ServerLink(server, token, timeout_s=60))
        self.config = RunnerConfig(
            driver_spec=driver,
            host=host,
            state_dir=state_dir,
            stop_grace_s=stop_grace_s,
            blobs=self.blobs,
            sandbox=self.sandbox,
            rank_uid_base=uid_base,
            rank_dir=rank_dir,
            rank_hosts=rank_hosts,
        )
        self._rank_memory = None if rank_memory_mb is None else rank_memory_mb * 2**20
        self._rank_cpus = rank_cpus
        self.outbox = Outbox()
        # Only added to (a board found at a later registration); readers iterate over a copy.
        self.runners: dict[str, BoardRunner] = {}
        self.serials: list[str] = []  # every board registered by this process, in slot order
        self.stopping = threading.Event()  # no new work, threads wind down
        self._sender_stop = threading.Event()
        self._hb_wake = threading.Event()
        self._revival = Revival()  # one thread reaching the server again wakes the others
        self._lock = threading.Lock()
        self._seen = IdSet()  # every assignment id this process ever received
        self._reg_lock = threading.Lock()
        self._registered = False
        self._reg_gen = 0
        self._server_interval = DEFAULT_HEARTBEAT_S
        self._faults_applied: set[int] = set()
        self._fault_acks: set[int] = set()
        self._ops_taken: set[int] = set()  # board op ids this process started
        self._op_results: dict[int, OpResult] = {}  # finished, sent until the server acks them
        self._op_locks: dict[str, threading.Lock] = {}  # one op at a time per board
        self._threads: list[threading.Thread] = []
        self._poll_link: ServerLink | None = None
        self._sender: EventSender | None = None

    # ---- lifecycle

    def start(self) -> None:
        # What an earlier process of this agent left is useless to this session: the server ends
        # the old session's ranks when we register.
        for leftover in ("outbox", "work"):
            shutil.rmtree(self.state_dir / leftover, ignore_errors=True)
        boards = self.driver.discover()
        if self.sandbox != "none":
            memory = self._rank_memory or default_memory_bytes(len(boards))
            limits = RankLimits(memory_bytes=memory, cpus=self._rank_cpus)
            self.config = dataclasses.replace(self.config, rank_limits=limits)
            log.info(
                "each board's ranks may use %s of memory and %s",
                f"{memory // 2**20} MiB" if memory else "all",
                f"{self._rank_cpus:g} CPUs" if self._rank_cpus else "every CPU",
            )
        self._add_boards(boards)
        self._sender = EventSender(
            self.outbox,
            ServerLink(self.server, self.token),
            session=lambda: self.session,
            reregister=self._on_stale,
            on_cancel=self.cancel,
            stop=self._sender_stop,
            revival=self._revival,
        )
        self._sender.start()
        for target, name in ((self._heartbeat_loop, "agent-heartbeat"), (self._poll_loop, "agent-poll")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        log.info(
            "agent %s (session %s) running %d boards with driver %s",
            self.host,
            self.session,
            len(self.runners),
            self.driver_spec,
        )

    def shutdown(self) -> None:
        """Stop taking work, stop running ranks, deliver the last events, stop the workers."""
        if self.stopping.is_set():
            return
        self.stopping.set()
        # First, so that no new work is bound to our boards while the running ranks stop.
        self._leave()
        self._hb_wake.set()
        self._revival.revived()
        if self._poll_link is not None:
            self._poll_link.close()  # abort the long poll
        for r in list(self.runners.values()):
            r.close()
        deadline = time.monotonic() + self.config.stop_grace_s + 2.0
        for r in list(self.runners.values()):
            r.join(max(0.1, deadline - time.monotonic()))
        if not self.outbox.wait_empty(SHUTDOWN_FLUSH_S):
            log.warning("exiting with %d events the server never acknowledged", len(self.outbox))
        self._sender_stop.set()
        if self._sender is not None:
            self._sender.join(1.0)
        log.info("agent %s stopped", self.host)

    def _leave(self) -> None:
        """Tell the server this host is leaving on purpose: it takes the boards out of service and
        re-queues what runs here as preempted. Best effort: else the heartbeat timeout says it."""
        if not self._registered:
            return
        link = ServerLink(self.server, self.token, timeout_s=2.0)
        try:
            body = LeaveRequest(session=self.session).model_dump_json().encode()
            link.request("POST", "/v1/agent/leave", content=body, headers={"Content-Type": "application/json"})
        except (Unreachable, FleetyardError) as exc:
            log.warning("could not tell the server this agent is leaving: %s", describe(exc))
        finally:
            link.close()

    def _add_boards(self, boards: list[Any]) -> None:
        for b in sorted(boards, key=lambda b: b.slot):
            if b.serial in self.runners:
                continue
            runner = BoardRunner(b.serial, self.driver, self.config, self._emit, slot=b.slot)
            self.runners[b.serial] = runner
            self.serials.append(b.serial)
            if not self.stopping.is_set():
                runner.start()

    def _emit(self, event: Event, uploads: dict[str, Path] | None, cleanup: Path | None) -> None:
        self.outbox.add(event, uploads, cleanup)

    # ---- registration

    def ensure_registered(self, link: ServerLink) -> bool:
        """Register unless registered; retry until it works or the agent stops. False if stopping."""
        backoff = Backoff(revival=self._revival)
        while not self.stopping.is_set():
            with self._reg_lock:
                if self._registered:
                    return True
                try:
                    self._register(link)
                    backoff.succeeded()
                    return True
                except Unreachable as exc:
                    if backoff.failures == 0:
                        log.warning("cannot register with %s, will retry: %s", self.server, exc)
                except FleetyardError as exc:
                    log.error("the server refused registration: %s", describe(exc))
                except Exception:
                    log.exception("registration failed")
            backoff.wait()
        return False

    def _register(self, link: ServerLink) -> None:
        boards = self.driver.discover()
        self._add_boards(boards)
        req = RegisterRequest(
            host=self.host,
            session=self.session,
            driver=self.driver_spec,
            agent_version=__version__,
            labels=self.labels,
            boards=[
                BoardInfo(
                    serial=b.serial,
                    generation=b.generation,
                    slot=b.slot,
                    firmware=b.firmware,
                    device=b.device,
                    labels=dict(b.labels),
                    hardware_revision=b.hardware_revision,
                )
                for b in boards
            ],
        )
        resp = RegisterResponse.model_validate(link.post_model("/v1/agent/register", req, timeout_s=30))
        self._server_interval = resp.heartbeat_interval_s
        self._registered = True
        self._reg_gen += 1
        log.info("registered host %s with %d boards (session %s)", self.host, len(boards), self.session)

    def _invalidate(self, gen: int) -> None:
        with self._reg_lock:
            if gen == self._reg_gen:
                self._registered = False

    def _on_stale(self, link: ServerLink) -> None:
        self._invalidate(self._reg_gen)
        self.ensure_registered(link)

    @property
    def interval_s(self) -> float:
        return self.heartbeat_interval_s or self._server_interval

    # ---- heartbeat

    def _heartbeat_loop(self) -> None:
        link = ServerLink(self.server, self.token, timeout_s=15)
        backoff = Backoff(revival=self._revival)
        try:
            while self.ensure_registered(link):
                # A heartbeat is due every interval anyway: retrying at that pace adds no load,
                # and a longer gap could get the host declared lost.
                backoff.cap_s = min(5.0, self.interval_s)
                gen = self._reg_gen
                with self._lock:
                    acks = sorted(self._fault_acks)
                    results = list(self._op_results.values())
                req = self.heartbeat(acks, results)
                try:
                    resp = HeartbeatResponse.model_validate(link.post_model("/v1/agent/heartbeat", req))
                except Unreachable as exc:
                    if backoff.failures == 0:
                        log.warning("heartbeat failed, will retry: %s", exc)
                    backoff.wait()
                    continue
                except StaleSession as exc:
                    log.warning("heartbeat: %s; registering again", describe(exc))
                    self._invalidate(gen)
                    continue
                except FleetyardError as exc:
                    log.error("heartbeat refused: %s", describe(exc))
                    backoff.wait()
                    continue
                except Exception:  # a bad answer: never let the heartbeat thread die
                    log.exception("heartbeat failed")
                    backoff.wait()
                    continue
                if backoff.succeeded():
                    log.info("server %s answers again", self.server)
                with self._lock:
                    self._fault_acks.difference_update(acks)
                    for op_id in resp.op_acks:
                        self._op_results.pop(op_id, None)
                if resp.cancel:
                    self.cancel(resp.cancel)
                if resp.faults:
                    self.apply_faults(resp.faults)
                if resp.ops:
                    self.apply_ops(resp.ops)
                if not self._fault_acks:  # new acks go out at once, not an interval later
                    self._hb_wake.wait(self.interval_s)
                self._hb_wake.clear()
        finally:
            link.close()

    def heartbeat(self, fault_acks: list[int], op_results: list[OpResult] | None = None) -> HeartbeatRequest:
        """What the next heartbeat says: each board's report, the blobs cached, the ranks live."""
        return HeartbeatRequest(
            session=self.session,
            boards=self.reports(),
            cached=self.blobs.recent(CACHED_MAX),
            running=self.live_ids(),
            fault_acks=fault_acks,
            op_results=op_results or [],
        )

    def reports(self) -> list[BoardReport]:
        """Every registered board's probe and telemetry; one missing from discover() fell off the bus."""
        try:
            present = {b.serial for b in self.driver.discover()}
        except Exception as exc:
            log.error("discover failed: %s", exc)
            present = set()
        out = []
        for serial in self.serials:
            # Reported even for a failing board: a transient error should not make the server
            # rewrite the list twice.
            runner = self.runners.get(serial)
            warm = runner.warm if runner is not None else []
            if serial not in present:
                out.append(BoardReport(id=serial, ok=False, reason="fell off the bus", warm=warm))
                continue
            try:
                probe = self.driver.probe(serial)
                telemetry = self.driver.telemetry(serial)
            except Exception as exc:
                out.append(BoardReport(id=serial, ok=False, reason=f"driver error: {exc}", warm=warm))
                continue
            out.append(BoardReport(id=serial, ok=probe.ok, reason=probe.reason, telemetry=telemetry, warm=warm))
        return out

    def live_ids(self) -> list[int]:
        """Assignments live on this agent: queued, running, or ended but not yet acknowledged."""
        ids = set(self.outbox.unacked_finished())
        for r in list(self.runners.values()):
            ids.update(r.live_ids())
        return sorted(ids)

    def cancel(self, ids: list[int]) -> None:
        """Kill these assignments (they end canceled); ids not live here are ignored."""
        for aid in ids:
            for r in list(self.runners.values()):
                if r.stop(aid, Cause.CANCELED):
                    log.info("assignment %d: canceled", aid)
                    break

    def apply_faults(self, orders: list[FaultOrder]) -> None:
        """Apply fault orders through the driver; each is applied once and acked next heartbeat."""
        for o in orders:
            with self._lock:
                if o.id in self._faults_applied:
                    continue
                self._faults_applied.add(o.id)
            try:
                self._apply_fault(o)
            except Exception as exc:  # ack anyway: an order that fails now fails again
                log.error("fault order %d (%s %s on %s) failed: %s", o.id, o.action, o.kind, o.board_id, exc)
            with self._lock:
                self._fault_acks.add(o.id)
        self._hb_wake.set()

    def _apply_fault(self, o: FaultOrder) -> None:
        kind = o.kind.value if o.kind is not None else None
        if not isinstance(self.driver, FaultInjectable):
            log.warning("fault order %d ignored: driver %s cannot inject faults", o.id, self.driver_spec)
            return
        runner = self.runners.get(o.board_id)
        if runner is None:
            log.warning("fault order %d ignored: board %s is not on this host", o.id, o.board_id)
            return
        if o.action is FaultAction.CLEAR:
            self.driver.clear(o.board_id, kind)
        elif kind is None:
            log.warning("fault order %d ignored: inject needs a kind", o.id)
            return
        else:
            self.driver.inject(o.board_id, kind)
            if o.kind is FaultKind.BUS_DROP:
                # The board is gone: whatever ran on it dies with it.
                for aid in runner.live_ids():
                    runner.stop(aid, Cause.BOARD_FAULT, "the board fell off the bus", hard=True)
        log.info("fault order %d: %s %s on %s", o.id, o.action.value, kind or "all", o.board_id)

    # ---- board ops

    def apply_ops(self, orders: list[OpOrder]) -> list[threading.Thread]:
        """Start each board op once, on a thread of its own (a flash takes minutes: heartbeats go
        on); its result goes out with the next heartbeat. Returns the threads started."""
        started = []
        for o in orders:
            with self._lock:
                if o.id in self._ops_taken:
                    continue
                self._ops_taken.add(o.id)
            t = threading.Thread(target=self._run_op, args=(o,), name=f"op-{o.id}", daemon=True)
            t.start()
            started.append(t)
        return started

    def pending_op_results(self) -> list[OpResult]:
        """Finished ops whose results the server has not acknowledged yet."""
        with self._lock:
            return list(self._op_results.values())

    def _run_op(self, o: OpOrder) -> None:
        started = time.time()
        try:
            ok, message = True, self.carry_out(o)
        except Exception as exc:  # any failure is the op's result, never the thread's end
            ok, message = False, str(exc) or type(exc).__name__
        finished = time.time()
        level = logging.INFO if ok else logging.WARNING
        log.log(level, "op %d (%s on %s) %s: %s", o.id, o.op, o.board_id, "done" if ok else "failed", message)
        result = OpResult(id=o.id, ok=ok, message=message[:OP_MESSAGE_MAX], started_at=started, finished_at=finished)
        with self._lock:
            self._op_results[o.id] = result
        self._hb_wake.set()  # the controller waits on it: tell the server now

    def carry_out(self, o: OpOrder) -> str:
        """Carry out one board op through the driver; what happened, or an exception saying why not."""
        if o.board_id not in self.runners:
            raise OpFailed(f"board {o.board_id} is not on host {self.host}")
        if o.op is BoardOp.FLASH:
            if not isinstance(self.driver, Flashable):
                raise OpFailed(f"driver {self.driver_spec} cannot flash boards")
            if not o.image or not o.version:
                raise OpFailed("a flash needs an image and its version")
            # The image is fetched (and kept from eviction) before the board is held: its work goes on meanwhile.
            with (
                self.blobs.held([o.image]) as images,
                self._holding([o.board_id], f"the board is being flashed (op {o.id})", o.timeout_s),
            ):
                version = self.driver.flash(o.board_id, images[o.image], o.version)
            return f"firmware {version} flashed"
        if o.op is BoardOp.REFLASH:
            if not isinstance(self.driver, Reflashable):
                raise OpFailed(f"driver {self.driver_spec} cannot reflash boards")
            with self._holding([o.board_id], f"the board is being reflashed (op {o.id})", o.timeout_s):
                version = self.driver.reflash(o.board_id)
            return f"firmware {version} written again"
        if not isinstance(self.driver, Resettable):
            raise OpFailed(f"driver {self.driver_spec} cannot reset boards")
        if o.op is BoardOp.HOST_REBOOT:
            serials = list(self.serials)
            failed = []
            with self._holding(serials, f"the host is being rebooted (op {o.id})", o.timeout_s):
                # A reboot powers every board down: a hard reset each, all with their workers stopped.
                for serial in serials:
                    try:
                        self.driver.reset(serial, "hard")
                    except Exception as exc:
                        failed.append(f"{serial}: {exc}")
            if failed:
                n = f"{len(failed)} of {len(serials)}"
                raise OpFailed(f"host reboot: hard reset failed on {n} boards: {'; '.join(failed)}")
            return f"host reboot: {len(serials)} boards hard-reset"
        level = "soft" if o.op is BoardOp.SOFT_RESET else "hard"
        with self._holding([o.board_id], f"the board is being {level}-reset (op {o.id})", o.timeout_s):
            self.driver.reset(o.board_id, level)
        return f"{level} reset done"

    @contextlib.contextmanager
    def _holding(self, serials: list[str], reason: str, timeout_s: float) -> Iterator[None]:
        """Hold these boards for an op: their ranks end, their workers stop; released afterwards."""
        wanted = set(serials)
        order = [s for s in self.serials if s in wanted]  # one order for every op: no deadlock
        with contextlib.ExitStack() as stack:
            for serial in order:
                with self._lock:
                    lock = self._op_locks.setdefault(serial, threading.Lock())
                stack.enter_context(lock)
            runners = [self.runners[s] for s in order]
            for r in runners:
                stack.callback(r.release)
                r.hold(reason)
            wait_s = min(timeout_s, OP_IDLE_WAIT_S)
            busy = [r.serial for r in runners if not r.wait_idle(wait_s)]
            if busy:
                raise OpFailed(f"board {', '.join(busy)} still running a rank {wait_s:g} s after it was stopped")
            for r in runners:
                r.stop_worker()
            yield

    # ---- assignments

    def _poll_loop(self) -> None:
        link = self._poll_link = ServerLink(self.server, self.token, timeout_s=POLL_WAIT_S + 15)
        backoff = Backoff(revival=self._revival)
        try:
            while self.ensure_registered(link):
                gen = self._reg_gen
                try:
                    r = link.request(
                        "GET", "/v1/agent/assignments", params={"session": self.session, "wait": POLL_WAIT_S}
                    )
                    batch = AssignmentBatch.model_validate_json(r.content)
                except Unreachable as exc:
                    if self.stopping.is_set():
                        return
                    if backoff.failures == 0:
                        log.warning("assignment poll failed, will retry: %s", exc)
                    backoff.wait()
                    continue
                except StaleSession:
                    self._invalidate(gen)
                    continue
                except FleetyardError as exc:
                    log.error("assignment poll refused: %s", describe(exc))
                    backoff.wait()
                    continue
                except Exception:
                    if self.stopping.is_set():
                        return  # the link was closed under the long poll
                    log.exception("assignment poll failed")
                    backoff.wait()
                    continue
                backoff.succeeded()
                for a in batch.assignments:
                    self.dispatch(a)
        finally:
            link.close()

    def dispatch(self, a: Assignment) -> None:
        """Hand an assignment to its board's runner, once per id for the life of the process."""
        with self._lock:
            if a.id in self._seen:
                return
            self._seen.add(a.id)
        runner = self.runners.get(a.board_id)
        if self.stopping.is_set() or runner is None:
            cause, detail = (
                (Cause.AGENT_STOPPED, "")
                if runner is not None
                else (Cause.BOARD_GONE, f"board {a.board_id} is not on host {self.host}")
            )
            outcome, message = stopped(cause, detail, time_limit_s=a.time_limit_s)
            self._emit(
                Event(
                    assignment_id=a.id,
                    seq=0,
                    type=EventType.FINISHED,
                    at=time.time(),
                    outcome=outcome,
                    cause=cause,
                    message=message,
                    board_ok=runner is not None,
                ),
                None,
                None,
            )
            return
        log.debug("assignment %d (job %d rank %d) -> %s", a.id, a.job_id, a.rank, a.board_id)
        runner.submit(a)
