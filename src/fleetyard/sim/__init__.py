"""The fleet simulator: the controller's policy over thousands of simulated boards, on a virtual clock.

from fleetyard.sim import Scenario, compare
reports = compare(Scenario(boards=1000, days=7))   # Fleetyard's policy and the two baselines
"""

from fleetyard.sim.compare import compare
from fleetyard.sim.fleet import FleetSim, SimReport, simulate
from fleetyard.sim.model import FaultKind, FaultModel, Scenario, SimPolicy, Team, WorkloadModel

__all__ = [
    "FaultKind",
    "FaultModel",
    "FleetSim",
    "Scenario",
    "SimPolicy",
    "SimReport",
    "Team",
    "WorkloadModel",
    "compare",
    "simulate",
]
