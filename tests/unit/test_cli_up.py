"""``fleetyard up``: its plan of processes, its supervisor, and its refusal of a busy port."""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fleetyard.cli._fleet import ChildSpec, Supervisor, fleet_plan, host_generation, host_names
from fleetyard.cli.main import app
from fleetyard.cli.processes import redact_url


def test_host_names_sort_as_numbers() -> None:
    assert host_names(3) == ["host-01", "host-02", "host-03"]
    names = host_names(120)
    assert names[0] == "host-001" and names == sorted(names)


def test_hosts_cycle_through_the_generations() -> None:
    assert [host_generation(i) for i in range(5)] == ["sim-g1", "sim-g2", "sim-g3", "sim-g1", "sim-g2"]


def test_the_plan_starts_server_controller_and_one_agent_per_host(tmp_path: Path) -> None:
    tokens = {"host-01": "s1", "host-02": "s2", "host-cpu": "s3"}
    plan = fleet_plan(
        data_dir=tmp_path,
        db_url="sqlite:///x.db",
        port=8611,
        boards_per_host=4,
        agent_tokens=tokens,
        cpu_host="host-cpu",
        python="py",
    )
    by_name = {c.name: c for c in plan}
    assert list(by_name) == ["server", "controller", "host-01", "host-02", "host-cpu"]
    assert by_name["server"].argv[:4] == ("py", "-m", "fleetyard", "server")
    assert "8611" in by_name["server"].argv
    agent = by_name["host-02"]
    argv = list(agent.argv)
    assert argv[argv.index("--driver") + 1] == "sim:4:sim-g2"
    assert argv[argv.index("--server") + 1] == "http://127.0.0.1:8611"
    assert argv[argv.index("--state-dir") + 1] == str(tmp_path / "agents" / "host-02")
    assert list(by_name["host-cpu"].argv)[argv.index("--driver") + 1] == "cpu"
    # Secrets go through a file of the agent's, never argv (which `ps` shows to everyone) nor the
    # environment (which its ranks would inherit).
    assert argv[argv.index("--token-file") + 1] == str(tmp_path / "agents" / "host-02" / "token")
    assert all(c.env == {} for c in plan)
    assert all("s2" not in a for c in plan for a in c.argv)
    assert {c.log for c in plan} == {tmp_path / "logs" / f"{c.name}.log" for c in plan}
    # Agents stop first, then the controller, then the server.
    assert agent.stop_order < by_name["controller"].stop_order < by_name["server"].stop_order


def _child(tmp_path: Path, name: str, code: str, order: int = 0) -> ChildSpec:
    return ChildSpec(name=name, argv=(sys.executable, "-c", code), log=tmp_path / f"{name}.log", stop_order=order)


@pytest.fixture
def sup(tmp_path: Path) -> Iterator[Supervisor]:
    s = Supervisor(
        [
            _child(tmp_path, "steady", "import time; time.sleep(60)", order=1),
            _child(tmp_path, "flaky", "print('dying'); raise SystemExit(3)"),
            # Ignores SIGTERM: only the SIGKILL after the grace stops it.
            _child(
                tmp_path,
                "stubborn",
                "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)",
            ),
        ]
    )
    yield s
    s.stop_all(grace_s=0.5)


def test_a_dead_child_is_reported_and_restarted(sup: Supervisor, tmp_path: Path) -> None:
    sup.start_all()
    flaky = sup.children[1]
    assert flaky.proc is not None
    flaky.proc.wait(timeout=10)
    messages: list[str] = []
    sup.tick(messages.append)
    assert "flaky exited unexpectedly (code 3)" in messages[0] and str(tmp_path / "flaky.log") in messages[0]
    deadline = time.monotonic() + 5
    while flaky.restarts == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
        sup.tick(messages.append)
    assert flaky.restarts == 1 and "flaky restarted" in messages[-1]
    assert (tmp_path / "flaky.log").read_text().count("dying") >= 1
    assert "code 3" not in "".join(m for m in messages if "steady" in m)


def test_stop_all_stops_everyone_even_the_stubborn(sup: Supervisor) -> None:
    sup.start_all()
    time.sleep(0.3)
    t0 = time.monotonic()
    sup.stop_all(grace_s=0.5)
    assert all(not c.alive for c in sup.children)
    assert time.monotonic() - t0 < 15  # the stubborn child sleeps 60 s: it was killed


def test_up_refuses_a_busy_port_and_names_the_fix(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        result = CliRunner().invoke(app, ["up", "--port", str(port), "--data-dir", str(tmp_path / "d")])
    assert result.exit_code == 1
    assert f"port {port}" in result.stderr and "--port" in result.stderr
    assert "Traceback" not in result.output


def test_server_refuses_a_busy_port_before_starting(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        result = CliRunner().invoke(
            app, ["server", "--port", str(port), "--db", "sqlite:///x.db", "--data-dir", str(tmp_path)]
        )
    assert result.exit_code == 1 and "already in use" in result.stderr


def test_store_passwords_are_not_printed() -> None:
    assert redact_url("postgresql://fy:hunter2@db:5432/fy") == "postgresql://fy:***@db:5432/fy"
    assert redact_url("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"


def test_agent_tokens_are_written_for_their_agent_only(tmp_path: Path) -> None:
    from fleetyard.cli._fleet import agent_token_file, write_agent_tokens

    write_agent_tokens(tmp_path, {"host-01": "fy_one", "host-02": "fy_two"})
    for host, token in (("host-01", "fy_one"), ("host-02", "fy_two")):
        path = agent_token_file(tmp_path, host)
        assert path.read_text().strip() == token
        assert path.stat().st_mode & 0o777 == 0o600
        assert path.parent.stat().st_mode & 0o077 == 0


def test_the_agent_refuses_a_token_file_others_can_read(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from fleetyard.cli.main import app

    path = tmp_path / "token"
    path.write_text("fy_secret\n")
    path.chmod(0o644)
    wide = {"COLUMNS": "400"}  # the error's box does not wrap the path
    r = CliRunner().invoke(app, ["agent", "--server", "http://127.0.0.1:9", "--token-file", str(path)], env=wide)
    assert r.exit_code == 2
    assert "readable by others (mode 644)" in r.output and f"chmod 600 {path}" in r.output
    r = CliRunner().invoke(app, ["agent", "--server", "http://127.0.0.1:9"], env={"FLEETYARD_AGENT_TOKEN": "", **wide})
    assert r.exit_code == 2 and "--token-file" in r.output


def test_up_says_whether_ranks_run_sandboxed(monkeypatch: pytest.MonkeyPatch) -> None:
    from fleetyard.cli.up import _sandbox_line

    monkeypatch.setattr("os.geteuid", lambda: 1000)
    assert _sandbox_line().startswith("[yellow]unsandboxed: they run as you")
    monkeypatch.setattr("os.geteuid", lambda: 0)
    monkeypatch.setattr("fleetyard.workloads.sandbox.bwrap_runs", lambda: False)
    assert _sandbox_line().startswith("sandboxed (uid)")
