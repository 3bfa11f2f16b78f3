"""The fleet simulator: the controller's policy over thousands of simulated boards, on a virtual clock.

from fleetyard.sim import Scenario, compare
reports = compare(Scenario(boards=1000, days=7))   # Fleetyard's policy and the two baselines

The simulator itself (:mod:`fleetyard.sim.fleet`) is imported on first use: every ``fleetyard``
command imports this package for its options (``SimPolicy``), and every process a fleet starts
is one.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from fleetyard.sim.compare import compare
from fleetyard.sim.model import FaultKind, FaultModel, Scenario, SimPolicy, Team, WorkloadModel

if TYPE_CHECKING:
    from fleetyard.sim.fleet import FleetSim, SimReport, simulate

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

_LAZY = {"FleetSim": "fleetyard.sim.fleet", "SimReport": "fleetyard.sim.fleet", "simulate": "fleetyard.sim.fleet"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
