"""Staged firmware rollouts over a 2,000-board simulated fleet with a steady job stream: a good image
completes; an image that raises the silent-corruption rate halts and rolls back. Side by side with
the peer every fleet starts from, the unstaged rollout (every board of the generation at once).

    python bench/rollout.py [--quick] [--boards N] [--seed N] [--workers N] [--no-blips]

The fleet is ``fleetyard.sim.Scenario``'s (faults, three teams keeping a backlog queued, health
checks and the remediation ladder), 2,000 boards (``--quick``: 600) in three generations, with the
teams' nominal quotas promising 90 % of each generation (``quota_share``: the headroom a fleet
keeps for maintenance). Rollouts start 6 h in and run the controller's policy
(``fleetyard.policy.rollout``): a canary of 8 boards, then 5 %, 25 %, 50 %, 100 %, each soaked 1 h,
8 control boards, drains that wait for running jobs; flash times are the ``sim`` driver's per
generation. The control plane's noise is on (``FaultModel.noisy``: host blips of up to 30 s on 1 % of
hosts a day, 1 % of checks that cannot run, a control plane that falls behind for 5 s to 2 min four
times a day); ``--no-blips`` runs the quiet model. Scenarios (each in
its own process):

- ``good``: a good image on all three generations at once (three rollouts);
- ``good_requeue``: the same, draining by re-queueing jobs after 30 min;
- ``bad``: on sim-g1, an image that turns 5 % of its boards "mercurial" per board-hour; ``bad_slow``:
  1 % per board-hour; ``bad_unstaged``: the 5 % image, every board at once (the peer).

Metrics: for good rollouts the total time (start to every board flashed, checked and soaked), the
peak share of the generation out of service for the rollout and for any reason, and the worst
headroom above what the quotas needed while the rollout held boards; for bad ones the wave that
halted (0 is the canary), the share of the fleet ever exposed to the image, the jobs that ran on it
and those it corrupted, and how long until every exposed board ran its old firmware again.

``good_rollouts_halted``: rollouts of a good image that did not complete; under the noise,
``false_takeouts_per_1000_board_days`` (the worst scenario's) and ``unapproved_boards_served``.

Targets: the good rollouts complete (``good_rollouts_halted`` == 0); the bad ones halt at the
canary or the first wave, roll back, and expose at most 2 % of the fleet; capacity never falls
below what the quotas need because of a rollout (``min_headroom`` >= 0). Progress on stderr; the
last stdout line is the JSON object.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from _common import emit, rnd, say, target, use_repo_root
from fleetyard.policy.rollout import RolloutPlan
from fleetyard.sim import FaultModel, Scenario
from fleetyard.sim.rollout import Image, RolloutRun, RolloutSim

BENCH = "rollout"
HOUR = 3600.0
START = 6 * HOUR


def _scenario(name: str, boards: int, seed: int, quick: bool, blips: bool) -> tuple[Scenario, list[RolloutRun]]:
    staged = RolloutPlan(canary=8, soak_s=HOUR, control=8)
    if name.startswith("good"):
        plan = staged if name == "good" else RolloutPlan(canary=8, soak_s=HOUR, control=8, drain="requeue")
        runs = [
            RolloutRun(gen, Image(version), START, plan)
            for gen, version in (("sim-g1", "1.5.0"), ("sim-g2", "2.2.0"), ("sim-g3", "3.1.0"))
        ]
        days = 5.0 if quick else 9.0
    else:
        rate = 0.01 if name == "bad_slow" else 0.05
        plan = staged if name != "bad_unstaged" else RolloutPlan(canary=100_000, shares=(1.0,), soak_s=HOUR, control=8)
        runs = [RolloutRun("sim-g1", Image("1.5.0-bad", sdc_per_board_hour=rate), START, plan)]
        days = 2.0 if quick else 3.0
    faults = FaultModel().noisy() if blips else FaultModel()
    return Scenario(boards=boards, days=days, seed=seed, quota_share=0.9, faults=faults), runs


def _run(args: tuple[str, int, int, bool, bool]) -> tuple[str, dict[str, Any], list[dict[str, Any]], float]:
    name, boards, seed, quick, blips = args
    scenario, runs = _scenario(name, boards, seed, quick, blips)
    t0 = time.perf_counter()
    base, reports = RolloutSim(scenario, runs).run_rollouts()
    return name, base.as_dict(), [r.as_dict() for r in reports], time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="600 boards, shorter runs")
    ap.add_argument("--boards", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--no-blips", action="store_true", help="no host blips nor lost checks (the quiet model)")
    args = ap.parse_args()
    use_repo_root()
    boards = args.boards or (600 if args.quick else 2000)
    names = ["good", "good_requeue", "bad", "bad_slow", "bad_unstaged"]
    say(f"{boards:,} boards; scenarios {', '.join(names)}")
    t0 = time.perf_counter()
    jobs = [(n, boards, args.seed, args.quick, not args.no_blips) for n in names]
    workers = args.workers or min(len(names), os.cpu_count() or 1)
    if workers <= 1:
        results = [_run(j) for j in jobs]
    else:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            results = list(pool.map(_run, jobs))
    wall = time.perf_counter() - t0
    by = {name: (base, reports, w) for name, base, reports, w in results}
    for name, (base, reports, w) in by.items():
        for r in reports:
            say(
                f"{name}: {r['generation']} -> {r['version']}: {r['state']} "
                f"(halted at wave {r['halted_at_wave']}), {r['duration_s']} s, exposed {r['exposed_boards']}, "
                f"jobs on image {r['jobs_on_image']} ({r['jobs_corrupt_on_image']} corrupt), peak out "
                f"{r['peak_out_share']:.3f} (any {r['peak_out_share_any']:.3f}), headroom {r['min_headroom']}; "
                f"waves {[(x['boards'], x['verdict']) for x in r['waves']]}; {w:.1f} s"
            )
        say(f"{name}: availability {base['availability']:.5f}, jobs done {base['jobs_done']}")

    def good(key: str, pick: Any) -> Any:
        return pick([r[key] for r in by["good"][1]]) if by["good"][1] else None

    bad, slow, unstaged = by["bad"][1][0], by["bad_slow"][1][0], by["bad_unstaged"][1][0]
    requeue = by["good_requeue"][1]
    headrooms = [r["min_headroom"] for n in names for r in by[n][1] if r["min_headroom"] is not None]
    at_drain = [r["min_headroom_at_drain"] for n in names for r in by[n][1] if r["min_headroom_at_drain"] is not None]
    metrics = {
        "boards": boards,
        "good_states": [r["state"] for r in by["good"][1]],
        "good_hours": [rnd(r["duration_s"] / HOUR if r["duration_s"] else None, 1) for r in by["good"][1]],
        "good_hours_max": rnd(good("duration_s", lambda xs: max((x or float("inf")) for x in xs)) / HOUR, 1),
        "good_requeue_hours": [rnd(r["duration_s"] / HOUR if r["duration_s"] else None, 1) for r in requeue],
        "good_peak_out_share": rnd(good("peak_out_share", max), 4),
        "good_peak_out_share_any": rnd(good("peak_out_share_any", max), 4),
        "good_requeue_peak_out_share": rnd(max(r["peak_out_share"] for r in requeue), 4),
        "good_availability": rnd(by["good"][0]["availability"], 5),
        "good_requeue_availability": rnd(by["good_requeue"][0]["availability"], 5),
        "good_requeue_attempts_lost": by["good_requeue"][0]["attempts_lost"],
        "good_attempts_lost": by["good"][0]["attempts_lost"],
        "min_headroom": min(headrooms) if headrooms else None,
        "min_headroom_at_drain": min(at_drain) if at_drain else None,
        "good_rollouts_halted": sum(r["state"] != "completed" for n in ("good", "good_requeue") for r in by[n][1]),
        "false_takeouts_per_1000_board_days": rnd(
            max(by[n][0]["false_takeouts_per_1000_board_days"] for n in names), 4
        ),
        "unapproved_boards_served": sum(by[n][0]["unapproved_boards_served"] for n in names),
        "blips": sum(by[n][0]["blips"] for n in names),
        "checks_lost": sum(by[n][0]["checks_lost"] for n in names),
        "stalls": sum(by[n][0]["stalls"] for n in names),
        "bad_state": bad["state"],
        "bad_halted_at_wave": bad["halted_at_wave"],
        "bad_reasons": bad["reasons"],
        "bad_exposed_share": rnd(bad["exposed_share_fleet"], 4),
        "bad_jobs_on_image": bad["jobs_on_image"],
        "bad_jobs_corrupt": bad["jobs_corrupt_on_image"],
        "bad_hours_to_rolled_back": rnd(bad["duration_s"] / HOUR if bad["duration_s"] else None, 1),
        "bad_slow_state": slow["state"],
        "bad_slow_halted_at_wave": slow["halted_at_wave"],
        "bad_slow_exposed_share": rnd(slow["exposed_share_fleet"], 4),
        "bad_slow_jobs_on_image": slow["jobs_on_image"],
        "bad_slow_jobs_corrupt": slow["jobs_corrupt_on_image"],
        "unstaged_state": unstaged["state"],
        "unstaged_exposed_share": rnd(unstaged["exposed_share_fleet"], 4),
        "unstaged_jobs_on_image": unstaged["jobs_on_image"],
        "unstaged_jobs_corrupt": unstaged["jobs_corrupt_on_image"],
        "wall_s": rnd(wall, 1),
    }
    targets = {
        "good_completed": target(float(all(s == "completed" for s in metrics["good_states"])), at_least=1.0),
        "good_rollouts_halted": target(metrics["good_rollouts_halted"], at_most=0),
        "false_takeouts_per_1000_board_days": target(metrics["false_takeouts_per_1000_board_days"], at_most=0.1),
        "unapproved_boards_served": target(metrics["unapproved_boards_served"], at_most=0),
        "bad_halted_by_wave_1": target(
            float(bad["halted_at_wave"] is not None and bad["halted_at_wave"] <= 1 and bad["state"] == "rolled_back"),
            at_least=1.0,
        ),
        "bad_exposed_share": target(metrics["bad_exposed_share"], at_most=0.02),
        "min_headroom_at_drain": target(metrics["min_headroom_at_drain"], at_least=0),
    }
    emit(BENCH, metrics, targets)


if __name__ == "__main__":
    main()
