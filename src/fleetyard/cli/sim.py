"""``fleetyard sim``: the fleet simulator, one scenario under Fleetyard's policy and two baselines.

fleetyard sim                                   # 1,000 boards, 7 days, all three policies
fleetyard sim --boards 10000 --days 30 --json   # what bench/fleet_sim.py runs
fleetyard sim --faults 5 --health health.yaml --policy fleetyard
fleetyard sim --workload examples/workloads/multi_team_day.yaml --boards 2880 --days 1 -p fleetyard
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from fleetyard.cli._common import JsonOpt, read_health_config
from fleetyard.cli._output import emit_json, err, fmt_duration, note, out, table
from fleetyard.sim import FaultModel, Scenario, SimPolicy, compare
from fleetyard.sim.workload import load_workload

if TYPE_CHECKING:
    from fleetyard.sim import SimReport


def _pct(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f} %"


def _dur(s: float | None) -> str:
    return "-" if s is None else (fmt_duration(s) or f"{s:.1f} s")


ROWS: tuple[tuple[str, str], ...] = (
    ("availability (in service and sound)", "availability"),
    ("availability by the event log", "availability_accounted"),
    ("goodput lost to faults", "goodput_loss"),
    ("MTTD, dead board", "mttd_s"),
    ("MTTD, silent corruption (worst)", "mttd_sdc_max_s"),
    ("silent corruption caught / missed", "sdc"),
    ("MTTR", "mttr_s"),
    ("incidents", "incidents"),
    ("quarantined (lemons)", "quarantined"),
    ("circuit-breaker trips", "breaker_trips"),
    ("jobs done / failed / wrong results", "jobs"),
    ("health-check time", "check_overhead"),
    ("wall time", "wall_s"),
)
# With a workload of preemptible jobs (--workload), how the scheduler held up too.
SCHEDULING_ROWS: tuple[tuple[str, str], ...] = (
    ("preemptions", "preemptions"),
    ("board-hours thrown away by preemption", "wasted"),
    ("most preemptions of one job", "max_preemptions_per_job"),
    ("utilisation while work waits", "utilisation_waiting"),
    ("fair-share error", "fairshare_error"),
    ("longest gang wait", "gang_wait_max_s"),
    ("plan() p99", "plan_p99_ms"),
)
# With --blips: what the noise did (none of it is a fault: each should stay 0).
NOISE_ROWS: tuple[tuple[str, str], ...] = (
    ("blips / checks that could not run / stalls", "noise"),
    ("boards taken out for nothing, per 1000 board-days", "false_takeouts_per_1000_board_days"),
    ("attempts re-run for nothing", "false_requeues"),
    ("work on unapproved boards", "unapproved_boards_served"),
)


def _cell(r: SimReport, key: str) -> str:
    if key in ("availability", "availability_accounted", "goodput_loss", "check_overhead"):
        return _pct(getattr(r, key))
    if key in ("mttd_s", "mttd_sdc_max_s", "mttr_s"):
        return _dur(getattr(r, key))
    if key == "sdc":
        return f"{r.sdc_caught} / {r.sdc_missed}"
    if key == "quarantined":
        return f"{r.quarantined} ({r.lemons})"
    if key == "jobs":
        return f"{r.jobs_done:,} / {r.jobs_failed:,} / {r.jobs_corrupt:,}"
    if key == "wall_s":
        return f"{r.wall_s:.1f} s"
    if key in ("utilisation_waiting", "fairshare_error"):
        return _pct(getattr(r, key), 1)
    if key == "gang_wait_max_s":
        return _dur(r.gang_wait_max_s)
    if key == "wasted":
        share = r.wasted_board_hours / r.board_hours_run if r.board_hours_run else 0.0
        return f"{r.wasted_board_hours:,.1f} of {r.board_hours_run:,.0f} ({_pct(share, 2)})"
    if key == "noise":
        return f"{r.blips:,} / {r.checks_lost:,} / {r.stalls:,}"
    if key == "false_takeouts_per_1000_board_days":
        return f"{r.false_takeouts_per_1000_board_days:.3f}"
    if key == "plan_p99_ms":
        return "-" if r.plan_p99_ms is None else f"{r.plan_p99_ms:.1f} ms"
    return f"{getattr(r, key):,}"


def sim(
    boards: Annotated[int, typer.Option("--boards", min=8, help="Simulated boards (8 a host).")] = 1000,
    days: Annotated[float, typer.Option("--days", min=0.01, help="Simulated days.")] = 7.0,
    policy: Annotated[
        list[SimPolicy] | None, typer.Option("--policy", "-p", help="A policy to run (repeat; default: all three).")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the faults, phases and work.")] = 0,
    faults: Annotated[
        float | None, typer.Option("--faults", min=0.0, help="Board faults per 1000 board-days (default 1.0).")
    ] = None,
    sdc: Annotated[
        float | None,
        typer.Option("--sdc", min=0.0, help="Silent data corruptions per 1000 board-days (default 0.02)."),
    ] = None,
    host_loss: Annotated[
        float | None, typer.Option("--host-loss", min=0.0, help="Host losses per 1000 host-days (default 0.5).")
    ] = None,
    permanent: Annotated[
        float | None,
        typer.Option("--permanent", min=0.0, max=1.0, help="Share of faults that need a repair (default 0.25)."),
    ] = None,
    health: Annotated[
        Path | None, typer.Option("--health", help="A health-check config (YAML) instead of the default.")
    ] = None,
    workload: Annotated[
        Path | None,
        typer.Option(
            "--workload",
            help="Teams, cohorts, quotas, classes, arrivals and job shapes (YAML; see fleetyard.sim.workload) "
            "instead of the default three teams.",
        ),
    ] = None,
    blips: Annotated[
        bool,
        typer.Option(
            "--blips",
            help="The control plane's noise: host blips of up to 30 s on 1 % of hosts a day, 1 % of "
            "checks that cannot run, the control plane falling behind for 5 s to 2 min four times a day "
            "(none of it a fault).",
        ),
    ] = False,
    hosts_per_rack: Annotated[int, typer.Option("--hosts-per-rack", min=1, help="Hosts a rack.")] = 16,
    workers: Annotated[int | None, typer.Option("--workers", min=1, help="Processes (default: one per CPU).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Simulate a fleet with faults and work, under Fleetyard's self-healing, manual clearing
    (8-hour operator response), and no health checks; compare availability, goodput, MTTD."""
    changes: dict[str, Any] = {
        "board_faults_per_1000_board_days": faults,
        "silent_corruption_per_1000_board_days": sdc,
        "host_loss_per_1000_host_days": host_loss,
        "permanent_share": permanent,
    }
    fm = FaultModel(**{k: v for k, v in changes.items() if v is not None})
    if blips:
        fm = fm.noisy()
    scenario = Scenario(boards=boards, days=days, seed=seed, faults=fm, hosts_per_rack=hosts_per_rack)
    if workload is not None:
        scenario = dataclasses.replace(scenario, workload=load_workload(workload), scheduling_figures=True)
    if health is not None:
        scenario = dataclasses.replace(scenario, health=read_health_config(health))
    chosen = policy or list(SimPolicy)
    if not as_json:
        err().print(f"simulating {boards:,} boards for {days:g} days under {', '.join(chosen)} …")
    reports = compare(scenario, chosen, workers=workers)
    if as_json:
        emit_json([r.as_dict() for r in reports])
        return
    out().print(
        table(
            ["", *(r.policy for r in reports)],
            [
                (label, *(_cell(r, k) for r in reports))
                for label, k in ROWS
                + (SCHEDULING_ROWS if scenario.scheduling_figures else ())
                + (NOISE_ROWS if blips else ())
            ],
        )
    )
    note(
        "availability: board-time in service and sound over board-time counted; a board that hangs or "
        "computes wrong numbers while in service counts as down. Fault model and sources: fleetyard.sim.model."
    )
