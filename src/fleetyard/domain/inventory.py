"""The declared inventory operators write in YAML: which boards each host should hold, where.

    auto_approve: [sim-g3]        # generations whose boards, found but not named here, onboard without approval
    onboarding:
      parallelism: 32             # boards onboarding at once
    sites:
      - name: sjc1
        racks:
          - name: r01
            hosts:
              - name: host-a      # the agent's host id
                boards:
                  - {serial: SG1-000001, generation: sim-g1, slot: 0, hardware_revision: r1}

Pure: validated here (a bad file names the field, its line and the fix) and compared with what
agents find by :mod:`fleetyard.policy.inventory`. ``examples/config/inventory.yaml`` is an example.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, model_validator

from fleetyard.domain import plain_yaml
from fleetyard.errors import BadRequest

__all__ = [
    "DEFAULT_PARALLELISM",
    "DeclaredBoard",
    "Inventory",
    "InventoryBoard",
    "InventoryHost",
    "InventoryRack",
    "InventorySite",
    "OnboardingSettings",
    "first_duplicate",
    "parse_inventory",
    "rack_path",
]

DEFAULT_PARALLELISM = 32


def rack_path(site: str, rack: str) -> str:
    """A rack's name across the fleet, ``site/rack``: the batch its boards onboard in."""
    return f"{site}/{rack}"


@dataclass(frozen=True)
class DeclaredBoard:
    """One board as the inventory declares it, with where it should be (flattened)."""

    serial: str
    host: str
    slot: int
    generation: str
    hardware_revision: str | None = None
    site: str = ""
    rack: str = ""

    @property
    def batch(self) -> str:
        return rack_path(self.site, self.rack)


class InventoryBoard(BaseModel):
    model_config = ConfigDict(extra="forbid")

    serial: str = Field(min_length=1, max_length=200, description="the board's serial, as its driver reports it")
    generation: str = Field(min_length=1, max_length=100, description="e.g. sim-g2")
    slot: int = Field(ge=0, le=1_000_000, description="its slot in the host, as its driver numbers them")
    hardware_revision: str | None = Field(None, min_length=1, max_length=100)


class InventoryHost(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, description="the agent's host id (fleetyard agent --host)")
    boards: list[InventoryBoard] = Field(default_factory=list)


class InventoryRack(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    hosts: list[InventoryHost] = Field(default_factory=list)


class InventorySite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    racks: list[InventoryRack] = Field(default_factory=list)


class OnboardingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    parallelism: int = Field(DEFAULT_PARALLELISM, ge=1, le=100_000, description="boards onboarding at once")


class Inventory(BaseModel):
    """The whole file. Serials, host names and (host, slot) pairs are unique across it."""

    model_config = ConfigDict(extra="forbid")

    auto_approve: list[str] = Field(
        default_factory=list, description="generations whose boards, found but not named, onboard without approval"
    )
    onboarding: OnboardingSettings = OnboardingSettings()
    sites: list[InventorySite] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self, info: ValidationInfo) -> Inventory:
        # parse_inventory checks this itself, to point at the line of the second one.
        if not (info.context or {}).get("unique_checked_later"):
            found = first_duplicate(self)
            if found is not None:
                raise ValueError(found[1])
        return self

    def boards(self) -> list[DeclaredBoard]:
        """Every declared board, with its host, site and rack, in file order."""
        return [
            DeclaredBoard(b.serial, host.name, b.slot, b.generation, b.hardware_revision, site.name, rack.name)
            for site in self.sites
            for rack in site.racks
            for host in rack.hosts
            for b in host.boards
        ]

    def hosts(self) -> dict[str, tuple[str, str]]:
        """Every declared host -> (site, rack)."""
        return {host.name: (site.name, rack.name) for site in self.sites for rack in site.racks for host in rack.hosts}


