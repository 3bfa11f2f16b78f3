"""How a rank's processes are confined on its host: a job is untrusted code.

Three backends, chosen by the agent (``fleetyard agent --sandbox``):

- ``uid``: the rank's processes run as an unprivileged uid of their own per board slot (no
  passwd entry needed: the agent, running as root, sets it), in a private work dir and output dir
  (0700, owned by that uid) outside the agent's data dir, with umask 077. They cannot read the
  agent's token file, its environment (``/proc/<pid>/environ`` is readable by its own uid only)
  or its memory, cannot write its data dir or blob cache (0700, the agent's), and cannot read
  another slot's files. After the rank, every process left running as that uid is killed.
- ``bwrap``: all of ``uid``, and the rank runs under bubblewrap: a read-only root, a private
  empty ``/tmp`` and ``/dev/shm`` (so it sees no other rank's dirs at all), only its own work and
  output dirs writable, its own pid, ipc and uts namespaces.
- ``none``: the rank runs as the agent's own user (a developer's ``fleetyard up`` without
  root). Nothing above holds except the scrubbed environment; the agent says so when it starts.

All give the rank a scrubbed environment (:func:`rank_env`): an allow-list of the host's
variables, the job's ``FLEETYARD_*`` variables and the board's device, and the spec's own ``env``;
never the agent's token or anything else of the agent's environment.

What none does: keep a rank off the network, or from reading world-readable files of the host;
under ``uid``, out of world-writable places (``/tmp``, ``/dev/shm``). See ``docs/security.md``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
import subprocess
import sys
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fleetyard.workloads.rank_cgroup import RankLimits

__all__ = [
    "BACKENDS",
    "HOST_ENV_ALLOWED",
    "SLOTS_PER_HOST",
    "Sandbox",
    "SandboxError",
    "choose_backend",
    "private_root",
    "python_unreadable",
    "rank_env",
    "rank_uid_base",
]

Backend = Literal["bwrap", "uid", "none"]
BACKENDS: tuple[str, ...] = ("auto", "bwrap", "uid", "none")

# Of the host's environment, what a rank gets (with LC_*): enough to find programs and speak
# the host's locale, nothing that names a credential.
HOST_ENV_ALLOWED = ("PATH", "LANG", "LANGUAGE", "TZ", "TERM")

# Rank uids: a block of this many per agent, from rank_uid_base(); a slot past it is refused.
SLOTS_PER_HOST = 1000
FIRST_RANK_UID = 100_000


class SandboxError(Exception):
    """The sandbox cannot be set up as configured (the message says what to fix)."""


def choose_backend(asked: str) -> Backend:
    """The backend for ``asked``. ``auto``: ``bwrap`` when running as root where bubblewrap runs,
    else ``uid`` as root, else ``none``."""
    if asked not in BACKENDS:
        raise SandboxError(f"unknown sandbox {asked!r}: expected one of {', '.join(BACKENDS)}")
    root = os.geteuid() == 0
    if asked == "auto":
        if not root:
            return "none"
        return "bwrap" if bwrap_runs() else "uid"
    if asked in ("uid", "bwrap") and not root:
        raise SandboxError(
            f"--sandbox {asked} needs the agent to run as root (it sets each rank's uid); use --sandbox none"
        )
    if asked == "bwrap" and not bwrap_runs():
        raise SandboxError(
            "--sandbox bwrap: bubblewrap does not run here (install it: apt-get install bubblewrap; it needs"
            " user namespaces); use --sandbox uid"
        )
    return "bwrap" if asked == "bwrap" else "uid" if asked == "uid" else "none"


def bwrap_runs() -> bool:
    """Whether bubblewrap is installed and runs for an unprivileged uid (user namespaces allowed)."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return False
    probe = [bwrap, "--ro-bind", "/", "/", "--unshare-user", "--unshare-pid", "--die-with-parent", "true"]
    try:
        as_rank = Sandbox("uid", FIRST_RANK_UID).popen_kwargs() if os.geteuid() == 0 else {}
        return subprocess.run(probe, capture_output=True, timeout=30, **as_rank).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def python_unreadable(uid: int) -> str | None:
    """Why a process of ``uid`` cannot run this Python and import fleetyard (where in-process
    kinds run confined, see :mod:`fleetyard.agent.rank_host`), saying what to change; None if it can."""
    import sysconfig

    import fleetyard

    package = Path(fleetyard.__file__).resolve().parent
    # Its stdlib (the interpreter starts), fleetyard and the installed libraries (a rank host
    # imports the runtimes lazily, long after it dropped its uid).
    libraries = {Path(sysconfig.get_paths()[k]).resolve() for k in ("purelib", "platlib")}
    probe = "import os, sys; sys.exit(not all(os.access(p, os.R_OK | os.X_OK) for p in sys.argv[1:]))"
    try:
        ok = (
            subprocess.run(
                [sys.executable, "-I", "-S", "-c", probe, str(package), *map(str, sorted(libraries))],
                capture_output=True,
                timeout=30,
                env={"PATH": os.defpath},
                **Sandbox("uid", uid).popen_kwargs(),
            ).returncode
            == 0
        )
    except (OSError, subprocess.SubprocessError):
        ok = False
    if ok:
        return None
    prefix = Path(os.path.realpath(sys.base_prefix))
    closed = [
        str(d) for root in (prefix, package, *libraries) for d in root.parents if not os.stat(d).st_mode & stat.S_IXOTH
    ]
    where = f"{closed[0]} lets no other user pass (chmod o+x {closed[0]})" if closed else "it is not readable by others"
    return (
        f"rank uids cannot run this agent's Python ({prefix}, fleetyard in {package}): {where}, or install the"
        " agent where every user can read it"
    )


