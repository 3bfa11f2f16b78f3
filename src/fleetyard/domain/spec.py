"""The job spec: what a user submits. Validated at submit; a spec that can never run is rejected."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fleetyard.domain.firmware import FirmwareSelector

MAX_TIME_LIMIT_S = 7 * 24 * 3600.0


class Placement(StrEnum):
    """Where a gang's boards must (or should, see ``placement_required``) be."""

    ANY = "any"
    SAME_HOST = "same-host"
    SAME_RACK = "same-rack"


class Packing(StrEnum):
    """How boards are chosen among fitting hosts: fill hosts (keep others whole) or spread out."""

    PACK = "pack"
    SPREAD = "spread"


class Visibility(StrEnum):
    TEAM = "team"
    FLEET = "fleet"


# Bounded strings of a spec: a board's id, a label's key and value (a request body cap bounds
# the whole; these bound each part, so that no list or map holds megabytes in one item).
BoardId = Annotated[str, Field(min_length=1, max_length=200)]
LabelKey = Annotated[str, Field(min_length=1, max_length=100)]
LabelValue = Annotated[str, Field(max_length=200)]


class JobSpec(BaseModel):
    """A request for K boards and the workload to run on each of them."""

    model_config = ConfigDict(extra="forbid")

    kind: str = Field("command", min_length=1, max_length=100, description="workload kind, e.g. 'command'")
    name: str | None = Field(None, max_length=200)
    boards: int = Field(1, ge=1, le=4096, strict=True, description="how many boards, all at once (a gang)")
    generations: list[Annotated[str, Field(max_length=100)]] = Field(
        default_factory=list, max_length=64, description="any of these; empty means any"
    )
    labels: dict[LabelKey, LabelValue] = Field(
        default_factory=dict, max_length=64, description="board labels to match as a subset"
    )
    board_ids: list[BoardId] = Field(
        default_factory=list, max_length=4096, description="only these boards (any of them); empty means any"
    )
    exclude_boards: list[BoardId] = Field(default_factory=list, max_length=4096, description="never these boards")
    firmware: str | None = Field(
        None, max_length=200, description="firmware selector: ==V, !=V, >=V, >V, <=V, <V or 'in V1,V2'"
    )
    placement: Placement = Placement.ANY
    placement_required: bool = Field(True, strict=True, description="false: same host/rack is preferred, not required")
    packing: Packing = Packing.PACK
    priority_class: str | None = Field(
        None, max_length=100, description="a configured priority class (e.g. ci-gate, batch); none: the default"
    )
    priority: int = Field(
        0, ge=-1000, le=1000, strict=True, description="order within the priority class, after fair share"
    )
    time_limit_s: float = Field(3600.0, gt=0, le=MAX_TIME_LIMIT_S, strict=True)
    max_infra_retries: int = Field(3, ge=0, le=20, strict=True)
    team: str | None = Field(None, max_length=100, description="defaults to the submitter's team")
    params: dict[str, Any] = Field(default_factory=dict, description="the workload's own parameters")
    visibility: Visibility = Field(
        Visibility.TEAM,
        description="who may read the spec, logs and results: its team (and staff), or the whole fleet",
    )

    @field_validator("generations", "board_ids", "exclude_boards")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        return sorted(set(v))

    @field_validator("firmware")
    @classmethod
    def _selector(cls, v: str | None) -> str | None:
        return None if v is None else str(FirmwareSelector.parse(v))

    def firmware_selector(self) -> FirmwareSelector | None:
        return None if self.firmware is None else FirmwareSelector.parse(self.firmware)

    @model_validator(mode="after")
    def _enough_boards_named(self) -> JobSpec:
        if self.board_ids and len(set(self.board_ids) - set(self.exclude_boards)) < self.boards:
            raise ValueError(
                f"asks for {self.boards} boards but board_ids names only {len(self.board_ids)}; "
                "name at least as many boards, or drop board_ids"
            )
        return self
