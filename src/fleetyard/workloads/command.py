"""The ``command`` job kind: run a program on the board's host, with the board's environment.

A string runs through ``/bin/sh -c``; a list is an argv run directly. The program runs in the
rank's sandbox (:mod:`fleetyard.workloads.sandbox`): its own uid where the agent has one for it,
and always a scrubbed environment. Output (stdout and stderr
merged) streams to the job's log in batches; a stop request kills the command's whole process
group, SIGTERM first and SIGKILL after :data:`KILL_GRACE_S`.
"""

from __future__ import annotations

import codecs
import os
import select
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fleetyard.domain.job import Outcome
from fleetyard.workloads.base import WorkloadContext, WorkloadResult, params_as
from fleetyard.workloads.rank_cgroup import address_space_limit
from fleetyard.workloads.sandbox import rank_env

__all__ = ["CommandParams", "CommandWorkload"]

FLUSH_INTERVAL_S = 0.05  # a log chunk waits at most this long
FLUSH_BYTES = 16 * 1024  # … or until this much is buffered
STOP_POLL_S = 0.1  # how often should_stop() is asked while the command is silent
KILL_GRACE_S = 2.0  # SIGTERM, then SIGKILL after this long
LINGER_S = 1.0  # how long a background child may hold the pipe open after the command exits


class CommandParams(BaseModel):
    """Parameters of a ``command`` job."""

    model_config = ConfigDict(extra="forbid")

    command: str | list[str] = Field(description="a shell command line, or an argv list")
    env: dict[str, str] = Field(default_factory=dict, description="extra environment variables")
    shell: bool | None = Field(None, description="run through /bin/sh -c; default: true for a string, false for a list")
    cwd: str | None = Field(None, description="working directory, relative to the rank's private workdir")

    @field_validator("command")
    @classmethod
    def _not_empty(cls, v: str | list[str]) -> str | list[str]:
        if (isinstance(v, str) and not v.strip()) or (isinstance(v, list) and not v):
            raise ValueError("command must not be empty")
        # The kernel takes C strings: a NUL byte cannot be passed, only refused here.
        for i, arg in enumerate([v] if isinstance(v, str) else v):
            if "\0" in arg:
                where = "the command" if isinstance(v, str) else f"argument {i}"
                raise ValueError(f"{where} contains a NUL byte, which no program can be given")
        return v

    @field_validator("env")
    @classmethod
    def _env_passable(cls, v: dict[str, str]) -> dict[str, str]:
        for key, value in v.items():
            if not key or "=" in key or "\0" in key:
                raise ValueError(f"env name {key!r} cannot be set: a name must be non-empty, without '=' or NUL")
            if "\0" in value:
                raise ValueError(f"env {key} contains a NUL byte, which no program can be given")
        return v

    @field_validator("cwd")
    @classmethod
    def _cwd_passable(cls, v: str | None) -> str | None:
        if v is not None and "\0" in v:
            raise ValueError("cwd contains a NUL byte")
        return v

    def argv(self) -> list[str]:
        """The argv to execute."""
        shell = self.shell if self.shell is not None else isinstance(self.command, str)
        if shell:
            script = self.command if isinstance(self.command, str) else shlex.join(self.command)
            return ["/bin/sh", "-c", script]
        return shlex.split(self.command) if isinstance(self.command, str) else list(self.command)


