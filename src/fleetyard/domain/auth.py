"""Roles a token can carry."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Role(StrEnum):
    ADMIN = "admin"
    OPERATOR = "operator"
    USER = "user"
    AGENT = "agent"


@dataclass(frozen=True)
class Principal:
    """Who is calling: a token's name, role, and the team or host it is bound to."""

    name: str
    role: Role
    team: str | None = None
    host: str | None = None

    @property
    def is_staff(self) -> bool:
        return self.role in (Role.ADMIN, Role.OPERATOR)


def may_read(reader: Principal, team: str | None, shared: bool) -> bool:
    """Whether ``reader`` may read a job's spec, logs and results: staff read every job; a user
    its own team's, and those their team shared with the fleet; an agent none (it gets its ranks'
    specs through its own routes, and a host taken over must not read every team's work)."""
    if reader.role is Role.AGENT:
        return False
    return reader.is_staff or team == reader.team or shared


SECRET_SUFFIXES = ("_TOKEN", "_SECRET", "_PASSWORD", "_KEY")
MASK = "***"


def masked(params: Any) -> Any:
    """``params`` with the values of every ``env`` entry whose name ends in _TOKEN, _SECRET,
    _PASSWORD or _KEY replaced by ``***`` (what answers and pages show; ranks get the values)."""
    if isinstance(params, dict):
        out: dict[Any, Any] = {}
        for k, v in params.items():
            if k == "env" and isinstance(v, dict):
                out[k] = {n: MASK if str(n).upper().endswith(SECRET_SUFFIXES) else val for n, val in v.items()}
            else:
                out[k] = masked(v)
        return out
    if isinstance(params, list):
        return [masked(v) for v in params]
    return params
