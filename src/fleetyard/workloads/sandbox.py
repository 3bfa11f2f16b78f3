"""How a rank's processes are confined on its host: a job is untrusted code.

Two backends, chosen by the agent (``fleetyard agent --sandbox``):

- ``uid``: the rank's processes run as an unprivileged uid of their own per board slot (no
  passwd entry needed: the agent, running as root, sets it), in a private work dir and output dir
  (0700, owned by that uid) outside the agent's data dir, with umask 077. They cannot read the
  agent's token file, its environment (``/proc/<pid>/environ`` is readable by its own uid only)
  or its memory, cannot write its data dir or blob cache (0700, the agent's), and cannot read
  another slot's files. After the rank, every process left running as that uid is killed.
- ``none``: the rank runs as the agent's own user (a developer's ``fleetyard up`` without
  root). Nothing above holds except the scrubbed environment; the agent says so when it starts.

Both give the rank a scrubbed environment (:func:`rank_env`): an allow-list of the host's
variables, the job's ``FLEETYARD_*`` variables and the board's device, and the spec's own ``env``;
never the agent's token or anything else of the agent's environment.

What neither does: keep a rank off the network, out of world-writable places (``/tmp``,
``/dev/shm``), or from reading world-readable files of the host. See ``docs/security.md``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
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
    "rank_env",
    "rank_uid_base",
]

Backend = Literal["uid", "none"]
BACKENDS: tuple[str, ...] = ("auto", "uid", "none")

# Of the host's environment, what a rank gets (with LC_*): enough to find programs and speak
# the host's locale, nothing that names a credential.
HOST_ENV_ALLOWED = ("PATH", "LANG", "LANGUAGE", "TZ", "TERM")

# Rank uids: a block of this many per agent, from rank_uid_base(); a slot past it is refused.
SLOTS_PER_HOST = 1000
FIRST_RANK_UID = 100_000


class SandboxError(Exception):
    """The sandbox cannot be set up as configured (the message says what to fix)."""


def choose_backend(asked: str) -> Backend:
    """The backend for ``asked`` (``auto``: ``uid`` when running as root, else ``none``)."""
    if asked not in BACKENDS:
        raise SandboxError(f"unknown sandbox {asked!r}: expected one of {', '.join(BACKENDS)}")
    if asked == "auto":
        return "uid" if os.geteuid() == 0 else "none"
    if asked == "uid" and os.geteuid() != 0:
        raise SandboxError("--sandbox uid needs the agent to run as root (it sets each rank's uid); use --sandbox none")
    return "uid" if asked == "uid" else "none"


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

    @classmethod
    def for_slot(cls, backend: Backend, base: int, slot: int, limits: RankLimits | None = None) -> Sandbox:
        if backend == "none":
            return cls("none")
        if not 0 <= slot < SLOTS_PER_HOST:
            raise SandboxError(f"board slot {slot} is outside 0..{SLOTS_PER_HOST - 1}: it has no rank uid")
        return cls("uid", base + slot, limits or RankLimits())

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
