"""The job spec: what a user submits. Validated at submit; a spec that can never run is rejected."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_TIME_LIMIT_S = 7 * 24 * 3600.0


class Placement(StrEnum):
    ANY = "any"
    SAME_HOST = "same-host"


class JobSpec(BaseModel):
    """A request for K boards and the workload to run on each of them."""

    model_config = ConfigDict(extra="forbid")

    kind: str = Field("command", description="workload kind, e.g. 'command'")
    name: str | None = Field(None, max_length=200)
    boards: int = Field(1, ge=1, le=4096, description="how many boards, all at once (a gang)")
    generations: list[str] = Field(default_factory=list, description="any of these; empty means any")
    labels: dict[str, str] = Field(default_factory=dict, description="board labels to match as a subset")
    board_ids: list[str] = Field(
        default_factory=list, max_length=4096, description="only these boards (any of them); empty means any"
    )
    placement: Placement = Placement.ANY
    priority: int = Field(0, ge=-1000, le=1000)
    time_limit_s: float = Field(3600.0, gt=0, le=MAX_TIME_LIMIT_S)
    max_infra_retries: int = Field(3, ge=0, le=20)
    team: str | None = Field(None, max_length=100, description="defaults to the submitter's team")
    params: dict[str, Any] = Field(default_factory=dict, description="the workload's own parameters")

    @field_validator("generations", "board_ids")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        return sorted(set(v))

    @model_validator(mode="after")
    def _enough_boards_named(self) -> JobSpec:
        if self.board_ids and len(self.board_ids) < self.boards:
            raise ValueError(
                f"asks for {self.boards} boards but board_ids names only {len(self.board_ids)}; "
                "name at least as many boards, or drop board_ids"
            )
        return self
