"""Onboarding (pure): the steps a board takes from ``onboarding`` to service, one decision at a time.

A board approved for service (or back from repair) gets an onboarding record and walks:

    queued ─admit─▶ inspect ─▶ flash ─▶ burn_in ─▶ done (available)
                       │          │         │
                       └──────────┴─────────┴──▶ failed (quarantined, with the evidence)

- **queued**: waits for a place: at most ``parallelism`` boards are past queued at once, oldest
  first (:func:`admit`), so that a rack of new boards does not flash and burn in all at once.
- **inspect**: what the board reported (generation, hardware revision, firmware) against the
  inventory and the generation's standard firmware (:func:`inspect`); any problem fails it.
- **flash**: the standard image, when the board runs another version; skipped (and noted) when
  the board runs it already or no standard is registered.
- **burn_in**: the L3 check; passed, the board enters service.

:func:`next_act` reads a record, what its step came to (the board's facts, the flash op's result,
the check's result) and ``now``, and says what to do next. No I/O, no clock: the controller
(:mod:`fleetyard.controller.onboarding`) and ``bench/onboard.py`` are its shells.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from fleetyard.policy.outcomes import run_check_again

__all__ = [
    "BURN_IN_LOST",
    "DEFAULT_PARALLELISM",
    "INSPECT_TIMEOUT_S",
    "PARALLELISM_KEY",
    "Act",
    "CheckView",
    "Do",
    "Facts",
    "Inventoried",
    "Limits",
    "OpView",
    "Queued",
    "Record",
    "Standard",
    "Step",
    "admit",
    "inspect",
    "next_act",
]

# How a record's log says a burn-in could not run (its shell counts them: :attr:`CheckView.tries_lost`).
BURN_IN_LOST = "L3 burn-in could not run"
# The setting (``settings`` table) that bounds how many boards onboard at once, and its default.
PARALLELISM_KEY = "onboarding.parallelism"
DEFAULT_PARALLELISM = 32
# The board's facts come from its agent's registration, so they are there at once in the
# controller; a shell that reads them off the board (the bench's) gets this long.
INSPECT_TIMEOUT_S = 600.0


class Step(StrEnum):
    QUEUED = "queued"
    INSPECT = "inspect"
    FLASH = "flash"
    BURN_IN = "burn_in"
    DONE = "done"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in (Step.DONE, Step.FAILED)


class Do(StrEnum):
    WAIT = "wait"  # the step is under way (or queued): nothing to do yet
    FLASH = "flash"  # order a flash of ``Act.version``
    BURN_IN = "burn_in"  # start the L3 check
    AVAILABLE = "available"  # into service
    QUARANTINE = "quarantine"  # out, with ``Act.reason`` as evidence


@dataclass(frozen=True)
class Inventoried:
    """What the inventory says a board is."""

    generation: str
    hardware_revision: str | None = None  # None: the inventory does not say


@dataclass(frozen=True)
class Standard:
    """A generation's standard firmware image."""

    version: str
    hardware_revisions: tuple[str, ...] = ()  # the revisions it supports; empty: all


@dataclass(frozen=True)
class Facts:
    """What the agent read off the board, and what the fleet expects of it."""

    generation: str
    hardware_revision: str | None
    firmware: str
    inventory: Inventoried | None = None  # None: the inventory does not name the board
    standard: Standard | None = None  # None: no standard registered for the generation


@dataclass(frozen=True)
class Record:
    board: str
    step: Step
    step_at: float  # when it entered the step


@dataclass(frozen=True)
class OpView:
    """The flash op as the store has it: no result (``ok`` None) until the agent reports."""

    ok: bool | None
    message: str | None
    version: str | None
    deadline: float


@dataclass(frozen=True)
class CheckView:
    """How the burn-in check ended."""

    passed: bool | None  # None: it could not run (its host lost, its agent stopped): no verdict
    detail: str
    tries_lost: int = 0  # burn-ins of this record that could not run, this one included


@dataclass(frozen=True)
class Limits:
    inspect_timeout_s: float = INSPECT_TIMEOUT_S
    # The burn-in check fails by its own time limit; this is the backstop for one that never ends.
    burn_in_timeout_s: float = 3 * 3600.0


@dataclass(frozen=True)
class Act:
    do: Do
    step: Step  # the step the record is in once the act is carried out
    note: str = ""  # what the step came to, for the record's evidence
    version: str | None = None  # FLASH: the standard's version
    problems: tuple[str, ...] = ()  # QUARANTINE after inspect: what did not match


@dataclass(frozen=True)
class Queued:
    board: str
    created_at: float
    id: int  # the record's: ties broken by who came first


