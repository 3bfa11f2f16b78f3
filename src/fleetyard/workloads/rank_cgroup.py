"""The memory and CPU a board slot's ranks may use: a cgroup of their own per slot.

The worker (running as root, under the uid sandbox) makes the slot's cgroup once, under its own
cgroup, in the cgroup v2 hierarchy where the host delegates the memory controller to it, else in
the v1 ``memory`` (and ``cpu``, ``cpuset``) hierarchies. A cpu board's slot is held to the
board's cores by a cpuset (a rank cannot widen its affinity past it). A rank's process joins it
between fork and exec (so nothing it allocates or starts escapes it). A rank the kernel kills for
going over the limit ends as a user error saying so (:meth:`RankCgroup.oom_kills` counts them).
Where no cgroup can be made (no root, no controller), ``RLIMIT_AS`` bounds each process's address
space instead, and a rank over it fails as its program reports it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RankCgroup", "RankLimits", "default_memory_bytes"]

log = logging.getLogger("fleetyard.workloads.rank_cgroup")

CGROUP_ROOT = Path("/sys/fs/cgroup")
CPU_PERIOD_US = 100_000


@dataclass(frozen=True)
class RankLimits:
    """What one board slot's ranks may use together; None: no limit."""

    memory_bytes: int | None = None
    cpus: float | None = None
    # The board's own cores (a cpu board): ranks may run on these only, whatever affinity they
    # set themselves (a cpuset). None: every core the worker may use.
    cores: tuple[int, ...] | None = None


def default_memory_bytes(boards: int) -> int | None:
    """A share of the host's memory per board: 80 % of it split evenly (None if unknown)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(int(line.split()[1]) * 1024 * 0.8 / max(1, boards))
    except (OSError, ValueError, IndexError):
        pass
    return None


class RankCgroup:
    """One board slot's cgroup: its directories per hierarchy, and the limits written to them."""

    def __init__(self, dirs: dict[str, Path], v2: bool, limits: RankLimits) -> None:
        self.dirs, self.v2, self.limits = dirs, v2, limits
        # Opened here, as root: a rank's process (its uid already dropped) writes to them to join.
        self._procs = [os.open(d / "cgroup.procs", os.O_WRONLY) for d in dict.fromkeys(dirs.values())]

    @classmethod
    def make(cls, name: str, limits: RankLimits) -> RankCgroup | None:
        """The slot's cgroup ``name``, made (or found) and limited; None where the host offers none."""
        if limits.memory_bytes is None and limits.cpus is None and limits.cores is None:
            return None
        for make in (cls._make_v2, cls._make_v1):
            try:
                group = make(name, limits)
            except OSError as exc:
                log.info("no %s cgroup for %s: %s", make.__name__.removeprefix("_make_"), name, exc)
                continue
            if group is not None:
                return group
        return None

    @classmethod
    def _make_v2(cls, name: str, limits: RankLimits) -> RankCgroup | None:
        own = _own_path("")
        if own is None or not (CGROUP_ROOT / "cgroup.controllers").exists():
            return None
        parent = CGROUP_ROOT / own.lstrip("/")
        if "memory" not in (parent / "cgroup.subtree_control").read_text().split():
            return None  # not delegated to us (enabling it needs the agent out of its own cgroup)
        d = parent / name
        d.mkdir(exist_ok=True)
        if limits.memory_bytes is not None:
            (d / "memory.max").write_text(str(limits.memory_bytes))
            with contextlib.suppress(OSError):
                (d / "memory.swap.max").write_text("0")
        if limits.cpus is not None:
            with contextlib.suppress(OSError):
                (d / "cpu.max").write_text(f"{int(limits.cpus * CPU_PERIOD_US)} {CPU_PERIOD_US}")
        if limits.cores is not None and "cpuset" in (parent / "cgroup.subtree_control").read_text().split():
            (d / "cpuset.cpus").write_text(_cpu_list(limits.cores))
        return cls({"unified": d}, True, limits)

    @classmethod
    def _make_v1(cls, name: str, limits: RankLimits) -> RankCgroup | None:
        dirs: dict[str, Path] = {}
        for controller in ("memory", "cpu", "cpuset"):
            if controller == "cpuset" and limits.cores is None:
                continue
            own = _own_path(controller)
            root = CGROUP_ROOT / controller
            if own is None or not (root / "cgroup.procs").exists():
                continue
            d = root / own.lstrip("/") / name
            d.mkdir(exist_ok=True)
            dirs[controller] = d
        if "memory" not in dirs:
            return None
        if limits.memory_bytes is not None:
            (dirs["memory"] / "memory.limit_in_bytes").write_text(str(limits.memory_bytes))
        if limits.cpus is not None and "cpu" in dirs:
            (dirs["cpu"] / "cpu.cfs_period_us").write_text(str(CPU_PERIOD_US))
            (dirs["cpu"] / "cpu.cfs_quota_us").write_text(str(int(limits.cpus * CPU_PERIOD_US)))
        if limits.cores is not None and "cpuset" in dirs:
            # v1 wants the memory nodes before the first task: the parent's.
            d = dirs["cpuset"]
            (d / "cpuset.mems").write_text((d.parent / "cpuset.mems").read_text().strip())
            (d / "cpuset.cpus").write_text(_cpu_list(limits.cores))
        return cls(dirs, False, limits)

    def joiner(self) -> Callable[[], None]:
        """What a rank's process runs between fork and exec to join the cgroup: one write to each
        hierarchy's ``cgroup.procs`` ("0" is the writer itself), no lock, no allocation that could
        wait on another thread of the worker."""
        fds = tuple(self._procs)

        def join() -> None:
            for fd in fds:
                os.write(fd, b"0")

        return join

    def add(self, pid: int) -> None:
        """Move a running process into the cgroup (the worker does it for a rank host it started)."""
        for fd in self._procs:
            os.write(fd, str(pid).encode())

    def oom_kills(self) -> int:
        """How many processes the kernel has killed in this cgroup for going over its memory."""
        if self.v2:
            text, key = (self.dirs["unified"] / "memory.events").read_text(), "oom_kill"
        else:
            text, key = (self.dirs["memory"] / "memory.oom_control").read_text(), "oom_kill"
        for line in text.splitlines():
            k, _, v = line.partition(" ")
            if k == key:
                return int(v)
        return 0

    def close(self) -> None:
        for fd in self._procs:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._procs = []
        for d in self.dirs.values():
            with contextlib.suppress(OSError):
                d.rmdir()  # fails while a process is left in it; the next worker reuses it


def address_space_limit(memory_bytes: int) -> Callable[[], None]:
    """The fallback without a cgroup: each process of the rank may map at most this much."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))

    return limit


def _cpu_list(cores: tuple[int, ...]) -> str:
    return ",".join(map(str, sorted(cores)))


def _own_path(controller: str) -> str | None:
    """This process's cgroup path in the hierarchy of ``controller`` ("" for v2's)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, names, path = line.split(":", 2)
        if (controller == "" and names == "") or controller in names.split(","):
            return path
    return None
