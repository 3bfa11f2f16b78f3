"""A board slot's cgroup: made under the worker's own, its limits written, removed when done."""

from __future__ import annotations

import os
import subprocess

import pytest

from fleetyard.workloads.rank_cgroup import RankCgroup, RankLimits, default_memory_bytes


def test_no_limits_make_no_cgroup() -> None:
    assert RankCgroup.make("fleetyard-test-none", RankLimits()) is None


def test_the_default_memory_is_a_share_of_the_hosts() -> None:
    one, eight = default_memory_bytes(1), default_memory_bytes(8)
    assert one is not None and eight is not None and 7.9 < one / eight < 8.1


@pytest.mark.skipif(os.geteuid() != 0, reason="making a cgroup needs root (CI runs as root)")
def test_the_slots_cgroup_holds_its_limits_and_its_processes() -> None:
    cg = RankCgroup.make(f"fleetyard-test-{os.getpid()}", RankLimits(memory_bytes=96 * 2**20, cpus=0.5))
    assert cg is not None, "this host offers no memory cgroup"
    try:
        if cg.v2:
            d = cg.dirs["unified"]
            assert (d / "memory.max").read_text().strip() == str(96 * 2**20)
            assert (d / "cpu.max").read_text().split() == ["50000", "100000"]
        else:
            assert (cg.dirs["memory"] / "memory.limit_in_bytes").read_text().strip() == str(96 * 2**20)
            if "cpu" in cg.dirs:
                assert (cg.dirs["cpu"] / "cpu.cfs_quota_us").read_text().strip() == "50000"
        # A process started with the joiner is in it before it runs anything.
        out = subprocess.run(["cat", "/proc/self/cgroup"], preexec_fn=cg.joiner(), capture_output=True, text=True)
        name = f"fleetyard-test-{os.getpid()}"
        assert any(line.endswith("/" + name) for line in out.stdout.splitlines()), out.stdout
        assert cg.oom_kills() == 0
    finally:
        cg.close()
    assert not any(d.exists() for d in cg.dirs.values())


@pytest.mark.skipif(os.geteuid() != 0, reason="making a cgroup needs root (CI runs as root)")
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores to hold a rank to one")
def test_a_cpu_boards_ranks_stay_on_its_cores_whatever_affinity_they_set() -> None:
    first = min(os.sched_getaffinity(0))
    name = f"fleetyard-test-cores-{os.getpid()}"
    cg = RankCgroup.make(name, RankLimits(memory_bytes=256 * 2**20, cores=(first,)))
    assert cg is not None, "this host offers no memory cgroup"
    if "cpuset" not in cg.dirs and not cg.v2:
        cg.close()
        pytest.skip("this host offers no cpuset cgroup")
    try:
        widen = "import os; os.sched_setaffinity(0, os.sched_getaffinity(0) | set(range(os.cpu_count()))); "
        out = subprocess.run(
            ["python3", "-c", widen + "print(sorted(os.sched_getaffinity(0)))"],
            preexec_fn=cg.joiner(),
            capture_output=True,
            text=True,
        )
        assert out.stdout.strip() == f"[{first}]", (out.stdout, out.stderr)
    finally:
        cg.close()
