"""Shared fixtures and hooks."""

from __future__ import annotations

import os
import signal

import pytest

from fleetyard.parent_death import set_parent_death_signal


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # An xdist worker dies with the pytest that started it, even one killed with SIGKILL; the
        # processes its tests started die with it in turn (each has its own parent-death signal).
        set_parent_death_signal(signal.SIGKILL)