class CommandWorkload:
    """Runs :class:`CommandParams` as a child process; exit 0 is success, anything else a user error."""

    kind: ClassVar[str] = "command"
    params_model: ClassVar[type[BaseModel]] = CommandParams
    # It starts the rank's processes in the sandbox itself: it runs in the worker, not a rank host.
    confines_itself: ClassVar[bool] = True

    def run(self, ctx: WorkloadContext) -> WorkloadResult:
        params = params_as(ctx.params, CommandParams)
        argv = params.argv()
        env = rank_env(os.environ, ctx.env, params.env, ctx.workdir)
        cwd = ctx.workdir / params.cwd if params.cwd else ctx.workdir
        memory = ctx.sandbox.limits.memory_bytes if ctx.sandbox.uid is not None else None
        join: Callable[[], None] | None = None
        if ctx.cgroup is not None:
            join = ctx.cgroup.joiner()
            ooms = ctx.cgroup.oom_kills()
        elif memory is not None:
            join = address_space_limit(memory)
        if ctx.sandbox.backend == "bwrap":
            # bwrap runs whatever it is given: a program it cannot find is its exit 1, not ours to
            # tell apart, so look first (the sandbox sees the host's filesystem, read-only).
            missing = _missing(argv[0], env["PATH"], cwd, params.cwd)
            if missing is not None:
                return missing
            argv = ctx.sandbox.wrap(argv, ctx.workdir, ctx.output_dir, cwd)
        started = time.monotonic()
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=env,
                # Its own process group, so a stop kills the command's children too.
                start_new_session=True,
                close_fds=True,
                # Joins the slot's cgroup between fork and exec: nothing the rank runs escapes it.
                preexec_fn=join,
                **ctx.sandbox.popen_kwargs(),
            )
        except FileNotFoundError:
            if not Path(cwd).is_dir():
                return _user_error(f"working directory {params.cwd!r} does not exist", None)
            return _user_error(f"command not found: {argv[0]!r}", 127)
        except PermissionError:
            return _user_error(
                f"permission denied: cannot execute {argv[0]!r} (or enter {params.cwd or 'the workdir'!r})", 126
            )
        except (OSError, ValueError) as exc:
            # ValueError: what the kernel cannot take (a NUL byte, '=' in an env name) in a spec
            # that got past submit: the spec's error, never the board's.
            return _user_error(f"cannot start {argv[0]!r}: {exc}", None)
        try:
            stopped = _supervise(proc, ctx)
        finally:
            ctx.sandbox.reap()  # what the command left running as the rank's uid
        rc = proc.returncode
        duration = {"duration_s": round(time.monotonic() - started, 6)}
        code = 128 - rc if rc < 0 else rc  # killed by signal N -> 128+N, as shells report it
        if stopped:
            return WorkloadResult(Outcome.CANCELED, exit_code=code, message="stopped", result=duration)
        if ctx.cgroup is not None and ctx.cgroup.oom_kills() > ooms and memory is not None:
            # Even if the command exits 0 (a shell pipeline hides its parts' deaths): what it
            # computed is missing what the killed process would have done.
            msg = f"over its memory limit of {memory // 2**20} MiB: the kernel killed a process of it"
            return WorkloadResult(Outcome.USER_ERROR, exit_code=code, message=msg, result=duration)
        if rc == 0:
            return WorkloadResult(Outcome.SUCCESS, exit_code=0, result=duration)
        if rc < 0:
            try:
                name = signal.Signals(-rc).name
            except ValueError:
                name = f"signal {-rc}"
            msg = f"command killed by {name}"
        else:
            msg = f"command exited with code {rc}"
            if rc == 127:
                msg += " (command not found)"
            elif rc == 126:
                msg += " (not executable)"
        return WorkloadResult(Outcome.USER_ERROR, exit_code=code, message=msg, result=duration)


def _missing(program: str, path: str, cwd: Path, asked_cwd: str | None) -> WorkloadResult | None:
    """The user error of a program that cannot be run, or None."""
    try:
        if not Path(cwd).is_dir():
            return _user_error(f"working directory {asked_cwd!r} does not exist", None)
        found = shutil.which(program, path=path) if "/" not in program else program
        if found is None or not Path(cwd, found).exists():
            return _user_error(f"command not found: {program!r}", 127)
    except ValueError as exc:  # a NUL byte: what no program can be given is the spec's error
        return _user_error(f"cannot start {program!r}: {exc}", None)
    return None


