"""``fleetyard up``: a whole fleet on this machine, in one command.

It prepares the data dir (store, tokens, client config), starts the server, the controller and
one simulated agent per host as child processes, waits until they answer, and then supervises
them until Ctrl-C, SIGTERM or ``--exit-after``.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import entry_points
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from fleetyard.cli._common import DEFAULT_DATA_DIR, db_url
from fleetyard.cli._data_dir import ENV_FLEET_PID, holding
from fleetyard.cli._fleet import GENERATIONS, Child, Supervisor, fleet_plan, host_names, write_agent_tokens
from fleetyard.cli._output import err, note
from fleetyard.cli.processes import check_port_free
from fleetyard.config import ENV_SERVER, config_path, write_client_config, write_private_text
from fleetyard.domain.auth import Role
from fleetyard.errors import Conflict, FleetyardError

CPU_HOST = "host-cpu"
SECRETS_FILE = "secrets.json"  # the tokens `up` made, so that a second `up` reuses them


class _Stop(BaseException):
    """SIGTERM or SIGHUP: unwind like Ctrl-C (a BaseException, so no `except Exception` eats it)."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop


def has_cpu_driver() -> bool:
    """Whether a ``cpu`` driver is installed (looked up, never imported)."""
    return bool(entry_points(group="fleetyard.drivers", name="cpu"))


def ensure_tokens(url: str, data_dir: Path, hosts: list[str]) -> tuple[str, dict[str, str]]:
    """The admin token and one agent token per host, made in the store or reused from a last run."""
    from fleetyard.store.tokens import create_token

    path = data_dir / SECRETS_FILE
    saved: dict[str, str] = {}
    if path.exists():
        try:
            saved = {str(k): str(v) for k, v in json.loads(path.read_text()).items()}
        except (ValueError, AttributeError):
            saved = {}

    def token(name: str, role: Role, host: str | None = None) -> str:
        try:
            secret = create_token(url, name=name, role=role, host=host)
        except Conflict:
            if name in saved:
                return saved[name]
            # The name exists but its secret is lost (the secrets file was deleted): a fresh name.
            secret = create_token(url, name=f"{name}-{secrets.token_hex(3)}", role=role, host=host)
        saved[name] = secret
        return secret

    admin = token("admin", Role.ADMIN)
    agents = {host: token(f"agent-{host}", Role.AGENT, host=host) for host in hosts}
    write_private_text(path, json.dumps(saved, indent=2) + "\n")
    return admin, agents


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


@contextmanager
def _restored(config: Path, before: str | None, ours: str | None) -> Iterator[None]:
    """The client config as it was before this fleet, once the fleet stops: the commands then
    talk to the fleet they did before (or say that none is set), not to one that is gone. A config
    someone changed meanwhile is theirs and stays."""
    try:
        yield
    finally:
        if before != ours and _read(config) == ours:
            if before is None:
                config.unlink(missing_ok=True)
            else:
                write_private_text(config, before)


def _check_children(sup: Supervisor, what: str) -> None:
    dead: list[Child] = [c for c in sup.children if c.proc is not None and not c.alive]
    if dead:
        c = dead[0]
        assert c.proc is not None
        raise FleetyardError(
            f"{c.spec.name} exited with code {c.proc.returncode} while {what}; "
            f"the end of its log ({c.spec.log}):\n{c.log_tail()}"
        )


def wait_until_ready(sup: Supervisor, server: str, token: str, hosts: list[str], timeout_s: float) -> None:
    """Wait for /readyz and for every host to register, showing progress; fail fast on a dead child."""
    from fleetyard.client import Client

    t0 = time.time()
    deadline = time.monotonic() + timeout_s
    with Client(server=server, token=token, timeout=5) as fy, err().status("starting the server…") as status:
        while not fy.ready():
            _check_children(sup, "the server was starting")
            if time.monotonic() > deadline:
                raise FleetyardError(
                    f"the server did not become ready in {timeout_s:.0f}s; see {sup.children[0].spec.log}"
                )
            time.sleep(0.2)
        expected = set(hosts)
        while True:
            _check_children(sup, "the fleet was starting")
            # A host from an earlier run is in the store already: count only fresh registrations.
            fresh = {
                h.id
                for h in fy.hosts()
                if h.state != "offline" and max(h.registered_at, h.last_heartbeat_at or 0) >= t0 - 1
            }
            ready = expected & fresh
            status.update(f"waiting for hosts to register: {len(ready)}/{len(expected)}")
            if ready == expected:
                return
            if time.monotonic() > deadline:
                missing = ", ".join(sorted(expected - ready))
                logs = sup.children[0].spec.log.parent
                raise FleetyardError(f"hosts did not register in {timeout_s:.0f}s: {missing}; see their logs in {logs}")
            time.sleep(0.3)


def _banner(server: str, data_dir: Path, config: Path, hosts: int, boards: int, cpu: bool) -> None:
    gens = ", ".join(GENERATIONS[: min(hosts, len(GENERATIONS))])
    cpu_line = f" + {CPU_HOST} (this machine's CPU)" if cpu else ""
    c = err()
    c.print(f"\n[bold green]Fleetyard is up:[/] {hosts} hosts x {boards} simulated boards ({gens}){cpu_line}")
    c.print(f"  API          {server}/v1", highlight=False)
    c.print(f"  API docs     {server}/docs", highlight=False)
    c.print(f"  data dir     {data_dir}   (logs in {data_dir / 'logs'})", highlight=False)
    c.print(f"  config       {config}   (server and admin token for the CLI)", highlight=False)
    c.print(f"  ranks        {_sandbox_line()}", highlight=False, markup=True)
    env_server = os.environ.get(ENV_SERVER)
    if env_server and env_server.rstrip("/") != server:
        c.print(f"  [yellow]note: FLEETYARD_SERVER={env_server} overrides the config in this shell[/]")
    c.print("\nTry:", highlight=False)
    for example in (
        "fleetyard hosts ls",
        "fleetyard boards ls --gen sim-g2",
        "fleetyard run --boards 2 --gen sim-g1 -- sh -c 'echo rank $FLEETYARD_RANK on $FLEETYARD_DEVICE'",
        "fleetyard jobs submit examples/gang.yaml --wait",
        "fleetyard jobs ls",
    ):
        c.print(f"  {example}", style="cyan", markup=False, highlight=False)
    c.print("\nCtrl-C stops the fleet.", style="dim")