def first_duplicate(inv: Inventory) -> tuple[tuple[int | str, ...], str] | None:
    """The first host, serial or (host, slot) declared twice: (its second place, what to fix)."""
    hosts: dict[str, str] = {}
    serials: dict[str, str] = {}
    slots: dict[tuple[str, int], str] = {}
    for si, site in enumerate(inv.sites):
        for ri, rack in enumerate(site.racks):
            for hi, host in enumerate(rack.hosts):
                at: tuple[int | str, ...] = ("sites", si, "racks", ri, "hosts", hi)
                where = rack_path(site.name, rack.name)
                if host.name in hosts:
                    return (*at, "name"), (
                        f"host {host.name!r} is declared twice (in {hosts[host.name]} and {where}); "
                        "a host is in one rack: remove one"
                    )
                hosts[host.name] = where
                for bi, b in enumerate(host.boards):
                    if b.serial in serials:
                        return (*at, "boards", bi, "serial"), (
                            f"board {b.serial!r} is declared twice (on {serials[b.serial]} and {host.name}); "
                            "a serial names one board: remove one"
                        )
                    serials[b.serial] = host.name
                    if (host.name, b.slot) in slots:
                        return (*at, "boards", bi, "slot"), (
                            f"host {host.name!r} slot {b.slot} holds two boards ({slots[(host.name, b.slot)]} "
                            f"and {b.serial}): fix one board's slot"
                        )
                    slots[(host.name, b.slot)] = b.serial
    return None


# The model each key of a location belongs to, by its parent key: names the known keys when a
# file has an unknown one.
_MODEL_UNDER: dict[str, type[BaseModel]] = {
    "": Inventory,
    "onboarding": OnboardingSettings,
    "sites": InventorySite,
    "racks": InventoryRack,
    "hosts": InventoryHost,
    "boards": InventoryBoard,
}


def _line(root: yaml.Node | None, loc: Sequence[int | str]) -> int | None:
    """The 1-based line of the node at ``loc`` in the composed document (the deepest one found)."""
    node, line = root, None
    for part in loc:
        if node is None:
            break
        line = node.start_mark.line + 1
        nxt: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.value == str(part):
                    nxt = v if not isinstance(v, yaml.ScalarNode) else k  # a scalar's line: its key's
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            nxt = node.value[part]
        node = nxt
    if node is not None:
        line = node.start_mark.line + 1
    return line


def _problem(err: Mapping[str, Any], root: yaml.Node | None) -> tuple[str, str, int | None]:
    """(field, message, line) for one pydantic error."""
    loc: tuple[int | str, ...] = tuple(err["loc"])
    field = ".".join(str(p) for p in loc) or "(top level)"
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        parent = next((str(p) for p in reversed(loc[:-1]) if isinstance(p, str)), "")
        known = ", ".join(_MODEL_UNDER.get(parent, Inventory).model_fields)
        msg = f"unknown key {loc[-1]!r}: remove it or fix its spelling (known here: {known})"
    elif err["type"] == "missing":
        msg = "missing: add it"
    return field, msg, _line(root, loc)


def parse_inventory(data: Any, *, source: str = "inventory") -> Inventory:
    """Validate an inventory (YAML text, or a parsed document). A bad one raises
    :class:`BadRequest` naming the field, its line in the text, and the fix."""
    root: yaml.Node | None = None
    if isinstance(data, str):
        try:
            root = yaml.compose(data, Loader=plain_yaml.PlainLoader)
            data = plain_yaml.load(data)
        except yaml.YAMLError as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark is not None else ""
            raise BadRequest(
                f"{source}: not valid YAML{where}: {first}", detail={"line": mark.line + 1 if mark else None}
            ) from None
    if data is None:
        raise BadRequest(f"{source}: empty; expected a mapping with 'sites' (see examples/config/inventory.yaml)")
    if not isinstance(data, Mapping):
        raise BadRequest(
            f"{source}: expected a mapping with 'sites', 'auto_approve' and 'onboarding' "
            "(see examples/config/inventory.yaml)"
        )
    try:
        inv = Inventory.model_validate(data, context={"unique_checked_later": True})
    except ValidationError as exc:
        problems = [_problem(e, root) for e in exc.errors()]
        text = "; ".join(f"{f}{f' (line {line})' if line else ''}: {m}" for f, m, line in problems)
        field, _, line = problems[0]
        raise BadRequest(f"{source}: {text}", detail={"field": field, "line": line}) from None
    dup = first_duplicate(inv)
    if dup is not None:
        loc, msg = dup
        field, line = ".".join(str(p) for p in loc), _line(root, loc)
        raise BadRequest(
            f"{source}: {field}{f' (line {line})' if line else ''}: {msg}", detail={"field": field, "line": line}
        )
    return inv
