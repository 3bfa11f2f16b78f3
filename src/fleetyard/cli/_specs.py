"""Job specs from files and from ``fleetyard run`` arguments: pure functions, tested without a server."""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from fleetyard.client import JobSpec, Placement, parse_spec
from fleetyard.domain import plain_yaml
from fleetyard.errors import BadRequest


def load_specs(text: str, source: str) -> tuple[list[JobSpec], bool]:
    """The job specs a YAML or JSON document holds, and whether it held a list of them.

    A bad document or field is a :class:`BadRequest` naming ``source``, the item and the field.
    """
    try:
        data: Any = json.loads(text) if source.endswith(".json") else plain_yaml.load(text)
    except (ValueError, yaml.YAMLError) as exc:
        kind = "JSON" if source.endswith(".json") else "YAML"
        raise BadRequest(f"{source}: not valid {kind}: {_one_line(exc)}") from None
    if data is None:
        raise BadRequest(f"{source}: empty; expected a job spec (a mapping) or a list of them")
    if isinstance(data, list):
        if not data:
            raise BadRequest(f"{source}: an empty list; expected at least one job spec")
        return [parse_spec(item, where=f"{source}, job #{i + 1}") for i, item in enumerate(data)], True
    if isinstance(data, Mapping):
        return [parse_spec(data, where=source)], False
    raise BadRequest(f"{source}: expected a job spec (a mapping) or a list of them, got {type(data).__name__}")


def read_specs(path: str) -> tuple[list[JobSpec], bool]:
    """:func:`load_specs` of a file, or of stdin for ``-``."""
    if path == "-":
        import sys

        return load_specs(sys.stdin.read(), "<stdin>")
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadRequest(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadRequest(f"{path}: cannot read it: {_one_line(exc)}") from None
    return load_specs(text, path)


def build_run_spec(
    command: Sequence[str],
    *,
    boards: int = 1,
    generations: Sequence[str] = (),
    labels: Mapping[str, str] | None = None,
    same_host: bool = False,
    time_limit_s: float | None = None,
    name: str | None = None,
    priority: int = 0,
    team: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> JobSpec:
    """The ``command`` job that ``fleetyard run … -- CMD ARGS…`` submits."""
    if not command:
        raise BadRequest("no command to run; put it after `--`, e.g. `fleetyard run --boards 1 -- hostname`")
    data: dict[str, Any] = {
        "kind": "command",
        "name": name if name is not None else _default_name(command),
        "boards": boards,
        "generations": list(generations),
        "labels": dict(labels or {}),
        "placement": Placement.SAME_HOST if same_host else Placement.ANY,
        "priority": priority,
        "team": team,
        "params": {"command": list(command)},
        **(extra or {}),
    }
    if time_limit_s is not None:
        data["time_limit_s"] = time_limit_s
    return parse_spec(data, where="fleetyard run")


def _default_name(command: Sequence[str]) -> str:
    text = shlex.join(command)
    return text if len(text) <= 80 else text[:79] + "…"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
