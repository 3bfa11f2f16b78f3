"""Brakes on automatic healing (pure).

**Lemons.** A board with more than :data:`LEMON_INCIDENTS` incidents (stretches of down time:
:mod:`fleetyard.policy.uptime`) in :data:`LEMON_WINDOW_S` keeps failing however often it is
healed: the next time it would return to service, it is quarantined instead, with the count and
the causes as its reason (Meta's cluster study calls these lemon nodes).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from fleetyard.policy.uptime import Incident

__all__ = ["LEMON_INCIDENTS", "LEMON_WINDOW_S", "lemon_reason"]

LEMON_INCIDENTS = 3  # more than this many in the window: a lemon
LEMON_WINDOW_S = 7 * 86400.0


def lemon_reason(
    incidents: Sequence[Incident], *, now: float, limit: int = LEMON_INCIDENTS, window_s: float = LEMON_WINDOW_S
) -> str | None:
    """Why a board is a lemon (its incidents of the window, by cause), or None."""
    recent = [i for i in incidents if now - window_s <= i.start <= now]
    if len(recent) <= limit:
        return None
    causes = Counter(f"{i.state}: {i.cause}" for i in recent)
    listed = ", ".join(f"{c} ({n})" for c, n in sorted(causes.items(), key=lambda cn: (-cn[1], cn[0])))
    days = window_s / 86400.0
    return f"lemon: {len(recent)} incidents in {days:g} days (more than {limit}): {listed}"
