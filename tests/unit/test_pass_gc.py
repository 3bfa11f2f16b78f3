"""The cyclic collector kept out of scheduling passes (:mod:`fleetyard.pass_gc`)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from fleetyard.pass_gc import PassCollector


@pytest.fixture
def collector_off() -> Iterator[None]:
    """Only the collections the test makes happen (none behind its back), and nothing stays frozen."""
    was = gc.isenabled()
    gc.disable()
    gc.unfreeze()
    yield
    gc.unfreeze()
    if was:
        gc.enable()


class Cycle:
    def __init__(self) -> None:
        self.me = self


def test_a_pass_starts_frozen_and_cyclic_garbage_waits_for_the_next_collection(collector_off: None) -> None:
    collector = PassCollector(every_s=600.0)
    collector.before_pass(0.0)  # the first pass collects, then freezes what the process holds
    assert gc.get_freeze_count() > 0
    garbage = weakref.ref(Cycle())  # only the cyclic collector can free it
    collector.before_pass(300.0)  # too soon: frozen with the rest, not collected
    assert garbage() is not None
    collector.before_pass(900.0)  # due: collected, then the rest frozen again
    assert garbage() is None and gc.get_freeze_count() > 0


def test_the_simulator_thaws_what_it_froze(collector_off: None) -> None:
    from fleetyard.sim import Scenario
    from fleetyard.sim.fleet import simulate

    simulate(Scenario(boards=16, days=0.02, seed=1, freeze_gc=True), "fleetyard")
    assert gc.get_freeze_count() == 0