def admit(queued: Iterable[Queued], active: int, parallelism: int) -> list[str]:
    """The queued boards that may start now, oldest first: never more than ``parallelism`` past
    queued at once (``active`` are already)."""
    room = max(0, parallelism - active)
    if room == 0:
        return []
    return [q.board for q in sorted(queued, key=lambda q: (q.created_at, q.id))[:room]]


def inspect(f: Facts) -> list[str]:
    """What is wrong with the board's identity, hardware revision or firmware; empty: nothing."""
    problems = []
    inv = f.inventory
    if inv is not None:
        if inv.generation != f.generation:
            problems.append(f"the inventory says generation {inv.generation}; the board reports {f.generation}")
        if inv.hardware_revision is not None and inv.hardware_revision != f.hardware_revision:
            problems.append(
                f"the inventory says hardware revision {inv.hardware_revision}; the board reports "
                f"{f.hardware_revision or 'none'}"
            )
    std = f.standard
    # An unknown revision (an agent that reads none) cannot be held against the image.
    rev = f.hardware_revision
    if std is not None and std.hardware_revisions and rev is not None and rev not in std.hardware_revisions:
        problems.append(
            f"{f.generation}'s standard firmware {std.version} supports hardware revisions "
            f"{', '.join(std.hardware_revisions)}, not this board's {rev}"
        )
    return problems


def next_act(
    rec: Record,
    *,
    now: float,
    facts: Facts | None = None,
    op: OpView | None = None,
    check: CheckView | None = None,
    limits: Limits = Limits(),
) -> Act:
    """What to do with an admitted record, given what its step came to: ``facts`` (inspect; None
    while not yet read), the flash ``op`` and the burn-in ``check`` (None while it runs)."""
    wait = Act(Do.WAIT, rec.step)
    if rec.step is Step.INSPECT:
        if facts is None:
            if now - rec.step_at > limits.inspect_timeout_s:
                return _fail(f"inspection: the board's identity was not read within {limits.inspect_timeout_s:g} s")
            return wait
        return _after_inspect(facts)
    if rec.step is Step.FLASH:
        if op is None:
            return _fail("flash: its op is gone")
        if op.ok is None:
            if now > op.deadline:
                return _fail(f"flash of firmware {op.version} timed out: no result from the agent by its deadline")
            return wait
        if not op.ok:
            said = op.message or "no message"
            # A driver's message may say it all already ("flash of firmware 2.2.0 failed: …").
            return _fail(
                said if said.startswith("flash of firmware") else f"flash of firmware {op.version} failed: {said}"
            )
        if facts is not None and facts.firmware != op.version:
            return _fail(f"flash of firmware {op.version} reported success but the board runs {facts.firmware}")
        return Act(
            Do.BURN_IN, Step.BURN_IN, f"flashed firmware {op.version}" + (f" ({op.message})" if op.message else "")
        )
    if rec.step is Step.BURN_IN:
        if check is None:
            if now - rec.step_at > limits.burn_in_timeout_s:
                return _fail(f"L3 burn-in did not finish within {limits.burn_in_timeout_s:g} s")
            return wait
        if check.passed:
            return Act(Do.AVAILABLE, Step.DONE, "passed its L3 burn-in")
        if check.passed is None:
            if run_check_again(check.tries_lost):  # again, within the burn-in's time (its clock goes on)
                return Act(Do.BURN_IN, Step.BURN_IN, f"{BURN_IN_LOST} ({check.detail}): again")
            return _fail(f"{BURN_IN_LOST} {check.tries_lost} times (the last: {check.detail})")
        return _fail(f"L3 burn-in failed: {check.detail}")
    return wait  # queued (admission decides) or finished


def _after_inspect(f: Facts) -> Act:
    problems = inspect(f)
    if problems:
        return Act(Do.QUARANTINE, Step.FAILED, "inspection failed: " + "; ".join(problems), problems=tuple(problems))
    std = f.standard
    if std is None:
        note = f"flash skipped: no standard firmware registered for {f.generation} (runs {f.firmware})"
        return Act(Do.BURN_IN, Step.BURN_IN, note)
    if f.firmware == std.version:
        return Act(Do.BURN_IN, Step.BURN_IN, f"flash skipped: runs the standard firmware {std.version} already")
    note = f"runs firmware {f.firmware}, not the standard {std.version}: flash it"
    return Act(Do.FLASH, Step.FLASH, note, version=std.version)


def _fail(reason: str) -> Act:
    return Act(Do.QUARANTINE, Step.FAILED, reason)
