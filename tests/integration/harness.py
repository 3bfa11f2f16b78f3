"""Real processes on loopback: a throwaway PostgreSQL cluster, and fleets of server, controller, agents."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from fleetyard.cli._fleet import agent_token_file, write_agent_tokens
from fleetyard.domain.auth import Role
from fleetyard.parent_death import die_with_parent
from fleetyard.store import migrate
from fleetyard.store.tokens import create_token
from fleetyard.workloads.sandbox import SLOTS_PER_HOST, rank_uid_base
from tests.fast_health import FAST_HEALTH_YAML

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# A deadline only bounds how long a failing test takes: each is given this many times what it
# names, so that a busy machine (three xdist workers' fleets on two cores, a CPU hog beside them)
# slows a test down instead of failing it.
DEADLINE_SCALE = 3.0


# A wait asks often at first and then less, up to this often: most checks are an HTTP request
# the server answers, and a test waiting tens of seconds for a rollout or a heal polled 20 times a
# second, a tenth of the suite's CPU (the server's and the test's) spent on asking.
SLOWEST_POLL_S = 0.25


def wait_for(
    check: Callable[[], Any], *, timeout: float = 60.0, interval: float = 0.05, what: str = "", scaled: bool = True
) -> Any:
    """``check()``'s first true value, asked after ``interval`` s, then less often (to
    :data:`SLOWEST_POLL_S`). ``scaled=False`` where the deadline is itself what the test checks
    (a bound the product promises)."""
    if scaled:
        timeout *= DEADLINE_SCALE
    deadline = time.monotonic() + timeout
    last: Any = None
    delay = interval
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(delay)
        delay = min(delay * 1.5, max(interval, SLOWEST_POLL_S))
    raise TimeoutError(f"timed out after {timeout}s waiting for {what or check} (last: {last!r})")


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not candidates:
        raise RuntimeError(f"{name} not found: install PostgreSQL (make test does it with apt-get)")
    return candidates[-1]


PG_PREFIX = "fy-pg-"


class PostgresCluster:
    """A throwaway cluster: initdb in a temp folder, ``postgres`` run as this process's child on a
    free port (as the postgres user when run as root). It dies with this process, even one killed
    with SIGKILL (its parent-death signal is SIGQUIT: an immediate shutdown), and the next
    cluster's start removes the folders that such a death left (:func:`sweep_stale_clusters`)."""

    def __init__(self) -> None:
        sweep_stale_clusters()
        self.dir = Path(tempfile.mkdtemp(prefix=PG_PREFIX))
        (self.dir / "owner").write_text(str(os.getpid()))
        self.port = free_port()
        self.data = self.dir / "data"
        self.proc: subprocess.Popen[bytes] | None = None
        self._n = 0

    def _as_postgres(self) -> dict[str, Any]:
        if os.geteuid() != 0:
            return {}
        shutil.chown(self.dir, "postgres")
        return {"user": "postgres", "group": "postgres", "extra_groups": []}

    def start(self) -> None:
        subprocess.run(
            [_pg_bin("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
            check=True,
            capture_output=True,
            timeout=120,
            **self._as_postgres(),
        )
        self._launch()

    def _launch(self) -> None:
        log = open(self.dir / "log", "ab")  # noqa: SIM115 - the child owns it
        opts = ["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=300"]
        self.proc = subprocess.Popen(
            [_pg_bin("postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.dir), *opts],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the terminal's Ctrl-C is pytest's to handle
            preexec_fn=die_with_parent(signal.SIGQUIT),
            **self._as_postgres(),
        )
        log.close()
        import psycopg

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"postgres exited ({self.proc.returncode}): {(self.dir / 'log').read_text()[-2000:]}"
                )
            try:
                psycopg.connect(self._url("postgres"), connect_timeout=2).close()
                return True
            except psycopg.OperationalError:
                return False

        wait_for(ready, timeout=60, interval=0.1, what="postgres to accept connections")

    def halt(self) -> None:
        """Stop the database as an outage would (every session cut), keeping its data."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)  # fast shutdown: sessions end, the data stays
        self.proc.wait(60)

    def resume(self) -> None:
        """Start the halted database again, on the same port, with the same data."""
        self._launch()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # immediate shutdown: the data is thrown away
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)

    def _url(self, db: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def new_database(self) -> str:
        import psycopg

        self._n += 1
        name = f"fy_test_{os.getpid()}_{self._n}"
        with psycopg.connect(self._url("postgres"), autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"


def _alive(pid: int) -> bool:
    """Whether a process runs (a zombie does not: it is dead, only not yet reaped)."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def sweep_stale_clusters(tmp: str | None = None) -> list[Path]:
    """Remove the clusters of test processes that died without stopping them (killed outright):
    their ``postgres`` is stopped if it still runs, and their folder removed. A cluster whose
    owner lives (another test run on this machine) is left alone. Returns the folders removed."""
    removed = []
    for d in sorted(Path(tmp or tempfile.gettempdir()).glob(f"{PG_PREFIX}*")):
        try:
            owner = int((d / "owner").read_text())
        except (OSError, ValueError):
            owner = None
            with contextlib.suppress(OSError):
                if time.time() - d.stat().st_mtime < 120:
                    continue  # just made: its owner file is being written (a cluster starting)
        if owner is not None and _alive(owner):
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((d / "data" / "postmaster.pid").read_text().splitlines()[0])
            if _alive(pid):
                os.kill(pid, signal.SIGQUIT)
                deadline = time.monotonic() + 10
                while _alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.05)
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
    return removed


@dataclass
class Proc:
    name: str
    args: list[str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        # Flashes take minutes on the sim boards: 0.05 x 0.1 of that is about a second.
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "FLEETYARD_SIM_TIME_SCALE": "0.05",
            "FLEETYARD_SIM_FLASH_SCALE": "0.1",
        }
        out = open(self.log, "ab")  # noqa: SIM115 - the child owns it
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "fleetyard", *self.args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
            start_new_session=True,
            preexec_fn=die_with_parent(signal.SIGKILL),  # no orphans, even if pytest is killed
        )
        out.close()

    def kill9(self) -> None:
        assert self.popen is not None
        os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(10)

    def terminate(self) -> None:
        """SIGTERM to its process group: a clean stop begins (:meth:`stop` waits for it)."""
        if self.alive:
            assert self.popen is not None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)

    def stop(self) -> None:
        """Stop cleanly; SIGKILL after 10 s."""
        if self.popen is None or self.popen.poll() is not None:
            return
        self.terminate()
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None


