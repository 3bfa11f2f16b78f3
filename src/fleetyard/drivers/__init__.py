"""Board drivers: one per kind of board. See :mod:`fleetyard.drivers.base` for the protocol."""

from fleetyard.drivers.base import (
    BoardDriver,
    BoardIdentity,
    BoardSession,
    DriverSpec,
    FaultInjectable,
    Flashable,
    Probe,
    Reflashable,
    Resettable,
    load_driver,
)

__all__ = [
    "BoardDriver",
    "BoardIdentity",
    "BoardSession",
    "DriverSpec",
    "FaultInjectable",
    "Flashable",
    "Probe",
    "Reflashable",
    "Resettable",
    "load_driver",
]