def rank_uid_base(host: str, state_dir: Path) -> int:
    """The first rank uid of an agent: a block of SLOTS_PER_HOST uids that stays the same across
    restarts of this agent (its host and state dir), and differs between agents on one machine
    (a test's many agents; a real host runs one)."""
    key = f"{host}\0{Path(state_dir).resolve()}".encode()
    return FIRST_RANK_UID + SLOTS_PER_HOST * (zlib.crc32(key) % 100_000)


def private_root(parent: Path, name: str) -> Path:
    """``parent/name``, made (0711) or checked: a directory owned by this process's user, not a
    link, writable by no one else. Under a shared ``/tmp`` another user may have made it first."""
    d = Path(parent) / name
    with contextlib.suppress(FileExistsError):
        d.mkdir(mode=0o711, parents=True)
    st = os.lstat(d)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise SandboxError(
            f"{d} must be a directory owned by uid {os.geteuid()} and writable by no one else "
            f"(it is uid {st.st_uid}, mode {stat.filemode(st.st_mode)}): remove it, or pass another --rank-dir"
        )
    os.chmod(d, 0o711)
    return d


@dataclass(frozen=True)
class Sandbox:
    """How one board's ranks run: ``uid`` is their uid (and gid) under the ``uid`` backend, and
    ``limits`` what they may use together (enforced under the ``uid`` backend only: it needs root)."""

    backend: Backend = "none"
    uid: int | None = None
    limits: RankLimits = field(default_factory=RankLimits)
    # In-process kinds run in a rank host of this uid (False: in the worker, where the rank uids
    # cannot run the agent's Python; the agent says so when it starts).
    in_process: bool = True

    @classmethod
    def for_slot(
        cls, backend: Backend, base: int, slot: int, limits: RankLimits | None = None, *, in_process: bool = True
    ) -> Sandbox:
        if backend == "none":
            return cls("none")
        if not 0 <= slot < SLOTS_PER_HOST:
            raise SandboxError(f"board slot {slot} is outside 0..{SLOTS_PER_HOST - 1}: it has no rank uid")
        return cls(backend, base + slot, limits or RankLimits(), in_process)

    def wrap(self, argv: list[str], workdir: Path, output_dir: Path, cwd: Path) -> list[str]:
        """The argv that runs ``argv`` in this sandbox: under ``bwrap``, in a mount namespace where
        the root is read-only, /tmp and /dev/shm are private and empty (other ranks' dirs, which
        live under /tmp, are not there), and only its work and output dirs are writable; its own
        pid, ipc and uts namespaces. The network is the host's."""
        if self.backend != "bwrap":
            return argv
        bwrap = shutil.which("bwrap") or "bwrap"
        return [
            bwrap,
            "--ro-bind", "/", "/",
            "--dev", "/dev",
            "--proc", "/proc",
            "--tmpfs", "/tmp",
            "--tmpfs", "/dev/shm",
            "--bind", str(workdir), str(workdir),
            "--bind", str(output_dir), str(output_dir),
            "--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--die-with-parent",
            "--chdir", str(cwd),
            "--",
            *argv,
        ]  # fmt: skip

    def prepare(self, *dirs: Path) -> None:
        """Make ``dirs`` the rank's own: 0700, owned by its uid."""
        for d in dirs:
            if self.uid is not None:
                os.chown(d, self.uid, self.uid)
            os.chmod(d, 0o700)

    def popen_kwargs(self) -> dict[str, Any]:
        """What :class:`subprocess.Popen` needs to start a process of this rank."""
        if self.uid is None:
            return {"umask": 0o077}
        return {"user": self.uid, "group": self.uid, "extra_groups": [], "umask": 0o077}

    def reap(self) -> int:
        """Kill every process left running as the rank's uid (a child that left its process
        group, a daemon it started); how many. Nothing to do without a uid of its own."""
        if self.uid is None:
            return 0
        killed = 0
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                if entry.stat(follow_symlinks=False).st_uid != self.uid:
                    continue
                os.kill(int(entry.name), signal.SIGKILL)
                killed += 1
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue
        return killed


def rank_env(
    host_env: Mapping[str, str], job_env: Mapping[str, str], spec_env: Mapping[str, str], workdir: Path
) -> dict[str, str]:
    """A rank's whole environment: the allowed part of the host's, its private dir as HOME and
    TMPDIR, the job's variables (``FLEETYARD_*``, the board's device), then the spec's own."""
    env = {k: v for k, v in host_env.items() if k in HOST_ENV_ALLOWED or k.startswith("LC_")}
    env.setdefault("PATH", os.defpath)
    env["HOME"] = env["TMPDIR"] = str(workdir)
    env.update(job_env)
    env.update(spec_env)
    return env
