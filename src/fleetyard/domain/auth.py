"""Roles a token can carry."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


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
