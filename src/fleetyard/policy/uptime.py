"""Uptime accounting (pure): boards' state transitions in, availability and incidents out.

A board's time between ``since`` and ``until`` is cut by its transitions (``board_events``):

- **in service**: available or allocated;
- **not counted**: discovered, onboarding, retired (not yet, or no longer, part of the fleet), and
  planned maintenance: drained or servicing by an operator's hand;
- **down**: everything else: suspect, remediating, quarantined, offline, and drained or servicing
  by the policy or an agent.

Availability is in-service time over counted time (board and fleet). An *incident* is a stretch
of down time; it starts when a board goes down and ends when it leaves the down states (repaired:
back in service). MTTR is the mean length of repaired incidents, MTBI the in-service time per
incident, and MTTD the mean time from an injected fault (the admin API's fault orders) to the
board's next incident. Causes are the reasons the incidents began with, their specifics cut off
(``"failed its probe: ecc storm"`` → ``"failed its probe"``).

    figures = uptime(transitions, generation_of, since=t0, until=t1, faults=faults)
    figures.availability, figures.mttr_s, figures.by_cause
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from fleetyard.domain.board import Actor, BoardState

__all__ = ["BoardUptime", "Fault", "FleetUptime", "Incident", "Transition", "counted", "uptime"]

S = BoardState
IN_SERVICE = frozenset({S.AVAILABLE, S.ALLOCATED})
NOT_IN_FLEET = frozenset({S.DISCOVERED, S.ONBOARDING, S.RETIRED})
MAINTENANCE = frozenset({S.DRAINED, S.SERVICING})  # planned when an operator put it there
DAY_S = 86400.0


@dataclass(frozen=True)
class Transition:
    board: str
    at: float
    to_state: BoardState
    actor: Actor = Actor.POLICY
    reason: str = ""


@dataclass(frozen=True)
class Fault:
    """A fault injected on a board at a time (what MTTD is measured from)."""

    board: str
    at: float
    kind: str = ""


@dataclass(frozen=True)
class Incident:
    board: str
    generation: str
    start: float
    end: float | None  # None: still down at ``until``
    state: BoardState  # the down state it began with
    cause: str
    repaired: bool  # it ended back in service

    @property
    def duration_s(self) -> float | None:
        return None if self.end is None else self.end - self.start


@dataclass(frozen=True)
class BoardUptime:
    board: str
    generation: str
    counted_s: float
    in_service_s: float
    incidents: int

    @property
    def availability(self) -> float | None:
        return self.in_service_s / self.counted_s if self.counted_s > 0 else None


@dataclass
class FleetUptime:
    since: float
    until: float
    boards: list[BoardUptime] = field(default_factory=list)
    incidents: list[Incident] = field(default_factory=list)
    mttd_s: float | None = None
    faults_detected: int = 0
    faults_undetected: int = 0

    @property
    def counted_s(self) -> float:
        return sum(b.counted_s for b in self.boards)

    @property
    def in_service_s(self) -> float:
        return sum(b.in_service_s for b in self.boards)

    @property
    def availability(self) -> float | None:
        counted = self.counted_s
        return self.in_service_s / counted if counted > 0 else None

    @property
    def mttr_s(self) -> float | None:
        done = [i.duration_s for i in self.incidents if i.repaired and i.duration_s is not None]
        return sum(done) / len(done) if done else None

    @property
    def mtbi_s(self) -> float | None:
        return self.in_service_s / len(self.incidents) if self.incidents else None

    @property
    def incidents_per_1000_board_days(self) -> float | None:
        days = self.counted_s / DAY_S
        return 1000.0 * len(self.incidents) / days if days > 0 else None

    @property
    def by_cause(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for i in self.incidents:
            out[f"{i.state}: {i.cause}"] += 1
        return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))

    @property
    def by_generation(self) -> dict[str, dict[str, float | int | None]]:
        """generation -> boards, availability, incidents."""
        counted: dict[str, float] = defaultdict(float)
        served: dict[str, float] = defaultdict(float)
        boards: dict[str, int] = defaultdict(int)
        for b in self.boards:
            counted[b.generation] += b.counted_s
            served[b.generation] += b.in_service_s
            boards[b.generation] += 1
        incidents: dict[str, int] = defaultdict(int)
        for i in self.incidents:
            incidents[i.generation] += 1
        return {
            g: {
                "boards": boards[g],
                "availability": served[g] / counted[g] if counted[g] > 0 else None,
                "incidents": incidents[g],
            }
            for g in sorted(boards)
        }


def _down(state: BoardState, actor: Actor) -> bool:
    if state in IN_SERVICE or state in NOT_IN_FLEET:
        return False
    return not (state in MAINTENANCE and actor is Actor.OPERATOR)


def counted(state: BoardState, actor: Actor) -> bool:
    """Whether time in ``state``, entered by ``actor``, counts towards availability at all."""
    return state not in NOT_IN_FLEET and not (state in MAINTENANCE and actor is Actor.OPERATOR)


def cause_of(reason: str) -> str:
    """A reason without its specifics: up to the first ':' or '(' and without numbers."""
    head = re.split(r"[:(]", reason, maxsplit=1)[0]
    return re.sub(r"\s+", " ", re.sub(r"\d+(\.\d+)?", "N", head)).strip() or "no reason given"


def uptime(
    transitions: Iterable[Transition],
    generation_of: Mapping[str, str],
    *,
    since: float,
    until: float,
    faults: Sequence[Fault] = (),
) -> FleetUptime:
    """The figures for the boards of ``generation_of`` between ``since`` and ``until``.

    ``transitions``: each board's transitions up to ``until``, including the last one before
    ``since`` (its state when the window opens); a board with none before ``since`` is counted
    from its first. Order does not matter (sorted by time, then as given)."""
    out = FleetUptime(since=since, until=until)
    per_board: dict[str, list[Transition]] = defaultdict(list)
    for t in transitions:
        if t.board in generation_of and t.at <= until:
            per_board[t.board].append(t)
    for board in sorted(generation_of):
        gen = generation_of[board]
        events = sorted(per_board.get(board, ()), key=lambda t: t.at)
        counted_s = served = 0.0
        open_incident: tuple[float, BoardState, str] | None = None
        was_down = False  # one incident per stretch of down time, whatever down states it passes
        n_incidents = 0
        for k, t in enumerate(events):
            start = max(t.at, since)
            end = min(events[k + 1].at, until) if k + 1 < len(events) else until
            span = max(0.0, end - start)
            down = _down(t.to_state, t.actor)
            if counted(t.to_state, t.actor):
                counted_s += span
                if t.to_state in IN_SERVICE:
                    served += span
            if down and not was_down and t.at >= since:
                open_incident = (t.at, t.to_state, cause_of(t.reason))
            elif not down and open_incident is not None:
                began, state, cause = open_incident
                out.incidents.append(Incident(board, gen, began, t.at, state, cause, t.to_state in IN_SERVICE))
                n_incidents += 1
                open_incident = None
            was_down = down
        if open_incident is not None:
            began, state, cause = open_incident
            out.incidents.append(Incident(board, gen, began, None, state, cause, repaired=False))
            n_incidents += 1
        out.boards.append(BoardUptime(board, gen, counted_s, served, n_incidents))
    _detection(out, faults)
    return out


def _detection(out: FleetUptime, faults: Sequence[Fault]) -> None:
    """MTTD: from each fault in the window to its board's first incident starting at or after it."""
    starts: dict[str, list[float]] = defaultdict(list)
    for i in out.incidents:
        starts[i.board].append(i.start)
    waits = []
    for f in faults:
        if not out.since <= f.at <= out.until:
            continue
        after = [s for s in starts.get(f.board, ()) if s >= f.at]
        if after:
            waits.append(min(after) - f.at)
        else:
            out.faults_undetected += 1
    out.faults_detected = len(waits)
    out.mttd_s = sum(waits) / len(waits) if waits else None
