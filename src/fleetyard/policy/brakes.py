"""Brakes on automatic healing (pure).

**The circuit breaker.** When many boards of a generation go out of service at once, the fault
is likelier in what judges them (a bad probe, firmware push or rule) than in every board. So at
most :class:`BreakerLimits` boards of a generation (10 %, and never more than 50) may be taken
out by the policy within 15 minutes; the next one trips the generation's breaker instead. Then
no board of it is taken out automatically (nor quarantined) until an operator resets it;
boards that pass their checks still return to service.

**Lemons.** A board with more than :data:`LEMON_INCIDENTS` incidents (stretches of down time:
:mod:`fleetyard.policy.uptime`) in :data:`LEMON_WINDOW_S` keeps failing however often it is
healed: the next time it would return to service, it is quarantined instead, with the count and
the causes as its reason (Meta's cluster study calls these lemon nodes).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass

from fleetyard.domain.health_config import HealthConfig
from fleetyard.policy.uptime import Incident

__all__ = [
    "CONTROL_PLANE",
    "LEMON_INCIDENTS",
    "LEMON_WINDOW_S",
    "BreakerLimits",
    "Intake",
    "Tripped",
    "lemon_reason",
    "take_out",
]

# The breaker of the control plane itself (:class:`~fleetyard.policy.liveness.HostBrake`): while
# it is tripped, every generation's is.
CONTROL_PLANE = "control-plane"


@dataclass(frozen=True)
class Tripped:
    """The generations whose breaker is tripped: every one while the control plane's is."""

    breakers: frozenset[str] = frozenset()

    def __contains__(self, generation: object) -> bool:
        return CONTROL_PLANE in self.breakers or generation in self.breakers


@dataclass(frozen=True)
class BreakerLimits:
    fraction: float = 0.10  # of a generation's boards
    boards: int = 50  # and never more than this many
    window_s: float = 900.0

    @classmethod
    def of(cls, config: HealthConfig) -> BreakerLimits:
        """The limits a health configuration sets (its ``breaker:``)."""
        return cls(**config.breaker.model_dump())

    def limit(self, size: int) -> int:
        """How many boards of a generation of ``size`` may go out within the window."""
        return max(1, min(math.ceil(self.fraction * size), self.boards))


@dataclass
class Intake:
    """What :func:`take_out` decided: boards to take out, and breakers to trip (generation -> why)."""

    boards: list[str]
    trips: dict[str, str]


def take_out(
    candidates: Mapping[str, Sequence[str]],
    *,
    recent: Mapping[str, int],
    sizes: Mapping[str, int],
    tripped: Container[str],
    limits: BreakerLimits = BreakerLimits(),
) -> Intake:
    """Of the boards the policy would take out of service (generation -> board ids), those it may:
    none of a generation whose breaker is tripped; of the others, as many as the limit leaves
    after the ``recent`` ones (taken out within the window), and the next one trips it."""
    out = Intake([], {})
    for gen in sorted(candidates):
        if gen in tripped:
            continue
        limit, taken = limits.limit(sizes.get(gen, 0)), recent.get(gen, 0)
        for board in sorted(candidates[gen]):
            if taken + 1 > limit:
                minutes = limits.window_s / 60
                out.trips[gen] = (
                    f"circuit breaker: {taken + 1} boards of {gen} would be out of service within "
                    f"{minutes:g} min, more than {limit} ({limits.fraction:.0%} of {sizes.get(gen, 0)}, "
                    f"at most {limits.boards}); automatic remediation stopped until an operator resets it"
                )
                break
            out.boards.append(board)
            taken += 1
    return out


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