@dataclass
class Stack:
    """A fleet as processes: server, controller and agents, over one store."""

    db_url: str
    dir: Path
    # A host is unreachable after 10 missed beats and lost after a minute, as in production: two
    # cores shared by three stacks delay beats by seconds. A test of host loss sets its own.
    host_unreachable_s: float = 5.0
    host_timeout_s: float = 60.0
    heartbeat_s: float = 0.5
    # Rollouts, healing and onboarding take a step per slow pass (1 s by default): a test's
    # scenario needs many, so its controller passes more often.
    slow_tick_s: float = 0.25
    max_blob_mb: int = 1  # small, so that the tests' 413s are cheap; benchmarks raise it
    store_timeout_s: float | None = None  # how long servers and controllers ride out a store outage
    health_yaml: str = FAST_HEALTH_YAML  # checks and ladder steps in a test's seconds
    port: int = field(default_factory=free_port)
    # Every server replica's port by process name (the first, "server", listens on ``port``).
    server_ports: dict[str, int] = field(default_factory=dict)
    procs: dict[str, Proc] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    # One keep-alive connection pool for the test's own requests: a new connection per poll
    # costs the test and the server a good share of a core on this 2-core machine. Plain http on
    # loopback: no TLS context (httpx loads the CA bundle for each: 57 ms of CPU).
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30, verify=False))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def setup(self) -> None:
        migrate.upgrade(self.db_url)
        for name, role, team in (
            ("admin", Role.ADMIN, None),
            ("alice", Role.USER, "compiler"),
            ("bob", Role.USER, "robotics"),
            ("ops", Role.OPERATOR, None),
        ):
            self.tokens[name] = create_token(self.db_url, name=name, role=role, team=team)

    def _proc(self, name: str, args: list[str]) -> Proc:
        p = Proc(name, args, self.dir / f"{name}.log")
        self.procs[name] = p
        p.start()
        return p

    def server_url(self, name: str = "server") -> str:
        return f"http://127.0.0.1:{self.server_ports[name]}"

    def use_server(self, name: str) -> None:
        """The test's own requests go to this replica from now on (another died)."""
        self.port = self.server_ports[name]
        self.client.close()
        self.client = httpx.Client(timeout=30, verify=False)

    def start_server(self, workers: int = 1, name: str = "server") -> None:
        """Start a server replica (its own port; the first one's is :attr:`port`)."""
        port = self.server_ports.setdefault(name, self.port if name == "server" else free_port())
        url = f"http://127.0.0.1:{port}"
        self._proc(
            name,
            [
                "server",
                "--workers",
                str(workers),
                "--db",
                self.db_url,
                "--data-dir",
                str(self.dir),
                "--port",
                str(port),
                "--heartbeat-interval",
                str(self.heartbeat_s),
                "--max-blob-mb",
                str(self.max_blob_mb),
                *self._store_timeout(),
            ],
        )
        wait_for(lambda: self.client.get(f"{url}/readyz", timeout=1).status_code == 200, what=f"{name} ready")

    def start_controller(self, name: str = "controller") -> None:
        health = self.dir / "health.yaml"
        health.write_text(self.health_yaml)
        self._proc(
            name,
            [
                "controller",
                "--db",
                self.db_url,
                "--data-dir",
                str(self.dir),
                "--host-unreachable",
                str(min(self.host_unreachable_s, self.host_timeout_s)),
                "--host-timeout",
                str(self.host_timeout_s),
                "--health",
                str(health),
                "--slow-tick",
                str(self.slow_tick_s),
                *self._store_timeout(),
            ],
        )

    def _store_timeout(self) -> list[str]:
        return [] if self.store_timeout_s is None else ["--store-timeout", str(self.store_timeout_s)]

    def start_agent(
        self,
        host: str,
        driver: str = "sim:4:sim-g1",
        wait: bool = True,
        servers: list[str] | None = None,
        extra: tuple[str, ...] = (),
    ) -> None:
        """Start an agent; ``servers`` names the server replicas it knows (default: the first);
        ``extra``: more of its options."""
        if host not in self.tokens:
            self.tokens[host] = create_token(self.db_url, name=f"agent-{host}", role=Role.AGENT, host=host)
        write_agent_tokens(self.dir, {host: self.tokens[host]})  # as `fleetyard up` does: a 0600 file
        self._proc(
            f"agent-{host}",
            [
                "agent",
                "--server",
                ",".join(self.server_url(n) for n in servers) if servers else self.url,
                "--token-file",
                str(agent_token_file(self.dir, host)),
                "--driver",
                driver,
                "--host",
                host,
                "--state-dir",
                str(self.dir / "agents" / host),
                *extra,
            ],
        )
        if wait:
            n = int(driver.split(":")[1]) if driver.startswith("sim:") else 1
            wait_for(lambda: len(self.boards(host=host, state="available")) >= n, what=f"{host} registered")

    def start(self, hosts: int = 2, driver: str = "sim:4:sim-g1") -> Stack:
        self.setup()
        self.start_server()
        self.start_controller()
        for i in range(hosts):
            self.start_agent(f"h{i + 1}", driver)
        return self

    def stop(self) -> None:
        """Stop every process: the agents together (each tells the server it leaves), then the
        rest together. The test's keep-alive connection goes first: the server would wait for it."""
        self.client.close()
        agents = [p for name, p in self.procs.items() if name.startswith("agent-")]
        for group in (agents, [p for p in self.procs.values() if p not in agents]):
            for p in group:
                p.terminate()
            for p in group:
                p.stop()
        # Under the uid sandbox (as root) ranks' dirs are outside the stack's dir, where their
        # uids can reach them: one per agent.
        hosts = [name.removeprefix("agent-") for name in self.procs if name.startswith("agent-")]
        ranks = [rank_dir(h, self.dir / "agents" / h) for h in hosts]
        kill_ranks_under(self.dir, *ranks)
        for d in ranks:
            shutil.rmtree(d, ignore_errors=True)
        for h in hosts:  # the board slots' cgroups a killed worker left (empty by now)
            base = rank_uid_base(h, self.dir / "agents" / h)
            for d in glob.glob("/sys/fs/cgroup/**/fleetyard-u*", recursive=True):
                uid = d.rsplit("fleetyard-u", 1)[1]
                if uid.isdigit() and base <= int(uid) < base + SLOTS_PER_HOST:
                    with contextlib.suppress(OSError):
                        os.rmdir(d)

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.log.read_text(errors='replace')[-4000:]}" for p in self.procs.values() if p.log.exists()
        )

    # HTTP helpers
    def http(self, method: str, path: str, *, as_: str = "admin", **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.tokens[as_]}"}
        return self.client.request(method, f"{self.url}{path}", headers=headers, **kw)

    def ok(self, method: str, path: str, **kw: Any) -> Any:
        r = self.http(method, path, **kw)
        assert r.status_code < 300, f"{method} {path}: {r.status_code} {r.text}"
        return r.json() if r.content else None

    def put_blob(self, data: bytes, *, as_: str = "alice") -> str:
        """Upload ``data`` as a blob; its sha256."""
        sha = hashlib.sha256(data).hexdigest()
        self.ok("PUT", f"/v1/blobs/{sha}", as_=as_, content=data)
        return sha

    def push_artifact(self, data: bytes, name: str, *, as_: str = "alice") -> str:
        """Upload ``data`` and register it as the artifact ``name``; its sha256."""
        sha = self.put_blob(data, as_=as_)
        self.ok("POST", "/v1/artifacts", as_=as_, json={"sha256": sha, "name": name})
        return sha

    def inject(self, board: str, kind: str, *, as_: str = "ops") -> None:
        """Inject a fault into a sim board, and wait until its agent has applied it (the order
        travels with a heartbeat's answer; the ack with a later heartbeat)."""
        order = self.ok("POST", f"/v1/admin/boards/{board}/faults", as_=as_, json={"kind": kind})
        faults = f"/v1/admin/boards/{board}/faults"
        wait_for(
            lambda: any(f["id"] == order["id"] and f["acked_at"] for f in self.ok("GET", faults, as_=as_)),
            timeout=30,
            interval=0.1,
            what=f"{kind} applied on {board}",
        )

    def submit(self, as_: str = "alice", **spec: Any) -> int:
        return int(self.ok("POST", "/v1/jobs", as_=as_, json=spec)["id"])

    def job(self, job_id: int) -> dict[str, Any]:
        return dict(self.ok("GET", f"/v1/jobs/{job_id}"))

    def wait_job(self, job_id: int, timeout: float = 90.0) -> dict[str, Any]:
        return dict(
            wait_for(
                lambda: (j := self.job(job_id))["state"] in ("succeeded", "failed", "canceled") and j,
                timeout=timeout,
                interval=0.1,
                what=f"job {job_id} to finish",
            )
        )

    def boards(self, **params: Any) -> list[dict[str, Any]]:
        return list(self.ok("GET", "/v1/boards", params=params))

    def logs_of(self, job_id: int) -> str:
        return "".join(c["data"] for c in self.ok("GET", f"/v1/jobs/{job_id}/logs")["chunks"])


