"""The scheduler on a multi-team day: ``plan()`` driven pass after pass by the fleet simulator,
as the controller drives it, on the trace of ``examples/workloads/multi_team_day.yaml``.

    python bench/sched_trace.py [--quick] [--hours H] [--workload FILE] [--seed N]

2,880 boards of 3 generations in 9 racks (40 hosts of 8 boards); five teams in two cohorts whose
nominal quotas sum to the fleet, with borrowing limits; all four priority classes; mostly 1-board
jobs, some 4- and 8-board same-host jobs, a few 64-256-board same-rack gangs; CI bursts of 200-300
ci-gate jobs every 3 h; a lender team idle for 6 h, then bursting; the default fault model (boards
taken out and healed). A pass every 30 s, explaining 200 jobs. One simulated day (``--quick``:
8 hours, the lender's first burst included). The same trace runs twice, in two processes: with
preemption, and with no job preemptible (the peer, ``*_no_preemption``).

Metrics:

- ``preemptions``; ``wasted_board_hours``: the board-hours the preempted attempts had run, thrown
  away; ``wasted_share``: that over ``board_hours_run`` (all board-hours of user jobs);
  ``max_preemptions_per_job``.
- ``utilisation``: busy boards over boards in service, over the time some job waited in line.
- ``fairshare_error``: half the summed gap between each team's share of the busy boards and its
  max-min fair share (quota share, water-filled up to what it asks), over the time jobs waited.
- ``gang_wait_max_s``: submit to first start of jobs of 2 boards or more (one still waiting at
  the end counts as waiting until then).
- ``plan_p50_ms``, ``plan_p99_ms``: one ``plan()`` call, wall time, over ``plan_passes`` passes.

Targets (issue 18): ``wasted_share`` < 0.01, ``max_preemptions_per_job`` <= 2, ``utilisation``
>= 0.85, ``plan_p99_ms`` <= 50 with preemption on. Progress on stderr; the last stdout line is
the JSON object. Not a test: it exits 0 either way.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from _common import ROOT, emit, rnd, say, target
from fleetyard.sim import Scenario, SimReport
from fleetyard.sim.fleet import simulate
from fleetyard.sim.workload import load_workload

BENCH = "sched_trace"
WORKLOAD = ROOT / "examples" / "workloads" / "multi_team_day.yaml"


def run(workload: Path, hours: float, seed: int, preemption: bool) -> SimReport:
    work = load_workload(workload)
    scenario = Scenario(
        boards=2880,
        days=hours / 24.0,
        boards_per_host=8,
        hosts_per_rack=40,
        seed=seed,
        workload=work if preemption else work.without_preemption(),
        pass_s=30.0,
        window=200,
        scheduling_figures=True,
        freeze_gc=True,  # as the controller program plans (fleetyard.pass_gc)
    )
    return simulate(scenario, "fleetyard")


def figures(r: SimReport) -> dict[str, float | int | None]:
    return {
        "preemptions": r.preemptions,
        "wasted_board_hours": rnd(r.wasted_board_hours, 1),
        "board_hours_run": rnd(r.board_hours_run, 0),
        "wasted_share": rnd(r.wasted_board_hours / r.board_hours_run, 5) if r.board_hours_run else None,
        "max_preemptions_per_job": r.max_preemptions_per_job,
        "utilisation": rnd(r.utilisation_waiting, 4),
        "fairshare_error": rnd(r.fairshare_error, 4),
        "gang_wait_max_s": rnd(r.gang_wait_max_s, 0),
        "jobs_started": r.jobs_started,
        "plan_passes": r.plan_passes,
        "plan_p50_ms": rnd(r.plan_p50_ms, 2),
        "plan_p99_ms": rnd(r.plan_p99_ms, 2),
        "availability": rnd(r.availability, 5),
        "wall_s": rnd(r.wall_s, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="8 simulated hours instead of 24")
    ap.add_argument("--hours", type=float, default=None)
    ap.add_argument("--workload", type=Path, default=WORKLOAD)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    hours = args.hours or (8.0 if args.quick else 24.0)
    say(f"{args.workload.name}: 2,880 boards, {hours:g} h, with preemption and without, in two processes")
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=2) as pool:
        on = pool.submit(run, args.workload, hours, args.seed, True)
        off = pool.submit(run, args.workload, hours, args.seed, False)
        with_p, without = on.result(), off.result()
    wall = time.perf_counter() - t0
    mine, peer = figures(with_p), figures(without)
    for name, f in (("with preemption", mine), ("without", peer)):
        say(f"{name}: {f}")
    metrics: dict[str, object] = {"boards": 2880, "hours": hours, "seed": args.seed, **mine}
    metrics.update({f"{k}_no_preemption": v for k, v in peer.items()})
    metrics["wall_s_total"] = rnd(wall, 1)
    targets = {
        "wasted_share": target(mine["wasted_share"], at_most=0.01),
        "max_preemptions_per_job": target(mine["max_preemptions_per_job"], at_most=2),
        "utilisation": target(mine["utilisation"], at_least=0.85),
        "plan_p99_ms": target(mine["plan_p99_ms"], at_most=50.0),
    }
    emit(BENCH, metrics, targets)


if __name__ == "__main__":
    main()
