"""What the fleet simulator simulates: the fleet, its faults, its work, and the policy under test.

**Fault model** (:class:`FaultModel`); the defaults and where they come from:

- *Board faults*: 1.0 per 1000 board-days. Llama 3's 54-day pre-training snapshot on 16,384 GPUs
  (Dubey et al., "The Llama 3 Herd of Models", 2024, table 5) had 419 unexpected job interruptions,
  0.47 per 1000 GPU-days, 78 % of them hardware. We double it for the faults that do not stop a job
  (ECC storms, thermal trouble, seen by telemetry) and for older boards in an inference fleet.
- *Kinds*: hang 30 %, crash 20 %, ECC storm 20 % (Llama 3: HBM 17 %), bus drop 10 % (PCIe, NIC),
  firmware 10 %, thermal 10 %; each is *permanent* (needs a repair: RMA) with ``permanent_share``
  25 %, except crashes, which are one-shot. A transient fault is healed by its kind's remedy
  (:data:`HEALED_BY`): a hang by any reset, a transient ECC storm by the row remapping a reset does,
  a bus drop or thermal trip by a host reboot, a firmware fault by a reflash.
- *Silent data corruption*: 0.02 per 1000 board-days, permanent (a "mercurial core"). Llama 3
  saw 6 in 54 days (0.007 per 1000 GPU-days); Dixit et al. ("Silent Data Corruptions at Scale",
  Meta 2021) and Hochschild et al. ("Cores that don't count", Google 2021) report rates of a
  few per ten thousand machines: we take three times Llama 3's.
- *Lemons*: 0.5 % of boards fail 30 times as often (Meta's "Revisiting Reliability in Large-Scale
  Machine Learning Research Clusters", Kokolis et al. 2024, on lemon nodes).
- *Host loss*: 0.5 per 1000 host-days (Llama 3: host maintenance and network, 16 % of 419 on
  2,048 hosts); the host is back after 2 h on average (exponential).
- *Repairs*: a quarantined board is back after 5 days (an RMA swap), through an L3 burn-in.
- *Noise* (off by default; :meth:`FaultModel.noisy` is what the benchmarks run): *host blips*, a
  host silent for seconds to a minute (a loaded machine, a long pause, a network blip; durations
  log-uniform between ``blip_min_s`` and ``blip_max_s``) and back as it was; *checks that
  cannot run* (their agent restarted under them, ``checks_lost_share``), which end with no
  verdict; and *a control plane that falls behind* (``stalls_per_day``, log-uniform between
  ``stall_min_s`` and ``stall_max_s``): no heartbeat is recorded and the controller does not
  pass until it catches up, then it judges every host by the policy's rules
  (:func:`~fleetyard.policy.liveness.judge_hosts` from
  :func:`~fleetyard.policy.liveness.watching_since`). None is a fault: the policy must not take a
  board out, nor re-run work, for any. A host
  is unreachable after ``Liveness.unreachable_after_s`` of silence (no new work) and lost after
  ``Liveness.lost_after_s`` (the controller's thresholds, :mod:`fleetyard.policy.liveness`).

**Workload** (:class:`WorkloadModel`): three teams keep a backlog queued, so the fleet stays busy,
each with a nominal quota of its share of every generation in one cohort (unused quota is lent):
compiler CI sweeps (4 boards of a host, median 1.5 h, 30 %), AI evaluations (8 boards, median 3 h,
40 %) and robotics rollouts (2-8 boards, median 4 h, 30 %); durations log-normal, capped at 4-8 h;
a job restarts from scratch when an attempt is lost. Nothing is preemptible. Any other workload
(teams in cohorts, priority classes, arrival bursts, gangs, preemptible work) is written in a
file: :mod:`fleetyard.sim.workload`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

from fleetyard.domain.health_config import DEFAULT_HEALTH, HealthConfig, RemedyOp
from fleetyard.policy.liveness import Liveness
from fleetyard.policy.preemption_holds import DEFAULT_PREEMPT_PROTECT_S
from fleetyard.sim.workload import Team, WorkloadModel

__all__ = [
    "HEALED_BY",
    "FaultKind",
    "FaultModel",
    "Scenario",
    "SimPolicy",
    "Team",
    "WorkloadModel",
]

DAY_S = 86400.0
HOUR_S = 3600.0


class SimPolicy(StrEnum):
    """The policies a scenario runs under."""

    FLEETYARD = "fleetyard"  # checks, the remediation ladder, brakes
    MANUAL = "manual"  # LAVA-like: the same checks, but a failed board waits for an operator
    NO_CHECKS = "no-checks"  # no probes, rules or checks: faults are seen when jobs fail


class FaultKind(StrEnum):
    HANG = "hang"
    CRASH = "crash"
    ECC_STORM = "ecc_storm"
    BUS_DROP = "bus_drop"
    FIRMWARE = "firmware"
    THERMAL = "thermal"
    SILENT_CORRUPTION = "silent_corruption"


_RESETS = frozenset({RemedyOp.SOFT_RESET, RemedyOp.HARD_RESET, RemedyOp.REFLASH, RemedyOp.HOST_REBOOT})
# What heals a transient fault of each kind (a crash needs nothing; permanent faults: a repair).
HEALED_BY: Mapping[FaultKind, frozenset[RemedyOp]] = {
    FaultKind.HANG: _RESETS,
    FaultKind.CRASH: _RESETS,
    FaultKind.ECC_STORM: _RESETS,
    FaultKind.BUS_DROP: frozenset({RemedyOp.HOST_REBOOT}),
    FaultKind.FIRMWARE: frozenset({RemedyOp.REFLASH}),
    FaultKind.THERMAL: frozenset({RemedyOp.HOST_REBOOT}),
    FaultKind.SILENT_CORRUPTION: frozenset(),
}


@dataclass(frozen=True)
class FaultModel:
    board_faults_per_1000_board_days: float = 1.0
    mix: Mapping[FaultKind, float] = field(
        default_factory=lambda: {
            FaultKind.HANG: 0.30,
            FaultKind.CRASH: 0.20,
            FaultKind.ECC_STORM: 0.20,
            FaultKind.BUS_DROP: 0.10,
            FaultKind.FIRMWARE: 0.10,
            FaultKind.THERMAL: 0.10,
        }
    )
    permanent_share: float = 0.25
    silent_corruption_per_1000_board_days: float = 0.02
    lemon_share: float = 0.005
    lemon_factor: float = 30.0
    host_loss_per_1000_host_days: float = 0.5
    host_down_mean_s: float = 2 * HOUR_S
    repair_turnaround_s: float = 5 * DAY_S
    blips_per_host_day: float = 0.0
    blip_min_s: float = 1.0
    blip_max_s: float = 30.0
    checks_lost_share: float = 0.0
    # The control plane falling behind (a busy machine, a slow store): for a while neither the
    # server records heartbeats nor the controller passes; then both catch up.
    stalls_per_day: float = 0.0
    stall_min_s: float = 5.0
    stall_max_s: float = 120.0

    def noisy(self, *, blips_per_host_day: float = 0.01, blip_max_s: float = 30.0) -> FaultModel:
        """This model with the control plane's noise: blips of up to ``blip_max_s`` on 1 % of
        hosts a day, 1 % of checks that cannot run, and a control plane that falls behind for
        5 s to 2 min four times a day."""
        return replace(
            self, blips_per_host_day=blips_per_host_day, blip_max_s=blip_max_s, checks_lost_share=0.01,
            stalls_per_day=4.0,
        )  # fmt: skip

    def __post_init__(self) -> None:
        if abs(sum(self.mix.values()) - 1.0) > 1e-6:
            raise ValueError(f"fault mix shares must sum to 1 (they sum to {sum(self.mix.values()):g})")
        if FaultKind.SILENT_CORRUPTION in self.mix:
            raise ValueError("silent corruption has its own rate (silent_corruption_per_1000_board_days)")
        if not 0.0 <= self.permanent_share <= 1.0:
            raise ValueError(f"permanent_share must be within [0, 1], got {self.permanent_share}")
        if not 0.0 < self.blip_min_s <= self.blip_max_s:
            raise ValueError(f"blips last 0 < blip_min_s <= blip_max_s, got {self.blip_min_s}, {self.blip_max_s}")
        if self.stalls_per_day < 0 or not 0.0 < self.stall_min_s <= self.stall_max_s:
            raise ValueError(
                f"stalls_per_day >= 0 and 0 < stall_min_s <= stall_max_s, got {self.stalls_per_day},"
                f" {self.stall_min_s}, {self.stall_max_s}"
            )
        if not 0.0 <= self.checks_lost_share < 1.0:
            raise ValueError(f"checks_lost_share must be within [0, 1), got {self.checks_lost_share}")


@dataclass(frozen=True)
class Scenario:
    boards: int = 10_000
    days: float = 30.0
    boards_per_host: int = 8
    hosts_per_rack: int = 16
    generations: tuple[str, ...] = ("sim-g1", "sim-g2", "sim-g3")
    seed: int = 0
    faults: FaultModel = field(default_factory=FaultModel)
    workload: WorkloadModel = field(default_factory=WorkloadModel)
    health: HealthConfig = field(default_factory=lambda: DEFAULT_HEALTH)
    heartbeat_s: float = 10.0
    liveness: Liveness = field(default_factory=Liveness)  # the controller's unreachable and lost thresholds
    health_pass_s: float = 1.0  # the controller's health pass (controller.loop.SLOW_EVERY_S)
    requeue_grace_s: float = (
        30.0  # a lost host's attempts wait this long before they re-queue (the controller: its host timeout)
    )
    pass_s: float = 300.0  # the scheduler's pass, at most this often (a real controller: far more often)
    window: int = 16  # jobs left waiting that a pass explains and reserves boards for (the controller: 200-2000)
    operator_response_s: float = 8 * HOUR_S
    op_s: Mapping[RemedyOp, float] = field(
        default_factory=lambda: {
            RemedyOp.SOFT_RESET: 60.0,
            RemedyOp.HARD_RESET: 180.0,
            RemedyOp.REFLASH: 600.0,
            RemedyOp.HOST_REBOOT: 600.0,
        }
    )
    l1_s: float = 30.0  # an L1 check's run (seconds: a golden artifact)
    preempt_stop_s: float = 10.0  # a preempted attempt's ranks stop this long after the pass that chose it
    preempt_protect_s: float = DEFAULT_PREEMPT_PROTECT_S  # the controller's --preempt-protect
    # Utilisation and fair share while work waits, sampled every pass (a count over the boards:
    # on by itself for a preemptible workload, off for the fault study's 10,000 boards).
    scheduling_figures: bool = False
    # Keep the cyclic collector out of scheduling passes as the controller program does
    # (fleetyard.pass_gc): plan times measured here are then the controller's. It freezes all
    # the process holds while the run lasts: for a process that runs the simulator alone.
    freeze_gc: bool = False
    # Of each generation, what the teams' nominal quotas promise altogether (the rest is only
    # lent): 1 promises every board; a fleet that keeps headroom for maintenance promises less.
    quota_share: float = 1.0

    def __post_init__(self) -> None:
        if self.boards < self.boards_per_host:
            raise ValueError(f"a scenario needs at least one host of {self.boards_per_host} boards")
        if self.days <= 0:
            raise ValueError(f"days must be > 0, got {self.days}")
