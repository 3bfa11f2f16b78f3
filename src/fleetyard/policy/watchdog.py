"""Watchdogs on transitional states (pure): a board that stays too long where it should only pass
through is failed safely, with the time it spent as its reason (Ironic's and MAAS's watchdog
timeouts). The time counts from the board's last transition (``boards.state_changed_at``), so a
restarted controller finds what got stuck while it was away.

- **onboarding** past its timeout: quarantined (it never proved itself); the controller does not
  ask about a board with an open onboarding record: each step keeps its own deadline there
  (:mod:`fleetyard.policy.onboarding`), and a queued board may wait longer than this for its place;
- **remediating**: quarantined (the step did not come back);
- **servicing** (an operator's maintenance, e.g. a firmware flash): suspect, so that it must pass
  a check before it serves again;
- **suspect**, still failing its checks: through remediating to quarantine.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from fleetyard.domain.board import BoardState

__all__ = ["DEFAULT_TIMEOUTS_S", "Overdue", "StateView", "overdue"]

S = BoardState
DEFAULT_TIMEOUTS_S: Mapping[BoardState, float] = {
    S.ONBOARDING: 2 * 3600.0,
    S.REMEDIATING: 30 * 60.0,
    S.SERVICING: 8 * 3600.0,
    S.SUSPECT: 3600.0,
}
_PATHS: Mapping[BoardState, tuple[BoardState, ...]] = {
    S.ONBOARDING: (S.QUARANTINED,),
    S.REMEDIATING: (S.QUARANTINED,),
    S.SERVICING: (S.SUSPECT,),
    S.SUSPECT: (S.REMEDIATING, S.QUARANTINED),
}
_WHAT = {
    S.ONBOARDING: "onboarding did not finish",
    S.REMEDIATING: "remediation did not finish",
    S.SERVICING: "servicing did not finish",
    S.SUSPECT: "still not passing its checks",
}


@dataclass(frozen=True)
class StateView:
    id: str
    state: BoardState
    since: float  # when it entered the state


@dataclass(frozen=True)
class Overdue:
    board: str
    path: tuple[BoardState, ...]  # the transitions to make, in order
    reason: str


def overdue(
    boards: Iterable[StateView], *, now: float, timeouts: Mapping[BoardState, float] = DEFAULT_TIMEOUTS_S
) -> list[Overdue]:
    """The boards past their state's timeout, in id order, with where they go and why."""
    out = []
    for b in sorted(boards, key=lambda b: b.id):
        limit = timeouts.get(b.state)
        if limit is None or now - b.since <= limit:
            continue
        reason = f"watchdog: {_WHAT[b.state]} within {_fmt(limit)}"
        if b.state is S.SERVICING:
            reason += "; it must pass a check before it serves again"
        out.append(Overdue(b.id, _PATHS[b.state], reason))
    return out


def _fmt(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    return f"{seconds / 60:g} min"
