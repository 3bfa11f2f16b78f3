"""The board lifecycle: one state per board and an explicit allow-list of transitions.

The store's ``switch_board_state`` is the only writer of a board's state; it checks
:func:`check_transition` and appends every transition to ``board_events``.
"""

from __future__ import annotations

from enum import StrEnum

from fleetyard.errors import Conflict


class BoardState(StrEnum):
    DISCOVERED = "discovered"
    ONBOARDING = "onboarding"
    AVAILABLE = "available"
    ALLOCATED = "allocated"
    DRAINED = "drained"
    SUSPECT = "suspect"
    REMEDIATING = "remediating"
    QUARANTINED = "quarantined"
    OFFLINE = "offline"
    SERVICING = "servicing"
    RETIRED = "retired"


class Actor(StrEnum):
    POLICY = "policy"
    OPERATOR = "operator"
    AGENT = "agent"


S = BoardState

# Invariant: a board in ALLOCATED always has exactly one live attempt (boards.attempt_id).
ALLOWED: dict[BoardState, frozenset[BoardState]] = {
    S.DISCOVERED: frozenset({S.ONBOARDING, S.AVAILABLE}),
    S.ONBOARDING: frozenset({S.AVAILABLE, S.QUARANTINED}),
    S.AVAILABLE: frozenset({S.ALLOCATED, S.DRAINED, S.SUSPECT, S.REMEDIATING, S.SERVICING}),
    S.ALLOCATED: frozenset({S.AVAILABLE, S.DRAINED, S.SUSPECT}),
    S.DRAINED: frozenset({S.AVAILABLE, S.REMEDIATING, S.SERVICING}),
    S.SUSPECT: frozenset({S.AVAILABLE, S.REMEDIATING, S.DRAINED}),
    # A rollback takes over a board its image broke (drained for the flash that is the remedy).
    S.REMEDIATING: frozenset({S.AVAILABLE, S.QUARANTINED, S.DRAINED}),
    S.QUARANTINED: frozenset({S.ONBOARDING}),
    # Back from offline (policy.liveness.back_from_offline): a check before service; a board never
    # approved waits for approval again, one that was onboarding starts its onboarding over, a
    # drained one stays drained, and one on the ladder goes on with its case.
    S.OFFLINE: frozenset({S.SUSPECT, S.REMEDIATING, S.DISCOVERED, S.ONBOARDING, S.DRAINED}),
    S.SERVICING: frozenset({S.AVAILABLE, S.SUSPECT, S.QUARANTINED}),
    S.RETIRED: frozenset(),
}
# Any live state may go offline (host lost) or be retired.
for _state in list(ALLOWED):
    if _state not in (S.RETIRED, S.OFFLINE):
        ALLOWED[_state] = ALLOWED[_state] | {S.OFFLINE, S.RETIRED}
ALLOWED[S.OFFLINE] = ALLOWED[S.OFFLINE] | {S.RETIRED}

# States in which a board still counts towards the fleet a job could one day run on.
SCHEDULABLE_SOMEDAY = frozenset(set(BoardState) - {S.RETIRED, S.QUARANTINED})


def can_transition(src: BoardState, dst: BoardState) -> bool:
    return dst in ALLOWED[src]


def check_transition(src: BoardState, dst: BoardState, *, board_id: str) -> None:
    """Raise :class:`Conflict` unless ``src → dst`` is on the allow-list."""
    if not can_transition(src, dst):
        allowed = ", ".join(sorted(ALLOWED[src])) or "none"
        raise Conflict(
            f"board {board_id} cannot go from {src} to {dst} (from {src} it may go to: {allowed})",
            detail={"board": board_id, "from": str(src), "to": str(dst)},
        )
