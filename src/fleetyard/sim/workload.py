"""The work the simulated teams submit: teams, cohorts, quotas, classes, arrivals, job shapes.

A workload file (YAML; durations in seconds or as ``90s``, ``30m``, ``3h``, ``1d``)::

    teams:
      - name: compiler
        share: 0.25               # nominal quota: this share of every generation's boards
        cohort: eng               # queues of one cohort lend each other unused quota
        borrowing_limit: 0.25     # the most it borrows beyond nominal, as a share (absent: no limit)
        jobs:                     # the kinds of job it submits, drawn by weight
          - {name: sweep, weight: 0.8, boards: [1], median: 40m, sigma: 0.6, max: 3h}
          - {name: gate, boards: [4, 8], placement: same-host, median: 20m, max: 1h,
             class: ci-gate, preemptible: false}
        arrivals:                 # how they come (several may be given; each draws from `kinds`)
          - {backlog: 60}         # keep 60 queued: a job that starts is replaced
          - {per_hour: 30, from: 6h, until: 18h}           # Poisson arrivals in a window
          - {burst: [200, 300], every: 3h, first: 1h, kinds: [gate]}   # CI bursts
    max_infra_retries: 3

Priority classes are the fleet's defaults (``ci-gate``, ``interactive``, ``batch``,
``scavenger``). A job lost to a fault restarts from scratch; a preempted one goes back to its
place in line and starts over. ``examples/workloads/`` holds the ones the benchmarks run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from fleetyard.domain import plain_yaml
from fleetyard.domain.pipeline import parse_duration
from fleetyard.domain.spec import Placement
from fleetyard.errors import BadRequest
from fleetyard.policy.queues import DEFAULT_PRIORITY_CLASSES

__all__ = ["Arrival", "JobKind", "Team", "WorkloadModel", "load_workload", "parse_workload"]

HOUR_S = 3600.0
Seconds = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]
_CLASSES = frozenset(c.name for c in DEFAULT_PRIORITY_CLASSES)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class JobKind(_Frozen):
    """One kind of job a team submits: its size, where its boards must be, how long it runs."""

    name: str = Field("job", min_length=1, max_length=100)
    weight: float = Field(1.0, gt=0, description="drawn in proportion to this among the team's kinds")
    boards: tuple[Annotated[int, Field(ge=1, le=100_000)], ...] = Field((1,), min_length=1, max_length=100)
    # None: one host for a job of several boards (the default a gang asks for), any for one.
    placement: Placement | None = None
    generations: tuple[str, ...] = Field((), max_length=100, description="any of these; empty: any")
    median_s: Seconds = Field(HOUR_S, alias="median")
    sigma: float = Field(0.6, ge=0, le=5, description="of the log-normal duration")
    max_s: Seconds = Field(4 * HOUR_S, alias="max")
    priority_class: str = Field("batch", alias="class")
    preemptible: bool = True

    @model_validator(mode="after")
    def _sane(self) -> JobKind:
        if self.priority_class not in _CLASSES:
            raise ValueError(
                f"job kind {self.name}: class {self.priority_class!r} is not a priority class; "
                f"use one of {', '.join(sorted(_CLASSES))}"
            )
        if self.median_s <= 0 or self.max_s < self.median_s:
            raise ValueError(f"job kind {self.name}: need 0 < median <= max (got {self.median_s}, {self.max_s})")
        return self

    def placement_of(self, size: int) -> Placement:
        return self.placement or (Placement.SAME_HOST if size > 1 else Placement.ANY)


class Arrival(_Frozen):
    """How some of a team's jobs come, between ``from`` and ``until``: a backlog kept queued,
    Poisson arrivals, or bursts of ``burst`` jobs every ``every``."""

    backlog: int = Field(0, ge=0, le=1_000_000, description="keep this many queued")
    per_hour: float = Field(0.0, ge=0, le=1_000_000)
    burst: tuple[int, int] = Field((0, 0), description="a burst of between these many jobs")
    every_s: Seconds = Field(0.0, alias="every")
    first_s: Seconds | None = Field(None, alias="first", description="the first burst (default: from)")
    from_s: Seconds = Field(0.0, alias="from")
    until_s: Seconds = Field(math.inf, alias="until")
    kinds: tuple[str, ...] = Field((), max_length=100, description="drawn from these kinds; empty: all")

    @model_validator(mode="after")
    def _one(self) -> Arrival:
        ways = [w for w, on in (("backlog", self.backlog), ("per_hour", self.per_hour), ("burst", self.burst[1])) if on]
        if len(ways) != 1:
            raise ValueError(
                f"an arrival is exactly one of backlog, per_hour or burst (got {', '.join(ways) or 'none'}); "
                "give each its own entry"
            )
        if self.burst[1] and (self.every_s <= 0 or not 0 <= self.burst[0] <= self.burst[1]):
            raise ValueError("a burst needs every > 0 and burst: [least, most] with least <= most")
        if self.until_s <= self.from_s:
            raise ValueError(f"until ({self.until_s:g} s) must come after from ({self.from_s:g} s)")
        return self


class Team(_Frozen):
    """A team and its queue: its nominal quota as a share of every generation, its cohort, what it
    may borrow, the kinds of job it submits and how they arrive."""

    name: str = Field(min_length=1, max_length=100)
    share: float = Field(ge=0, le=1, description="nominal quota: this share of every generation")
    cohort: str = "fleet"
    borrowing_limit: float | None = Field(None, ge=0, description="share of a generation; None: no limit")
    jobs: tuple[JobKind, ...] = Field(min_length=1, max_length=100)
    arrivals: tuple[Arrival, ...] = Field((Arrival(backlog=100),), min_length=1, max_length=100)

    @model_validator(mode="after")
    def _kinds(self) -> Team:
        names = [k.name for k in self.jobs]
        if len(set(names)) != len(names):
            raise ValueError(f"team {self.name}: job kinds need distinct names (got {names})")
        for a in self.arrivals:
            unknown = set(a.kinds) - set(names)
            if unknown:
                raise ValueError(
                    f"team {self.name}: an arrival names kinds {sorted(unknown)} the team does not have ({names})"
                )
        return self

    def kinds_of(self, arrival: Arrival) -> tuple[JobKind, ...]:
        return tuple(k for k in self.jobs if not arrival.kinds or k.name in arrival.kinds)


class WorkloadModel(_Frozen):
    """Three teams keep a backlog of jobs nothing preempts queued (the fault simulator's default;
    see :mod:`fleetyard.sim.model`)."""

    teams: tuple[Team, ...] = (
        Team(
            name="compiler",
            share=0.30,
            jobs=(JobKind(boards=(4,), median_s=1.5 * HOUR_S, sigma=0.7, max_s=4 * HOUR_S, preemptible=False),),
        ),
        Team(
            name="ai",
            share=0.40,
            jobs=(JobKind(boards=(8,), median_s=3 * HOUR_S, sigma=0.6, max_s=8 * HOUR_S, preemptible=False),),
        ),
        Team(
            name="robotics",
            share=0.30,
            jobs=(JobKind(boards=(2, 4, 8), median_s=4 * HOUR_S, sigma=0.6, max_s=8 * HOUR_S, preemptible=False),),
        ),
    )
    max_infra_retries: int = Field(3, ge=0, le=100)

    @model_validator(mode="after")
    def _teams(self) -> WorkloadModel:
        names = [t.name for t in self.teams]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"a workload needs teams with distinct names (got {names})")
        if sum(t.share for t in self.teams) > 1.0 + 1e-6:
            raise ValueError(
                f"the teams' shares sum to {sum(t.share for t in self.teams):g}: nominal quotas cannot "
                "promise more than the fleet; make them sum to 1 or less"
            )
        return self

    @property
    def preemptible(self) -> bool:
        """Whether any job it submits may be preempted."""
        return any(k.preemptible for t in self.teams for k in t.jobs)

    def without_preemption(self) -> WorkloadModel:
        """The same work, none of it preemptible (the peer a preemptive run is compared with)."""
        teams = tuple(
            t.model_copy(update={"jobs": tuple(k.model_copy(update={"preemptible": False}) for k in t.jobs)})
            for t in self.teams
        )
        return self.model_copy(update={"teams": teams})

    def time_limit_s(self, duration_s: float) -> float:
        """What a job asks for: half as long again as it needs, and at least 30 min more."""
        return max(1.5 * duration_s, duration_s + 1800.0)


def parse_workload(data: Any, *, source: str = "workload") -> WorkloadModel:
    """A workload from a parsed YAML document (or YAML text); a bad one raises
    :class:`BadRequest` naming the field and the fix."""
    if isinstance(data, str):
        try:
            data = plain_yaml.load(data)
        except yaml.YAMLError as exc:
            raise BadRequest(f"{source}: not valid YAML ({exc})") from None
    if not isinstance(data, Mapping) or "teams" not in data:
        raise BadRequest(f"{source}: expected a mapping with a 'teams' list (see fleetyard.sim.workload)")
    try:
        return WorkloadModel.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors()
        )
        raise BadRequest(f"{source}: {problems}") from None


def load_workload(path: Path) -> WorkloadModel:
    """A workload file (:func:`parse_workload`)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise BadRequest(f"workload {path}: cannot read it ({exc.strerror}); give the path of a YAML file") from None
    return parse_workload(text, source=f"workload {path}")
