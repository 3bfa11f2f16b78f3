"""Fair share by decayed usage (pure), as Slurm's multifactor priority does.

A queue's usage is board-seconds with exponential decay: what it held an hour ago counts a little
less than what it holds now, and what it held ``half_life_s`` ago half as much. Within a priority
class, the queue that used less of its share goes first.
"""

from __future__ import annotations

import math

__all__ = ["DEFAULT_HALF_LIFE_S", "accrue", "share_key"]

DEFAULT_HALF_LIFE_S = 7 * 24 * 3600.0


def accrue(usage: float, boards_held: int, dt: float, half_life_s: float = DEFAULT_HALF_LIFE_S) -> float:
    """Usage after ``dt`` seconds more of holding ``boards_held`` boards.

    The integral of ``boards_held`` over the interval, each instant decayed by its age at the end:
    ``u·2^(-dt/h) + b·h/ln2·(1 - 2^(-dt/h))``. Accruing in several steps gives the same as in one.
    """
    if dt <= 0:
        return usage
    if half_life_s <= 0:
        raise ValueError(f"half_life_s must be > 0, got {half_life_s}")
    keep = math.pow(2.0, -dt / half_life_s)
    return usage * keep + boards_held * half_life_s / math.log(2.0) * (1.0 - keep)


def share_key(usage: float, weight: float) -> float:
    """Lower goes first: usage per unit of the queue's share (its nominal boards; 1 when unlimited)."""
    return usage / weight if weight > 0 else usage
