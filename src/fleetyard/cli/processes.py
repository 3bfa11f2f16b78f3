"""The long-running programs: ``fleetyard server``, ``controller``, ``agent``, and ``db upgrade``.

Each imports its implementation only when run, so that ``fleetyard --help`` stays fast and the
client commands never load the server's dependencies.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from fleetyard.cli._common import (
    DEFAULT_DATA_DIR,
    DataDirOpt,
    DbOpt,
    RootGroup,
    db_url,
    parse_labels,
    read_health_config,
)
from fleetyard.cli._data_dir import holding
from fleetyard.cli._output import note, print_error
from fleetyard.errors import FleetyardError, StoreUnavailable
from fleetyard.policy.liveness import HOST_TIMEOUT_S, UNREACHABLE_AFTER_S, HostBrake, Liveness
from fleetyard.store.outage import DEFAULT_OUTAGE_S, EXIT_STORE_UNAVAILABLE

db_app = typer.Typer(help="The store: migrations.", no_args_is_help=True)

StoreTimeoutOpt = Annotated[
    float,
    typer.Option(
        "--store-timeout",
        min=1.0,
        help="Seconds to ride out an unavailable store (retrying; the server answers 503) before"
        f" giving up with exit code {EXIT_STORE_UNAVAILABLE}.",
    ),
]


@contextlib.contextmanager
def _gives_up_on_the_store() -> Iterator[None]:
    """A program that gave up waiting for the store says why and exits EX_TEMPFAIL (a service
    manager restarts it; an operator sees it)."""
    try:
        yield
    except StoreUnavailable as exc:
        print_error(exc)
        raise typer.Exit(EXIT_STORE_UNAVAILABLE) from None


def redact_url(url: str) -> str:
    """A store URL fit to print: the password hidden."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def check_port_free(host: str, port: int) -> None:
    """Fail with the fix named when something already listens on ``host:port``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # As uvicorn does: a port in TIME_WAIT is free, one with a listener is not.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise FleetyardError(
                    f"port {port} on {host} is already in use (another `fleetyard up` or server?); "
                    f"stop it, or choose another port with --port, e.g. --port {port + 1}",
                    detail={"host": host, "port": port},
                ) from None
            raise FleetyardError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def _stop_on_sigterm() -> None:
    # SIGTERM (from `fleetyard up`, systemd, Kubernetes) unwinds like Ctrl-C, so finally-blocks run.
    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def server(
    db: DbOpt = None,
    data_dir: DataDirOpt = DEFAULT_DATA_DIR,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8600,
    max_blob_mb: Annotated[int, typer.Option("--max-blob-mb", min=1, help="Largest blob accepted, MiB.")] = 512,
    heartbeat_interval: Annotated[
        float, typer.Option("--heartbeat-interval", min=0.1, help="Seconds between agent heartbeats.")
    ] = 2.0,
    workers: Annotated[
        int,
        typer.Option(
            "--workers", min=1, max=64, envvar="FLEETYARD_SERVER_WORKERS", help="Server processes on this port."
        ),
    ] = 1,
    store_timeout: StoreTimeoutOpt = DEFAULT_OUTAGE_S,
) -> None:
    """Run the API server (FastAPI under /v1; OpenAPI at /openapi.json, browsable at /docs)."""
    check_port_free(host, port)
    _private_files()
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    url = db_url(db, data_dir)
    from fleetyard.server.app import serve

    try:
        with _holds_sqlite(url, data_dir, what="fleetyard server", port=port), _gives_up_on_the_store():
            serve(
                db_url=url,
                host=host,
                port=port,
                blob_dir=data_dir / "blobs",
                max_blob_bytes=max_blob_mb * 1024 * 1024,
                heartbeat_interval_s=heartbeat_interval,
                workers=workers,
                store_outage_s=store_timeout,
            )
    except KeyboardInterrupt:
        pass


def controller(
    db: DbOpt = None,
    data_dir: DataDirOpt = DEFAULT_DATA_DIR,
    host_unreachable: Annotated[
        float,
        typer.Option(
            "--host-unreachable",
            min=0.1,
            help="Seconds without a heartbeat before a host is unreachable: it gets no new work, nothing"
            " else changes (default: 3 missed heartbeats of the server's --heartbeat-interval, and 1 s).",
        ),
    ] = UNREACHABLE_AFTER_S,
    host_timeout: Annotated[
        float,
        typer.Option(
            "--host-timeout",
            min=0.1,
            help="Seconds without a heartbeat before a host is lost: its boards go offline and its work"
            " runs elsewhere.",
        ),
    ] = HOST_TIMEOUT_S,
    host_brake_share: Annotated[
        float,
        typer.Option(
            "--host-brake-share",
            min=0.01,
            max=0.99,
            help="More than this share of the hosts silent together (within --host-brake-window) is a network or"
            " control-plane fault: no host is lost and no board taken out until they answer or an operator"
            " resets the control-plane breaker (fleetyard fleet reset-breaker control-plane).",
        ),
    ] = 0.10,
    host_brake_window: Annotated[
        float, typer.Option("--host-brake-window", min=1.0, help="Seconds within which silences count as together.")
    ] = 60.0,
    tick: Annotated[float, typer.Option("--tick", min=0.001, help="Seconds between reconcile passes.")] = 0.02,
    slow_tick: Annotated[
        float | None,
        typer.Option(
            "--slow-tick",
            min=0.05,
            help="Seconds between the slower passes: host liveness, health and healing, onboarding,"
            " rollouts, pipelines, leases. Each step of a rollout or a remediation waits for one (default 1).",
        ),
    ] = None,
    health: Annotated[
        Path | None,
        typer.Option(
            "--health",
            help="Health checks and remediation per generation (YAML; see examples/config/health.yaml).",
        ),
    ] = None,
    half_life: Annotated[
        float,
        typer.Option("--fair-share-half-life", min=1.0, help="Seconds for a queue's past usage to count half."),
    ] = 7 * 24 * 3600.0,
    preempt_protect: Annotated[
        float,
        typer.Option(
            "--preempt-protect",
            min=0.0,
            help="Seconds a job preempted before may run again before it can be preempted again.",
        ),
    ] = 600.0,
    max_preemptions: Annotated[
        int,
        typer.Option("--max-preemptions", min=1, help="Times a job may be preempted; then it runs to its end."),
    ] = 2,
    store_timeout: StoreTimeoutOpt = DEFAULT_OUTAGE_S,
) -> None:
    """Run the controller: scheduling and host-loss handling (one leader; others wait as standbys)."""
    try:
        liveness = Liveness(unreachable_after_s=host_unreachable, lost_after_s=host_timeout)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--host-timeout'") from None
    brake = HostBrake(share=host_brake_share, window_s=host_brake_window)
    _private_files()
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    url = db_url(db, data_dir)
    from fleetyard.controller.loop import run_controller

    note(f"fleetyard controller (store {redact_url(url)})")
    _stop_on_sigterm()
    try:
        # The leader lock lives beside the SQLite file (or is a PostgreSQL advisory lock).
        with _holds_sqlite(url, data_dir, what="fleetyard controller"), _gives_up_on_the_store():
            run_controller(
                db_url=url,
                liveness=liveness,
                host_brake=brake,
                tick_s=tick,
                slow_tick_s=slow_tick,
                health=read_health_config(health),
                half_life_s=half_life,
                preempt_protect_s=preempt_protect,
                max_preemptions=max_preemptions,
                store_outage_s=store_timeout,
            )
    except KeyboardInterrupt:
        pass


def agent(
    server: Annotated[
        str,
        typer.Option(
            "--server",
            envvar="FLEETYARD_SERVER",
            help="The server's URL; several replicas separated by commas: a request one cannot answer"
            " goes to the next.",
        ),
    ],
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="FLEETYARD_AGENT_TOKEN",
            help="This host's agent token (visible to `ps` on the command line: prefer --token-file).",
            show_default=False,
        ),
    ] = None,
    token_file: Annotated[
        Path | None,
        typer.Option(
            "--token-file",
            envvar="FLEETYARD_AGENT_TOKEN_FILE",
            help="A file holding this host's agent token, readable by the agent's user only (chmod 600).",
        ),
    ] = None,
    driver: Annotated[str, typer.Option("--driver", help="Driver spec, e.g. sim:8, sim:8:sim-g2, cpu.")] = "sim:8",
    host: Annotated[str | None, typer.Option("--host", help="Host name (default: this machine's)")] = None,
    state_dir: Annotated[
        Path | None, typer.Option("--state-dir", help="Agent state (default: .fleetyard/agents/HOST)")
    ] = None,
    label: Annotated[list[str] | None, typer.Option("--label", help="Host label KEY=VALUE (repeat).")] = None,
    sandbox: Annotated[
        str,
        typer.Option(
            "--sandbox",
            help="How ranks are confined: uid (their own uid per board slot; needs root), none (as the"
            " agent's user), auto (uid when root, else none).",
        ),
    ] = "auto",
    rank_dir: Annotated[
        Path | None,
        typer.Option("--rank-dir", help="Where the uid sandbox makes ranks' private dirs (default: a tmp dir)."),
    ] = None,
    rank_memory_mb: Annotated[
        int | None,
        typer.Option(
            "--rank-memory-mb",
            min=16,
            help="Memory one board's ranks may use (uid sandbox; default: 80 percent of the host's, split per board).",
        ),
    ] = None,
    rank_cpus: Annotated[
        float | None,
        typer.Option("--rank-cpus", min=0.01, help="CPUs one board's ranks may use (uid sandbox; default: all)."),
    ] = None,
) -> None:
    """Run the host agent: register, heartbeat, take assignments and run them on this host's boards."""
    # Nothing the agent starts (workers, ranks) inherits its credential.
    os.environ.pop("FLEETYARD_AGENT_TOKEN", None)
    _private_files()
    secret = _agent_token(token, token_file)
    host = host or socket.gethostname()
    state = state_dir or DEFAULT_DATA_DIR / "agents" / host
    state.mkdir(parents=True, exist_ok=True)
    labels = parse_labels(label)
    from fleetyard.agent.daemon import run_agent
    from fleetyard.agent.link import server_urls
    from fleetyard.workloads.sandbox import SandboxError

    urls = server_urls(server) if server.strip(" ,") else []
    bad = [u for u in urls if not u.startswith(("http://", "https://"))]
    if not urls or bad:
        what = ", ".join(bad) if bad else "nothing"
        raise typer.BadParameter(f"expected http(s):// URLs separated by commas, got {what}", param_hint="'--server'")
    note(f"fleetyard agent {host} ({driver}) → {', '.join(urls)}")
    _stop_on_sigterm()
    try:
        run_agent(
            server=server,
            token=secret,
            driver=driver,
            host=host,
            state_dir=state,
            labels=labels,
            sandbox=sandbox,
            rank_dir=rank_dir,
            rank_memory_mb=rank_memory_mb,
            rank_cpus=rank_cpus,
        )
    except SandboxError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--sandbox'") from None
    except KeyboardInterrupt:
        pass