def rank_dir(host: str, state_dir: Path) -> Path:
    """Where the agent of ``host`` with ``state_dir`` makes its ranks' dirs under the uid sandbox
    (its default ``--rank-dir``)."""
    return Path(tempfile.gettempdir()) / "fleetyard-ranks" / f"u{rank_uid_base(host, state_dir)}"


def kill_ranks_under(*roots: Path) -> int:
    """Kill the ranks whose dirs are under one of ``roots`` and that outlived their agents (a
    command runs in its own session: an agent killed with SIGKILL leaves its running ranks behind)."""
    import psutil

    want = tuple(f"{r}/" for r in roots)
    killed = 0
    for p in psutil.process_iter():
        try:
            if p.environ().get("FLEETYARD_OUTPUT_DIR", "").startswith(want):
                p.kill()
                killed += 1
        except psutil.Error:
            continue
    return killed


@contextlib.contextmanager
def running_stack(db_url: str, dir: Path, **kw: Any) -> Iterator[Stack]:
    stack = Stack(db_url, dir, **kw)
    try:
        yield stack
    except BaseException:
        print(stack.logs())
        raise
    finally:
        stack.stop()


@contextlib.contextmanager
def stopped(stack: Stack, host: str) -> Iterator[None]:
    """The host's agent and its workers frozen (SIGSTOP), as a machine too busy to answer, then
    continued, whatever happens inside."""
    agent = stack.procs[f"agent-{host}"].popen
    assert agent is not None
    os.killpg(agent.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(agent.pid, signal.SIGCONT)