def _sandbox_line() -> str:
    """How the agents will confine ranks (their --sandbox auto), said once where the user looks."""
    from rich.markup import escape

    from fleetyard.workloads.sandbox import FIRST_RANK_UID, choose_backend, python_unreadable

    backend = choose_backend("auto")
    if backend == "none":
        return "[yellow]unsandboxed: they run as you, and can read what you can (run as root to sandbox them)[/]"
    line = f"sandboxed ({backend}): an unprivileged uid per board slot, a scrubbed environment"
    unreadable = python_unreadable(FIRST_RANK_UID)
    if unreadable is not None:
        line += f"\n               [yellow]but run/validate/eval jobs run as you: {escape(unreadable)}[/]"
    return line


@contextmanager
def _signals() -> Iterator[None]:
    previous = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    # Ctrl-C stops the fleet, even where `up` was started with SIGINT ignored (a background job of
    # a shell without job control inherits that, and Python then leaves it ignored): the fleet
    # would otherwise outlive the session that asked it to stop.
    previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def _shielded() -> Iterator[None]:
    """While stopping: a second Ctrl-C or SIGTERM must not leave children half-stopped."""
    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, lambda s, f: note("still stopping…")) for sig in sigs}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def up(
    data_dir: Annotated[
        Path, typer.Option("--data-dir", help="Folder for the store, blobs, logs, tokens.")
    ] = DEFAULT_DATA_DIR,
    hosts: Annotated[int, typer.Option("--hosts", min=1, max=512, help="Simulated hosts.")] = 8,
    boards_per_host: Annotated[int, typer.Option("--boards-per-host", min=1, max=256)] = 8,
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="The API's port on 127.0.0.1.")] = 8600,
    exit_after: Annotated[
        float | None,
        typer.Option(
            "--exit-after",
            min=0,
            help="Stop after serving this many seconds (counted once the fleet is up and any demo is done).",
        ),
    ] = None,
    demo: Annotated[bool, typer.Option("--demo", help="Run the example jobs and show their results.")] = False,
    start_timeout: Annotated[float, typer.Option("--start-timeout", hidden=True)] = 180.0,
) -> None:
    """Start a local fleet: server, controller and simulated hosts, on SQLite in --data-dir.

    It writes the client config, so the other commands work at once, and puts the previous one
    back when it stops. One fleet per data dir: a second `up` (or a server or controller) on a
    data dir a fleet runs on is refused, naming it. Ctrl-C stops it. With --demo it also runs
    the jobs in examples/ and exits 1 at the end if one of them failed.
    """
    data_dir = data_dir.expanduser().resolve()
    os.umask(0o077)  # the database, logs and tokens are this user's alone (the children inherit it)
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    with holding(data_dir, what="fleetyard up", port=port, alone=True):
        _up(data_dir, hosts, boards_per_host, port, exit_after, demo, start_timeout)


def _up(
    data_dir: Path,
    hosts: int,
    boards_per_host: int,
    port: int,
    exit_after: float | None,
    demo: bool,
    start_timeout: float,
) -> None:
    check_port_free("127.0.0.1", port)
    server = f"http://127.0.0.1:{port}"

    from fleetyard.store.migrate import upgrade

    url = db_url(None, data_dir)
    with err().status("preparing the store…"):
        upgrade(url)
        names = host_names(hosts)
        cpu = has_cpu_driver()
        admin, agent_tokens = ensure_tokens(url, data_dir, [*names, CPU_HOST] if cpu else names)
    before = _read(config_path())
    config = write_client_config(server, admin)
    ours = _read(config)
    write_agent_tokens(data_dir, agent_tokens)
    plan = fleet_plan(
        data_dir=data_dir,
        db_url=url,
        port=port,
        boards_per_host=boards_per_host,
        agent_tokens=agent_tokens,
        cpu_host=CPU_HOST if cpu else None,
    )
    sup = Supervisor(plan)
    code = 0
    os.environ[ENV_FLEET_PID] = str(os.getpid())  # its server and controller run inside its hold
    with _signals(), _restored(config, before, ours):
        try:
            sup.start_all()
            wait_until_ready(sup, server, admin, list(agent_tokens), start_timeout)
            _banner(server, data_dir, config, hosts, boards_per_host, cpu)
            if demo:
                from fleetyard.cli._demo import find_examples, run_demo
                from fleetyard.client import Client

                with Client(server=server, token=admin) as fy:
                    code = 0 if run_demo(fy, find_examples()) else 1
                err().print("The fleet keeps serving; Ctrl-C stops it.", style="dim")
            deadline = None if exit_after is None else time.monotonic() + exit_after
            while deadline is None or time.monotonic() < deadline:
                sup.tick(lambda msg: note(msg, style="yellow"))
                time.sleep(0.2)
        except (KeyboardInterrupt, _Stop):
            pass
        finally:
            with _shielded(), err().status("stopping the fleet…"):
                sup.stop_all(lambda msg: note(msg, style="yellow"))
    note("fleet stopped")
    raise typer.Exit(code)
