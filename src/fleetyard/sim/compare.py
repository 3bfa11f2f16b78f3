"""One scenario under several policies, side by side, a process per policy (they share nothing)."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TYPE_CHECKING

from fleetyard.sim.model import Scenario, SimPolicy

if TYPE_CHECKING:
    from fleetyard.sim.fleet import SimReport

__all__ = ["compare"]


def compare(
    scenario: Scenario, policies: Sequence[SimPolicy | str] = tuple(SimPolicy), *, workers: int | None = None
) -> list[SimReport]:
    """The reports of ``scenario`` under each of ``policies``, in that order. ``workers``: processes
    (default: one per policy, at most the CPUs); 1 runs them here, one after the other."""
    from fleetyard.sim.fleet import simulate  # the simulator itself, on first use (see the package)

    chosen = [SimPolicy(p) for p in policies]
    n = workers or min(len(chosen), os.cpu_count() or 1)
    if n <= 1 or len(chosen) == 1:
        return [simulate(scenario, p) for p in chosen]
    # fork: the children need nothing re-imported, and the scenario is plain data.
    with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("fork")) as pool:
        return list(pool.map(simulate, [scenario] * len(chosen), chosen))