def _holds_sqlite(
    url: str, data_dir: Path, *, what: str, port: int | None = None
) -> contextlib.AbstractContextManager[None]:
    """A program on the data dir's SQLite store shares the dir with its fleet's others, never with
    a running ``fleetyard up`` (:mod:`fleetyard.cli._data_dir`); on PostgreSQL it holds nothing."""
    if not url.startswith("sqlite"):
        return contextlib.nullcontext()
    return holding(data_dir, what=what, port=port)


def _private_files() -> None:
    """What the fleet's programs write (the SQLite database, blobs, logs, an agent's cache) is
    theirs alone: files 0600, dirs 0700, unless a program opens one up on purpose."""
    os.umask(0o077)


def _agent_token(token: str | None, token_file: Path | None) -> str:
    if token_file is None:
        if not token:
            raise typer.BadParameter("the agent's token: give --token-file (or --token)", param_hint="'--token-file'")
        return token
    try:
        st = token_file.stat()
        text = token_file.read_text().strip()
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {token_file}: {exc.strerror}", param_hint="'--token-file'") from None
    if st.st_mode & 0o077:
        raise typer.BadParameter(
            f"{token_file} is readable by others (mode {st.st_mode & 0o777:o}): chmod 600 {token_file}",
            param_hint="'--token-file'",
        )
    if not text:
        raise typer.BadParameter(f"{token_file} is empty", param_hint="'--token-file'")
    return text


@db_app.command("upgrade")
def upgrade(db: DbOpt = None, data_dir: DataDirOpt = DEFAULT_DATA_DIR) -> None:
    """Run the store's migrations up to the newest (servers also do this when they start)."""
    _private_files()
    if db is None:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    url = db_url(db, data_dir)
    from fleetyard.store.migrate import upgrade as run_upgrade

    run_upgrade(url)
    note(f"store {redact_url(url)} is up to date", style="green")


PROGRAMS = ("server", "controller", "agent", "db")


def add_programs(app: typer.Typer) -> None:
    """Register the long-running programs on ``app``."""
    app.command("server", rich_help_panel="Programs")(server)
    app.command("controller", rich_help_panel="Programs")(controller)
    app.command("agent", rich_help_panel="Programs")(agent)
    app.add_typer(db_app, name="db", rich_help_panel="Programs")


def programs_app() -> typer.Typer:
    """A ``fleetyard`` command of the programs alone: what a service manager runs starts without
    loading the client commands (and what they import: a second of a start on a busy host)."""
    app = typer.Typer(
        cls=RootGroup,
        name="fleetyard",
        add_completion=False,
        pretty_exceptions_show_locals=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    add_programs(app)
    return app
