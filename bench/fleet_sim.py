"""How available a 10,000-board fleet stays for 30 simulated days under Fleetyard's self-healing
policy, side by side with manual clearing and no health checks, and how fast the simulator runs.

    python bench/fleet_sim.py [--quick] [--boards N] [--days D] [--seed N] [--workers N] [--no-blips]

The scenario is ``fleetyard.sim.Scenario``'s default (fault model and workload with their sources:
``fleetyard.sim.model``): 10,000 boards (``--quick``: 1,000 boards for 7 days), 8 a host, three
generations; the three policies meet the same faults on the same boards at the same times and the
teams submit the same jobs. Each policy runs in its own process (``--workers``, default: the CPUs).
The control plane's noise is on (``FaultModel.noisy``: host blips of up to 30 s on 1 % of hosts a
day, 1 % of checks that cannot run, a control plane that falls behind for 5 s to 2 min four times a
day); ``--no-blips`` runs the quiet model of the earlier figures.

Metrics (rates are fractions):

- ``availability``, ``availability_manual``, ``availability_no_checks``: board-time in service and
  sound over board-time counted (a board hung or computing wrong numbers in service counts as down);
  ``availability_accounted*``: the same from the event log alone.
- ``goodput_loss`` (and ``_manual``, ``_no_checks``): board-time of user work lost to faults (attempts
  that failed, results a corrupting board computed) over all board-time of user work run.
- ``mttd_s``: dead boards (hang, bus drop, firmware), from the fault to out of service;
  ``heartbeat_s`` is the agents' interval. ``mttd_sdc_s``/``mttd_sdc_max_s``: silent corruption,
  from its onset to the failed L1 check; ``l1_interval_s`` is how often L1 runs at most;
  ``sdc_missed``: corrupting boards still in service at the end.
- ``false_takeouts_per_1000_board_days``: boards without a fault taken out of service (or put
  offline by a host that was only silent); ``false_requeues``: attempts re-run because a host that
  was only silent was judged lost; ``unapproved_boards_served``: user work started on a board not
  through approval and burn-in; ``blips``, ``checks_lost``, ``stalls``: the noise the run met.
- ``wall_s``: the whole comparison (all three policies); ``sim_s_per_wall_s_fleetyard``: simulated
  seconds per second of the Fleetyard run, for 10,000 boards.

Targets: ``wall_s`` <= 300, ``availability`` >= 0.999, ``goodput_loss`` <= 0.01, ``mttd_s`` <= 3
heartbeat intervals, ``mttd_sdc_s`` <= one L1 interval, ``sdc_missed`` == 0; under the noise,
``false_takeouts_per_1000_board_days`` <= 0.1 and ``unapproved_boards_served`` == 0. Progress on stderr;
the last stdout line is the JSON object. Not a test: it exits 0 either way.
"""

from __future__ import annotations

import argparse
import time

from _common import emit, rnd, say, target, use_repo_root
from fleetyard.sim import FaultModel, Scenario, SimPolicy, compare

BENCH = "fleet_sim"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1,000 boards for 7 days")
    ap.add_argument("--boards", type=int, default=None)
    ap.add_argument("--days", type=float, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--no-blips", action="store_true", help="no host blips nor lost checks (the quiet model)")
    args = ap.parse_args()
    use_repo_root()
    boards = args.boards or (1000 if args.quick else 10_000)
    days = args.days or (7.0 if args.quick else 30.0)
    faults = FaultModel() if args.no_blips else FaultModel().noisy()
    scenario = Scenario(boards=boards, days=days, seed=args.seed, faults=faults)
    say(f"{boards:,} boards, {days:g} days, policies {', '.join(SimPolicy)}, {'no ' if args.no_blips else ''}blips")
    t0 = time.perf_counter()
    fy, manual, none = compare(scenario, list(SimPolicy), workers=args.workers)
    wall = time.perf_counter() - t0
    for r in (fy, manual, none):
        say(
            f"{r.policy}: availability {r.availability:.5f} (event log {r.availability_accounted:.5f}), "
            f"goodput loss {r.goodput_loss:.5f}, MTTD {r.mttd_s}, faults {r.faults}, quarantined "
            f"{r.quarantined} (lemons {r.lemons}), jobs {r.jobs_done} done / {r.jobs_failed} failed / "
            f"{r.jobs_corrupt} wrong, {r.wall_s:.1f} s"
        )
    l1 = scenario.health.of(scenario.generations[0]).l1.every_s
    sdc = fy.mttd_by_kind_s.get("silent_corruption")
    metrics = {
        "boards": boards,
        "days": days,
        "availability": rnd(fy.availability, 6),
        "availability_manual": rnd(manual.availability, 6),
        "availability_no_checks": rnd(none.availability, 6),
        "availability_accounted": rnd(fy.availability_accounted, 6),
        "availability_accounted_manual": rnd(manual.availability_accounted, 6),
        "availability_accounted_no_checks": rnd(none.availability_accounted, 6),
        "goodput_loss": rnd(fy.goodput_loss, 6),
        "goodput_loss_manual": rnd(manual.goodput_loss, 6),
        "goodput_loss_no_checks": rnd(none.goodput_loss, 6),
        "mttd_s": rnd(fy.mttd_s, 2),
        "mttd_s_manual": rnd(manual.mttd_s, 2),
        "mttd_s_no_checks": rnd(none.mttd_s, 2),
        "heartbeat_s": scenario.heartbeat_s,
        "mttd_sdc_s": rnd(sdc, 0),
        "mttd_sdc_max_s": rnd(fy.mttd_sdc_max_s, 0),
        "l1_interval_s": l1,
        "sdc_caught": fy.sdc_caught,
        "sdc_missed": fy.sdc_missed,
        "sdc_missed_no_checks": none.sdc_missed,
        "mttr_s": rnd(fy.mttr_s, 0),
        "mttr_s_manual": rnd(manual.mttr_s, 0),
        "incidents": fy.incidents,
        "quarantined": fy.quarantined,
        "lemons": fy.lemons,
        "breaker_trips": fy.breaker_trips,
        "check_overhead": rnd(fy.check_overhead, 6),
        "utilization": rnd(fy.utilization, 4),
        "jobs_done": fy.jobs_done,
        "blips": fy.blips,
        "checks_lost": fy.checks_lost,
        "stalls": fy.stalls,
        "false_takeouts_per_1000_board_days": rnd(fy.false_takeouts_per_1000_board_days, 4),
        "false_requeues": fy.false_requeues,
        "unapproved_boards_served": fy.unapproved_boards_served,
        "wall_s": rnd(wall, 1),
        "wall_s_fleetyard": rnd(fy.wall_s, 1),
        "sim_s_per_wall_s_fleetyard": rnd(days * 86400 / fy.wall_s, 0),
    }
    targets = {
        "wall_s": target(metrics["wall_s"], at_most=300.0),
        "availability": target(metrics["availability"], at_least=0.999),
        "goodput_loss": target(metrics["goodput_loss"], at_most=0.01),
        "mttd_s": target(metrics["mttd_s"], at_most=3 * scenario.heartbeat_s),
        "mttd_sdc_s": target(metrics["mttd_sdc_s"], at_most=l1),
        "sdc_missed": target(metrics["sdc_missed"], at_most=0),
        "false_takeouts_per_1000_board_days": target(metrics["false_takeouts_per_1000_board_days"], at_most=0.1),
        "unapproved_boards_served": target(metrics["unapproved_boards_served"], at_most=0),
    }
    emit(BENCH, metrics, targets)


if __name__ == "__main__":
    main()
