"""The board driver protocol.

A driver knows one kind of board. The agent builds one driver per host from a spec string
(``sim:8``, ``sim:8:sim-g2``, ``cpu``, ``cuda``) and uses it to enumerate boards, read telemetry
and probe health; each per-board worker process builds the same driver again and opens a
:class:`BoardSession` on its board. Optional abilities are separate protocols the caller tests
for with ``isinstance``: :class:`Resettable`, :class:`Flashable`, :class:`Reflashable`,
:class:`FaultInjectable`.

Drivers are found through the ``fleetyard.drivers`` entry point group, by the spec's name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Protocol, runtime_checkable

from fleetyard.errors import BadRequest


@dataclass(frozen=True)
class BoardIdentity:
    serial: str
    generation: str
    slot: int
    firmware: str
    device: str
    labels: dict[str, str] = field(default_factory=dict)
    hardware_revision: str | None = None  # the board's revision as the driver reads it; None: unknown


@dataclass(frozen=True)
class Probe:
    ok: bool
    reason: str | None = None


@dataclass(frozen=True)
class DriverSpec:
    """A parsed ``NAME[:ARG[:ARG…]]`` driver spec, e.g. ``sim:8:sim-g1,sim-g2``."""

    name: str
    args: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> DriverSpec:
        name, *args = text.strip().split(":")
        if not name:
            raise BadRequest(f"empty driver spec {text!r}; use e.g. 'sim:8' or 'cpu'")
        return cls(name=name, args=tuple(args))

    def __str__(self) -> str:
        return ":".join((self.name, *self.args))


class BoardSession(Protocol):
    """A board opened by its worker process for running workloads. A session whose board is some
    of the host's cores says which in an attribute ``cores`` (a tuple of CPU ids): the board's
    ranks are then held to them (see :mod:`fleetyard.workloads.rank_cgroup`)."""

    def env(self) -> dict[str, str]:
        """Environment a workload process needs to reach this board (FLEETYARD_DEVICE at least)."""
        ...

    def check(self) -> None:
        """Raise :class:`BoardFault` if the board cannot run work right now."""
        ...

    def close(self) -> None: ...


class BoardFault(Exception):
    """The board (not the workload) failed: the attempt ends as an infra error."""


@runtime_checkable
class BoardDriver(Protocol):
    name: str

    def discover(self) -> list[BoardIdentity]:
        """The boards this host has now (a board that fell off the bus is missing)."""
        ...

    def telemetry(self, serial: str) -> dict[str, float]:
        """Numeric readings: temperature_c, power_w, utilization_pct, ecc_corrected, …"""
        ...

    def probe(self, serial: str) -> Probe:
        """A cheap liveness check of one board."""
        ...

    def open_session(self, serial: str) -> BoardSession: ...


@runtime_checkable
class Resettable(Protocol):
    def reset(self, serial: str, level: str = "soft") -> None: ...


@runtime_checkable
class Flashable(Protocol):
    def flash(self, serial: str, image: Path, version: str) -> str:
        """Write a firmware image; return the firmware version the board reports afterwards."""
        ...


@runtime_checkable
class Reflashable(Protocol):
    def reflash(self, serial: str) -> str:
        """Write the firmware the board already runs again, from the driver's own copy (a
        remediation step: it repairs a corrupt flash); return the version the board reports."""
        ...


@runtime_checkable
class FaultInjectable(Protocol):
    def inject(self, serial: str, kind: str) -> None: ...

    def clear(self, serial: str, kind: str | None = None) -> None: ...

    def active_faults(self, serial: str) -> set[str]: ...


def load_driver(spec: str | DriverSpec, *, host: str, state_dir: Path | None = None) -> BoardDriver:
    """Build the driver a spec names, from the ``fleetyard.drivers`` entry points."""
    parsed = spec if isinstance(spec, DriverSpec) else DriverSpec.parse(spec)
    found = {ep.name: ep for ep in entry_points(group="fleetyard.drivers")}
    if parsed.name not in found:
        known = ", ".join(sorted(found)) or "none installed"
        raise BadRequest(f"unknown driver {parsed.name!r} (known drivers: {known})")
    factory = found[parsed.name].load()
    driver: BoardDriver = factory(parsed, host=host, state_dir=state_dir)
    return driver
