"""Child processes that die with their parent, even when the parent is killed outright (SIGKILL):
Linux's parent-death signal (``prctl(PR_SET_PDEATHSIG)``), set in the child before it execs.

Used by ``fleetyard up`` for the fleet it starts, and by the test and benchmark harnesses for
theirs, so that no server, controller, agent or database outlives the process that started it.
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["die_with_parent", "set_parent_death_signal"]

_PR_SET_PDEATHSIG = 1


@functools.cache
def _prctl() -> Any:
    # Resolved in the parent: a forked child of a threaded process must not dlopen (loader locks).
    if sys.platform != "linux":
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def set_parent_death_signal(sig: int = signal.SIGTERM, *, parent: int | None = None) -> bool:
    """Have the calling process get ``sig`` when its parent dies; if ``parent`` (a pid) is given and
    is no longer the parent (it died before this call), exit at once. False where unsupported."""
    prctl = _prctl()
    if prctl is None or prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        return False
    if parent is not None and os.getppid() != parent:
        os._exit(1)  # the parent died between our fork and the prctl: it would never signal us
    return True


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` for :class:`subprocess.Popen`: the child gets ``sig`` when this process dies
    (None where unsupported). With ``user=``, it runs after the switch of user, which would clear it."""
    if _prctl() is None:
        return None
    parent = os.getpid()

    def preexec() -> None:
        set_parent_death_signal(sig, parent=parent)

    return preexec