def _user_error(message: str, exit_code: int | None) -> WorkloadResult:
    return WorkloadResult(Outcome.USER_ERROR, exit_code=exit_code, message=message)


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _term(pgid: int, *, spare: int | None) -> None:
    """SIGTERM to the process group ``pgid``, but for process ``spare``."""
    if spare is None:
        _killpg(pgid, signal.SIGTERM)
        return
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == spare:
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()  # after "pid (comm)": state ppid pgrp ...
            if int(fields[2]) == pgid:
                os.kill(int(entry.name), signal.SIGTERM)
        except (OSError, IndexError, ValueError):
            continue


def _supervise(proc: subprocess.Popen[bytes], ctx: WorkloadContext) -> bool:
    """Stream the output and wait for the command; return whether it was stopped on request."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    pgid = proc.pid  # start_new_session: the child leads its own group
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    pidfd: int | None
    try:
        # Readable when the child exits: no timed polling of waitpid on the hot path.
        pidfd = os.pidfd_open(proc.pid)
        poller.register(pidfd, select.POLLIN)
    except (AttributeError, OSError):
        pidfd = None
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    buf = bytearray()
    first_at = 0.0  # when the oldest unflushed byte arrived
    eof = exited = False
    exited_at = stop_at = kill_at = None
    stopped = False

    def flush(final: bool = False) -> None:
        nonlocal first_at
        if not buf and not final:
            return
        cut = len(buf)
        if not final:
            # Chunks end on a line boundary where there is one; a partial line (a progress bar)
            # waits one more interval for its newline, then goes out as it is.
            nl = buf.rfind(b"\n")
            if nl >= 0:
                cut = nl + 1
        text = decoder.decode(bytes(buf[:cut]), final=final)
        del buf[:cut]
        first_at = time.monotonic()
        if text:
            ctx.log(text)

    try:
        while not (eof and exited):
            now = time.monotonic()
            timeout = STOP_POLL_S
            if buf:
                timeout = min(timeout, first_at + FLUSH_INTERVAL_S - now)
            if kill_at is not None:
                timeout = min(timeout, kill_at - now)
            for f, _ev in poller.poll(max(0.0, timeout) * 1000.0):
                if f == fd:
                    chunk = os.read(fd, 65536)
                    if chunk:
                        if not buf:
                            first_at = time.monotonic()
                        buf += chunk
                    else:
                        eof = True
                        poller.unregister(fd)
                elif f == pidfd:
                    poller.unregister(pidfd)
                    proc.wait()
                    exited = True
            now = time.monotonic()
            if not exited and pidfd is None and proc.poll() is not None:
                exited = True
            if exited and exited_at is None:
                exited_at = now
            if buf and (len(buf) >= FLUSH_BYTES or now - first_at >= FLUSH_INTERVAL_S):
                flush()
            if stop_at is None and ctx.should_stop():
                stopped = True
                stop_at = now
                kill_at = now + KILL_GRACE_S
                # Under bwrap, not bwrap itself: it would die of the SIGTERM at once and take the
                # sandbox (and the command's chance to stop cleanly) with it.
                _term(pgid, spare=proc.pid if ctx.sandbox.backend == "bwrap" else None)
            if kill_at is not None and now >= kill_at:
                _killpg(pgid, signal.SIGKILL)
                kill_at = None
            if exited and not eof and exited_at is not None and now - exited_at > LINGER_S:
                # A background child still holds the pipe: the job is over, end its group.
                _killpg(pgid, signal.SIGKILL)
                if now - exited_at > LINGER_S + KILL_GRACE_S:
                    break  # it escaped the group (setsid); stop waiting for it
    finally:
        flush(final=True)
        if pidfd is not None:
            os.close(pidfd)
        proc.stdout.close()
        if proc.returncode is None:
            _killpg(pgid, signal.SIGKILL)
            proc.wait()
    # Reap anything the command left behind in its group (a no-op if nothing is left).
    _killpg(pgid, signal.SIGKILL)
    return stopped
