"""The queue configuration operators write (``fleetyard queues apply FILE.yaml``, ``PUT /v1/queues``).

    queues:
      - name: compiler                # a team's name: its jobs go to this queue
        cohort: fleet                 # queues of one cohort lend each other unused quota
        nominal: {sim-g1: 8, sim-g2: 4}   # boards guaranteed per generation; absent: unlimited
        borrowing_limit: {sim-g2: 4}      # the most it may borrow beyond nominal (needs nominal)
    priority_classes:                 # absent: the defaults (ci-gate, interactive, batch, scavenger)
      - {name: ci-gate, value: 1000}
      - {name: batch, value: 100, default: true, max_lost_s: 300}   # its preemptions throw away
                                                                     # at most 5 min of work per board

Pure: validated here, turned into :class:`fleetyard.policy.queues.QueueSpec` and
:class:`~fleetyard.policy.queues.PriorityClass` for the policy; the store keeps them as rows.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fleetyard.domain.spec import MAX_TIME_LIMIT_S
from fleetyard.errors import BadRequest
from fleetyard.policy.queues import DEFAULT_PRIORITY_CLASSES, PriorityClass, QueueSpec

__all__ = ["PriorityClassEntry", "QueueConfig", "QueueEntry", "QueueQuota", "parse_queue_config"]

# A queue's name is a team's name, and a URL path segment (GET /v1/queues/{name}).
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
MAX_VALUE = 1_000_000_000


def _check_name(what: str, name: str) -> None:
    if not _NAME.match(name):
        raise ValueError(
            f"{what} name {name!r} must start with a letter or digit and hold only letters, digits, '.', '_' and '-'"
        )


Generation = Annotated[str, Field(min_length=1, max_length=100)]


class QueueQuota(BaseModel):
    """A queue's quotas (the body of ``PUT /v1/queues/{name}``)."""

    model_config = ConfigDict(extra="forbid")

    cohort: str | None = Field(
        None, min_length=1, max_length=100, description="queues of one cohort lend each other unused nominal quota"
    )
    nominal: dict[Generation, int] | None = Field(
        None,
        max_length=1000,
        description="generation -> boards guaranteed; a generation not named has 0; absent: unlimited",
    )
    borrowing_limit: dict[Generation, int] = Field(
        default_factory=dict,
        max_length=1000,
        description="generation -> the most boards borrowed beyond nominal; not named: no limit",
    )

    @model_validator(mode="after")
    def _sane(self) -> QueueQuota:
        name: str | None = getattr(self, "name", None)
        who = f"queue {name}: " if name else ""
        for field, quotas in (("nominal", self.nominal or {}), ("borrowing_limit", self.borrowing_limit)):
            for gen, n in quotas.items():
                if not gen.strip():
                    raise ValueError(f"{who}{field} names an empty generation; use a generation such as sim-g2")
                if n < 0:
                    raise ValueError(f"{who}{field}.{gen} is {n}; a quota counts boards: use 0 or more")
        if self.nominal is None and self.borrowing_limit:
            raise ValueError(
                f"{who}borrowing_limit is set but nominal is not: a queue without nominal is unlimited and "
                "borrows nothing; give it a nominal quota per generation, or drop borrowing_limit"
            )
        return self

    def to_spec(self, name: str) -> QueueSpec:
        return QueueSpec(
            name=name,
            nominal=None if self.nominal is None else dict(self.nominal),
            cohort=self.cohort,
            borrowing_limit=dict(self.borrowing_limit),
        )


class QueueEntry(QueueQuota):
    """One team's queue in a :class:`QueueConfig`."""

    name: str = Field(min_length=1, max_length=100, description="the team whose jobs this queue holds")

    @model_validator(mode="after")
    def _named(self) -> QueueEntry:
        _check_name("queue", self.name)
        return self


class PriorityClassEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    value: int = Field(ge=-MAX_VALUE, le=MAX_VALUE, description="higher runs first (and may preempt lower)")
    default: bool = Field(False, description="the class of a job that names none; exactly one class is")
    teams: list[Annotated[str, Field(min_length=1, max_length=100)]] | None = Field(
        None, max_length=1000, description="the teams that may submit in this class (default: every team)"
    )
    max_lost_s: float | None = Field(
        None,
        ge=0,
        le=MAX_TIME_LIMIT_S,
        description="the most work, in seconds per board it needs, a job of this class may throw away by "
        "preempting (default: no cap but its own boards times its time limit)",
    )

    @model_validator(mode="after")
    def _named(self) -> PriorityClassEntry:
        _check_name("priority class", self.name)
        return self

    def to_class(self) -> PriorityClass:
        teams = None if self.teams is None else tuple(self.teams)
        return PriorityClass(self.name, self.value, self.default, teams, self.max_lost_s)


class QueueConfig(BaseModel):
    """Every queue and priority class; applying one replaces all that was configured before."""

    model_config = ConfigDict(extra="forbid")

    queues: list[QueueEntry] = Field(
        default_factory=list, max_length=10_000, description="teams not listed are unlimited"
    )
    priority_classes: list[PriorityClassEntry] | None = Field(
        None,
        max_length=100,
        description="absent: the defaults (ci-gate 1000, interactive 500, batch 100 default, scavenger 0)",
    )

    @model_validator(mode="after")
    def _consistent(self) -> QueueConfig:
        twice = sorted(n for n, k in Counter(q.name for q in self.queues).items() if k > 1)
        if twice:
            raise ValueError(
                f"queues: {', '.join(twice)} listed more than once; a team has one queue: merge the entries"
            )
        if self.priority_classes is None:
            return self
        if not self.priority_classes:
            raise ValueError(
                "priority_classes is empty; list at least one class (one with default: true), "
                "or leave priority_classes out for the defaults"
            )
        twice = sorted(n for n, k in Counter(c.name for c in self.priority_classes).items() if k > 1)
        if twice:
            raise ValueError(f"priority_classes: {', '.join(twice)} listed more than once; give each class once")
        defaults = [c.name for c in self.priority_classes if c.default]
        if len(defaults) != 1:
            found = f"{len(defaults)} ({', '.join(defaults)})" if defaults else "none"
            raise ValueError(
                f"priority_classes: exactly one class must have default: true (the class of jobs that name "
                f"none), found {found}; mark exactly one, e.g. batch"
            )
        return self

    def specs(self) -> dict[str, QueueSpec]:
        return {q.name: q.to_spec(q.name) for q in self.queues}

    def classes(self) -> tuple[PriorityClass, ...]:
        """The configured classes, highest first (the defaults when none are given)."""
        if self.priority_classes is None:
            return DEFAULT_PRIORITY_CLASSES
        return tuple(sorted((c.to_class() for c in self.priority_classes), key=lambda c: (-c.value, c.name)))


def _field(loc: tuple[int | str, ...], data: Any) -> str:
    """``("queues", 1, "nominal", "sim-g2")`` -> ``queues[1] (ai).nominal.sim-g2``: where a person looks."""
    out = ""
    node = data
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if isinstance(node, list) and 0 <= part < len(node) else None
            if isinstance(node, Mapping) and isinstance(node.get("name"), str):
                out += f" ({node['name']})"
        else:
            out += f".{part}" if out else part
            node = node.get(part) if isinstance(node, Mapping) else None
    return out


def parse_queue_config(data: Any, *, where: str = "queue config") -> QueueConfig:
    """A :class:`QueueConfig` from parsed YAML or JSON; a bad one is a :class:`BadRequest` naming
    ``where`` and the field."""
    if isinstance(data, QueueConfig):
        return data
    if not isinstance(data, Mapping):
        raise BadRequest(
            f"{where}: expected a mapping with 'queues' (and optionally 'priority_classes'), got {type(data).__name__}"
        )
    try:
        return QueueConfig.model_validate(dict(data))
    except ValidationError as exc:
        errors = [
            {"field": _field(tuple(e["loc"]), data) or "(config)", "message": e["msg"].removeprefix("Value error, ")}
            for e in exc.errors()
        ]
        first = errors[0]
        raise BadRequest(f"{where}: {first['field']}: {first['message']}", detail=errors) from None
