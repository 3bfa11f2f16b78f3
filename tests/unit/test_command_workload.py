"""The command workload: exit codes, missing commands, stop, log batching, environment."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from fleetyard.domain.job import Outcome
from fleetyard.errors import BadRequest
from fleetyard.workloads.base import WorkloadContext, validate_params, workload_class
from fleetyard.workloads.command import CommandParams, CommandWorkload
from fleetyard.workloads.sandbox import Sandbox


class Ctx:
    """A WorkloadContext with its log captured and a stop switch."""

    def __init__(self, tmp_path: Path, params: dict[str, Any], env: dict[str, str] | None = None) -> None:
        self.chunks: list[tuple[float, str]] = []
        self.stop = False
        workdir = tmp_path / "work"
        workdir.mkdir(exist_ok=True)
        out = tmp_path / "out"
        out.mkdir(exist_ok=True)
        self.ctx = WorkloadContext(
            assignment_id=1,
            job_id=1,
            rank=0,
            world_size=1,
            board_id="SG1-TEST",
            device="sim:0",
            params=validate_params("command", params),
            time_limit_s=60,
            env=env or {},
            workdir=workdir,
            output_dir=out,
            log=lambda text: self.chunks.append((time.monotonic(), text)),
            should_stop=lambda: self.stop,
        )

    @property
    def text(self) -> str:
        return "".join(t for _, t in self.chunks)


def run(tmp_path: Path, params: dict[str, Any], **kw: Any) -> tuple[Any, Ctx]:
    c = Ctx(tmp_path, params, **kw)
    return CommandWorkload().run(c.ctx), c


def test_registered_under_its_kind() -> None:
    assert workload_class("command") is CommandWorkload
    assert CommandWorkload.kind == "command"


def test_params_validation() -> None:
    assert CommandParams(command="echo hi").argv() == ["/bin/sh", "-c", "echo hi"]
    assert CommandParams(command=["echo", "a b"]).argv() == ["echo", "a b"]
    assert CommandParams(command="echo 'a b'", shell=False).argv() == ["echo", "a b"]
    assert CommandParams(command=["echo", "a b"], shell=True).argv() == ["/bin/sh", "-c", "echo 'a b'"]
    with pytest.raises(BadRequest, match=r"params\.bogus"):
        validate_params("command", {"command": "true", "bogus": 1})
    with pytest.raises(BadRequest, match=r"params\.command"):
        validate_params("command", {"command": ""})
    with pytest.raises(BadRequest):
        validate_params("command", {"command": []})


def test_success_and_output(tmp_path: Path) -> None:
    result, c = run(tmp_path, {"command": "echo hello; echo err >&2"})
    assert result.outcome is Outcome.SUCCESS and result.exit_code == 0
    assert c.text == "hello\nerr\n"


def test_nonzero_exit_is_user_error(tmp_path: Path) -> None:
    result, c = run(tmp_path, {"command": ["sh", "-c", "echo boom; exit 3"]})
    assert result.outcome is Outcome.USER_ERROR and result.exit_code == 3
    assert "code 3" in (result.message or "")
    assert c.text == "boom\n"


def test_killed_by_signal(tmp_path: Path) -> None:
    result, _ = run(tmp_path, {"command": "kill -SEGV $$"})
    assert result.outcome is Outcome.USER_ERROR
    assert result.exit_code == 128 + 11 and "SIGSEGV" in (result.message or "")


def test_missing_command(tmp_path: Path) -> None:
    result, _ = run(tmp_path, {"command": ["no-such-program-xyz", "--flag"]})
    assert result.outcome is Outcome.USER_ERROR and result.exit_code == 127
    assert "command not found" in (result.message or "") and "no-such-program-xyz" in (result.message or "")
    result, c = run(tmp_path, {"command": "no-such-program-xyz"})
    assert result.outcome is Outcome.USER_ERROR and result.exit_code == 127
    assert "not found" in (result.message or "") and "not found" in c.text


def test_not_executable(tmp_path: Path) -> None:
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    result, _ = run(tmp_path, {"command": [str(script)]})
    assert result.outcome is Outcome.USER_ERROR and result.exit_code == 126


def test_missing_cwd(tmp_path: Path) -> None:
    result, _ = run(tmp_path, {"command": "true", "cwd": "nope"})
    assert result.outcome is Outcome.USER_ERROR and "nope" in (result.message or "")


def test_environment_and_workdir(tmp_path: Path) -> None:
    (tmp_path / "work" / "sub").mkdir(parents=True)
    result, c = run(
        tmp_path,
        {
            "command": 'echo "$FLEETYARD_DEVICE $A $B $PATH_SET"; pwd',
            "env": {"B": "from-params", "A": "params-wins"},
            "cwd": "sub",
        },
        env={"FLEETYARD_DEVICE": "sim:3", "A": "from-ctx", "PATH_SET": "${PATH:+yes}"},
    )
    assert result.outcome is Outcome.SUCCESS
    lines = c.text.splitlines()
    assert lines[0].split()[:3] == ["sim:3", "params-wins", "from-params"]
    assert lines[1] == str(tmp_path / "work" / "sub")
    # os.environ is inherited (PATH lets sh find echo at all)
    assert os.environ.get("PATH")


def test_the_environment_is_an_allow_list_never_the_agents(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "FLEETYARD_AGENT_TOKEN": "fy_secret_agent",
        "FLEETYARD_TOKEN": "fy_secret_user",
        "AWS_SECRET_ACCESS_KEY": "aws",
        "PGPASSWORD": "pg",
        "LANG": "C.UTF-8",
        "LC_TIME": "C",
        "TZ": "UTC",
    }.items():
        monkeypatch.setenv(name, value)
    result, c = run(
        tmp_path, {"command": "env", "env": {"MINE": "1"}}, env={"FLEETYARD_RANK": "0", "FLEETYARD_DEVICE": "sim:0"}
    )
    assert result.outcome is Outcome.SUCCESS
    env = dict(line.split("=", 1) for line in c.text.splitlines())
    assert "secret" not in c.text and "aws" not in c.text
    workdir = str(tmp_path / "work")
    assert env.pop("PWD") == workdir  # the shell's own
    assert env == {
        "PATH": os.environ["PATH"],
        "LANG": "C.UTF-8",
        "LC_TIME": "C",
        "TZ": "UTC",
        **({"TERM": os.environ["TERM"]} if "TERM" in os.environ else {}),
        "HOME": workdir,
        "TMPDIR": workdir,
        "FLEETYARD_RANK": "0",
        "FLEETYARD_DEVICE": "sim:0",
        "MINE": "1",
    }


@pytest.mark.parametrize(
    ("params", "names"),
    [
        ({"command": ["echo", "a\0b"]}, "argument 1 contains a NUL byte"),
        ({"command": "echo a\0b"}, "the command contains a NUL byte"),
        ({"command": "true", "env": {"A": "x\0y"}}, "env A contains a NUL byte"),
        ({"command": "true", "env": {"A=B": "x"}}, "env name 'A=B' cannot be set"),
        ({"command": "true", "env": {"": "x"}}, "env name '' cannot be set"),
        ({"command": "true", "cwd": "a\0"}, "cwd contains a NUL byte"),
    ],
)
def test_what_no_program_can_be_given_is_refused_at_submit(params: dict[str, Any], names: str) -> None:
    with pytest.raises(BadRequest, match=names):
        validate_params("command", params)


def test_a_spec_the_kernel_refuses_at_start_is_a_user_error(tmp_path: Path) -> None:
    """Past submit (an older server, a plugin that builds argv): Popen's ValueError is the spec's."""
    c = Ctx(tmp_path, {"command": "true"})
    c.ctx.params = CommandParams.model_construct(command=["echo", "a\0b"], env={}, shell=False, cwd=None)
    result = CommandWorkload().run(c.ctx)
    assert result.outcome is Outcome.USER_ERROR and "null byte" in (result.message or "")
    c.ctx.params = CommandParams.model_construct(command=["true"], env={"A=B": "x"}, shell=False, cwd=None)
    result = CommandWorkload().run(c.ctx)
    assert result.outcome is Outcome.USER_ERROR and "environment variable" in (result.message or "")
    # Under bwrap the program is looked for before bwrap starts: the same answer, and a missing one
    # is "command not found" (bwrap's own exit 1 would say nothing).
    c.ctx.sandbox = Sandbox("bwrap", 100_123)
    for bad in (["ec\0ho"], ["/bin/ec\0ho"]):
        c.ctx.params = CommandParams.model_construct(command=bad, env={}, shell=False, cwd=None)
        result = CommandWorkload().run(c.ctx)
        assert result.outcome is Outcome.USER_ERROR, result
    c.ctx.params = CommandParams.model_construct(command=["no-such-program-xyz"], env={}, shell=False, cwd=None)
    result = CommandWorkload().run(c.ctx)
    assert (result.outcome, result.exit_code) == (Outcome.USER_ERROR, 127)
    assert result.message == "command not found: 'no-such-program-xyz'"


def test_stop_kills_the_process_group(tmp_path: Path) -> None:
    marker = tmp_path / "child.pid"
    c = Ctx(tmp_path, {"command": f"sleep 30 & echo $! > {marker}; echo started; wait"})
    t0 = time.monotonic()

    def stop_soon() -> bool:
        c.stop = bool(c.chunks) or time.monotonic() - t0 > 20
        return c.stop

    c.ctx.should_stop = stop_soon
    result = CommandWorkload().run(c.ctx)
    assert time.monotonic() - t0 < 15  # stopped after its first line, not after its `sleep 30`
    assert result.outcome is Outcome.CANCELED
    child = int(marker.read_text())
    time.sleep(0.05)
    assert not _running(child)


def _running(pid: int) -> bool:
    """Whether a process exists and is not a zombie (an orphan's reaper may be slow here)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_stop_escalates_to_sigkill(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fleetyard.workloads.command as command

    monkeypatch.setattr(command, "KILL_GRACE_S", 0.3)
    c = Ctx(tmp_path, {"command": "trap '' TERM; echo ready; while :; do sleep 0.05; done"})
    c.ctx.should_stop = lambda: bool(c.chunks)
    t0 = time.monotonic()
    result = CommandWorkload().run(c.ctx)
    assert result.outcome is Outcome.CANCELED
    assert 0.25 < time.monotonic() - t0 < 10  # the grace, then SIGKILL (it ignores SIGTERM)


def test_background_child_holding_the_pipe_does_not_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fleetyard.workloads.command as command

    monkeypatch.setattr(command, "LINGER_S", 0.2)
    t0 = time.monotonic()
    result, _ = run(tmp_path, {"command": "sleep 30 & echo done"})
    assert result.outcome is Outcome.SUCCESS
    assert time.monotonic() - t0 < 15  # not the background `sleep 30`


def test_chatty_output_is_batched(tmp_path: Path) -> None:
    code = "import sys\nfor i in range(20000): print('line', i)\n"
    result, c = run(tmp_path, {"command": [sys.executable, "-c", code]})
    assert result.outcome is Outcome.SUCCESS
    lines = c.text.splitlines()
    assert len(lines) == 20000 and lines[-1] == "line 19999"
    assert len(c.chunks) < 60  # ~230 KB in 16 KiB chunks, not 20000 messages
    # Chunks end on line boundaries (a partial line goes out alone only if the writer stalls).
    assert sum(t.endswith("\n") for _, t in c.chunks) >= 0.8 * len(c.chunks)


def test_slow_output_is_flushed_promptly(tmp_path: Path) -> None:
    c = Ctx(tmp_path, {"command": "echo one; sleep 0.4; echo two"})
    CommandWorkload().run(c.ctx)
    assert [t for _, t in c.chunks] == ["one\n", "two\n"]
    assert c.chunks[1][0] - c.chunks[0][0] >= 0.3  # "one" went out before the sleep, not with "two"


def test_partial_utf8_is_not_split(tmp_path: Path) -> None:
    code = "import sys,time\nsys.stdout.buffer.write('é'.encode()[:1]); sys.stdout.flush(); time.sleep(0.15)\n"
    code += "sys.stdout.buffer.write('é'.encode()[1:] + b'\\n')\n"
    result, c = run(tmp_path, {"command": [sys.executable, "-c", code]})
    assert result.outcome is Outcome.SUCCESS
    assert c.text == "é\n"


def test_true_is_cheap(tmp_path: Path) -> None:
    c = Ctx(tmp_path, {"command": "true"})
    w = CommandWorkload()
    w.run(c.ctx)
    n = 50
    t0 = time.perf_counter()
    for _ in range(n):
        assert w.run(c.ctx).outcome is Outcome.SUCCESS
    per_run = (time.perf_counter() - t0) / n
    assert per_run < 0.05, per_run
