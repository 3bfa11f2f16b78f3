"""The processes of a local fleet (``fleetyard up``): what to start, and a supervisor that keeps them up.

``fleet_plan`` is pure; :class:`Supervisor` starts each child as ``python -m fleetyard …`` with its
own log file, restarts a child that dies (with backoff), and stops them all in order: agents
first (they may still report to the server), then the controller, then the server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from fleetyard.config import write_private_text
from fleetyard.parent_death import die_with_parent

GENERATIONS = ("sim-g1", "sim-g2", "sim-g3")

ReportFn = Callable[[str], None]


@dataclass(frozen=True)
class ChildSpec:
    """One program of the fleet: its name, argv, extra environment and log file."""

    name: str
    argv: tuple[str, ...]
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    stop_order: int = 0  # lower stops first


def host_names(n: int) -> list[str]:
    width = max(2, len(str(n)))
    return [f"host-{i:0{width}d}" for i in range(1, n + 1)]


def host_generation(index: int) -> str:
    """Hosts cycle through the simulated generations, so every fleet of 3+ hosts has all three."""
    return GENERATIONS[index % len(GENERATIONS)]


def agent_token_file(data_dir: Path, host: str) -> Path:
    """Where a local fleet keeps the token of its agent of ``host`` (in the agent's state dir)."""
    return data_dir / "agents" / host / "token"


def write_agent_tokens(data_dir: Path, agent_tokens: dict[str, str]) -> None:
    """Write each agent's token to its :func:`agent_token_file`, readable by this user only."""
    for host, token in agent_tokens.items():
        path = agent_token_file(data_dir, host)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_private_text(path, token + "\n")


def fleet_plan(
    *,
    data_dir: Path,
    db_url: str,
    port: int,
    boards_per_host: int,
    agent_tokens: dict[str, str],
    cpu_host: str | None = None,
    python: str = sys.executable,
) -> list[ChildSpec]:
    """The children of a local fleet. ``agent_tokens`` maps each host name, in order, to its token."""
    logs = data_dir / "logs"
    base = (python, "-m", "fleetyard")
    server_url = f"http://127.0.0.1:{port}"
    plan = [
        ChildSpec(
            name="server",
            argv=(*base, "server", "--db", db_url, "--data-dir", str(data_dir), "--port", str(port)),
            log=logs / "server.log",
            stop_order=2,
        ),
        ChildSpec(
            name="controller",
            argv=(*base, "controller", "--db", db_url, "--data-dir", str(data_dir)),
            log=logs / "controller.log",
            stop_order=1,
        ),
    ]
    for i, host in enumerate(agent_tokens):
        driver = "cpu" if host == cpu_host else f"sim:{boards_per_host}:{host_generation(i)}"
        plan.append(
            ChildSpec(
                name=host,
                argv=(
                    *base,
                    "agent",
                    "--server",
                    server_url,
                    "--driver",
                    driver,
                    "--host",
                    host,
                    "--state-dir",
                    str(data_dir / "agents" / host),
                    # The secret travels in a file of the agent's (written by write_agent_tokens),
                    # not in argv, which `ps` shows everyone, nor in an environment its ranks inherit.
                    "--token-file",
                    str(agent_token_file(data_dir, host)),
                ),
                log=logs / f"{host}.log",
            )
        )
    return plan


@dataclass
class Child:
    spec: ChildSpec
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    backoff_s: float = 1.0
    restart_at: float | None = None
    _log: IO[bytes] | None = None

    def start(self) -> None:
        self.spec.log.parent.mkdir(parents=True, exist_ok=True)
        if self._log is None:
            self._log = self.spec.log.open("ab")
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        self._log.write(f"\n=== fleetyard up: starting {self.spec.name} at {stamp} ===\n".encode())
        self._log.flush()
        # Log files want plain tracebacks, not ones drawn for an 80-column terminal.
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TYPER_STANDARD_TRACEBACK": "1", **self.spec.env}
        self.proc = subprocess.Popen(
            self.spec.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            # Its own session: the terminal's Ctrl-C reaches only `up`, which stops children in order.
            start_new_session=True,
            # If `fleetyard up` is killed outright, its children get SIGTERM instead of living on as
            # orphans holding the port.
            preexec_fn=die_with_parent(signal.SIGTERM),
        )
        self.started_at = time.monotonic()
        self.restart_at = None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.spec.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.rstrip().splitlines()[-lines:])


class Supervisor:
    """Starts, watches, restarts and stops the children of a local fleet."""

    MAX_BACKOFF_S = 30.0
    HEALTHY_AFTER_S = 60.0  # a child that ran this long starts its backoff afresh

    def __init__(self, plan: list[ChildSpec]) -> None:
        self.children = [Child(spec) for spec in plan]

    def start_all(self) -> None:
        for child in self.children:
            child.start()

    def dead(self) -> list[Child]:
        """Children that exited and are not yet scheduled for a restart."""
        return [c for c in self.children if c.proc is not None and not c.alive and c.restart_at is None]

    def tick(self, report: ReportFn) -> None:
        """Notice children that died, and restart those whose backoff has passed."""
        now = time.monotonic()
        for child in self.dead():
            assert child.proc is not None
            if now - child.started_at >= self.HEALTHY_AFTER_S:
                child.backoff_s = 1.0
            child.restart_at = now + child.backoff_s
            report(
                f"{child.spec.name} exited unexpectedly (code {child.proc.returncode}); "
                f"restarting in {child.backoff_s:.0f}s. Its log: {child.spec.log}"
            )
            child.backoff_s = min(child.backoff_s * 2, self.MAX_BACKOFF_S)
        for child in self.children:
            if child.restart_at is not None and now >= child.restart_at:
                child.restarts += 1
                child.start()
                report(f"{child.spec.name} restarted (restart #{child.restarts})")

    def stop_all(self, report: ReportFn | None = None, grace_s: float = 10.0) -> None:
        """SIGTERM each group in stop order, SIGKILL what outlives the grace, close the logs."""
        for order in sorted({c.spec.stop_order for c in self.children}):
            group = [c for c in self.children if c.spec.stop_order == order and c.alive]
            for child in group:
                # Only the program itself: it stops its own workers the way it knows best.
                _signal(child, signal.SIGTERM, group=False)
            deadline = time.monotonic() + grace_s
            while any(c.alive for c in group) and time.monotonic() < deadline:
                time.sleep(0.05)
            for child in group:
                if child.alive and report is not None:
                    report(f"{child.spec.name} did not stop within {grace_s:.0f}s of SIGTERM; killed it")
                # Whatever is left of its process group (orphaned workers) goes too.
                _signal(child, signal.SIGKILL, group=True)
            for child in group:
                if child.proc is not None:
                    child.proc.wait()
        for child in self.children:
            child.close_log()


def _signal(child: Child, sig: signal.Signals, *, group: bool) -> None:
    assert child.proc is not None
    try:
        if group:
            # The child leads its own process group: its worker processes get the signal too.
            os.killpg(child.proc.pid, sig)
        else:
            child.proc.send_signal(sig)
    except (ProcessLookupError, PermissionError):
        pass
