"""The workload plugin interface that job kinds register with.

A kind is a class found through the ``fleetyard.workloads`` entry point group. The server calls
:meth:`Workload.validate_params` at submit, so a bad spec is refused before it queues; a
per-board worker process calls :meth:`Workload.run` for each rank of an attempt.

A kind whose jobs need blobs (an artifact, an inputs file) declares them with an optional
classmethod ``blobs(params) -> list[str]`` of sha256s; absent means none. The agent fetches them
into its content-addressed cache before the rank starts (see :func:`required_blobs`), and the
rank reaches each through :meth:`WorkloadContext.blob`.

A kind may also declare ``admit(params, registry) -> None``, a classmethod the server calls at
submit after the params parsed: it refuses (``BadRequest``) what the params name but the server
can tell is wrong, e.g. an artifact never registered or inputs that do not fit it (see
:mod:`fleetyard.workloads.admission`). A kind without it is admitted on its params alone.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from fleetyard.domain.job import Cause, Outcome
from fleetyard.errors import BadRequest
from fleetyard.workloads.rank_cgroup import RankCgroup
from fleetyard.workloads.sandbox import Sandbox


@dataclass
class WorkloadContext:
    """What a running rank gets from its worker."""

    assignment_id: int
    job_id: int
    rank: int
    world_size: int
    board_id: str
    device: str
    params: BaseModel
    time_limit_s: float
    env: dict[str, str]  # FLEETYARD_* and the board session's environment
    workdir: Path  # empty, private to this rank
    output_dir: Path  # files left here are uploaded as the rank's outputs
    log: Callable[[str], None]  # streams text to the job's log
    should_stop: Callable[[], bool]  # true once canceled or over the time limit
    blobs: dict[str, Path] = field(default_factory=dict)  # sha256 -> the file in the agent's cache
    sandbox: Sandbox = field(default_factory=Sandbox)  # how the processes the rank starts are confined
    cgroup: RankCgroup | None = None  # the board slot's cgroup (memory, CPU), where the host offers one

    def blob(self, sha256: str) -> Path:
        """The local file of a blob the kind declared in ``blobs(params)``."""
        try:
            return self.blobs[sha256]
        except KeyError:
            raise KeyError(
                f"blob {sha256} was not fetched for this rank: a workload reaches only the blobs "
                f"its kind declares in blobs(params) (declared: {', '.join(self.blobs) or 'none'})"
            ) from None


@dataclass
class WorkloadResult:
    outcome: Outcome
    exit_code: int | None = None
    message: str | None = None
    result: dict[str, Any] = field(default_factory=dict)
    # What ended the rank: set by the agent (a stop, a board fault), never taken from a job's process.
    cause: Cause = Cause.WORKLOAD


class Workload(Protocol):
    kind: ClassVar[str]
    params_model: ClassVar[type[BaseModel]]

    def run(self, ctx: WorkloadContext) -> WorkloadResult: ...

    # Optional: ``@staticmethod def metrics(results: list[dict]) -> dict``, a job's metrics from
    # its ranks' results (a pipeline's conditions read them; absent: rank 0's numbers), and
    # ``@classmethod def blobs(cls, params: BaseModel) -> list[str]``, the sha256s of
    # the blobs a job needs on its board, and ``@classmethod def admit(cls, params, registry)``
    # (see the module's docstring). Not declared here, so that a kind without them still
    # satisfies the protocol.


@functools.cache
def _entry_points() -> dict[str, EntryPoint]:
    # Read once per process: scanning the installed distributions costs about a millisecond.
    return {ep.name: ep for ep in entry_points(group="fleetyard.workloads")}


def workload_class(kind: str) -> type[Workload]:
    eps = _entry_points()
    if kind not in eps:
        raise BadRequest(
            f"unknown job kind {kind!r}; known kinds: {', '.join(sorted(eps)) or 'none'}",
            detail={"field": "kind"},
        )
    cls: type[Workload] = eps[kind].load()
    return cls


def board_record(env: Mapping[str, str]) -> dict[str, Any]:
    """The board a rank ran on, as its session's environment names it, for results: id, serial,
    firmware, generation, device, driver and its version (and the GPU's UUID, the sim
    generation's latency factor)."""
    board: dict[str, Any] = {
        "id": env.get("FLEETYARD_BOARD_ID"),
        "serial": env.get("FLEETYARD_BOARD_SERIAL"),
        "device": env.get("FLEETYARD_DEVICE") or "local cpu",
        "firmware": env.get("FLEETYARD_BOARD_FIRMWARE"),
        "generation": env.get("FLEETYARD_BOARD_GENERATION"),
        "driver": env.get("FLEETYARD_DRIVER"),  # which driver, and its version
        "gpu_uuid": env.get("FLEETYARD_GPU_UUID"),
    }
    if "FLEETYARD_SIM_GENERATION" in env:
        board["sim"] = {
            "generation": env["FLEETYARD_SIM_GENERATION"],
            "latency_factor": float(env.get("FLEETYARD_SIM_LATENCY_FACTOR", "1") or 1),
            "note": "run on this host's CPU; the generation's latency factor is recorded, not applied",
        }
    return board


P = TypeVar("P", bound=BaseModel)


def params_as(params: BaseModel, model: type[P]) -> P:
    """A kind's params as its own model. The worker parsed them with that model already, so
    this is the identity there; any other model is re-validated."""
    return params if isinstance(params, model) else model.model_validate(params.model_dump())


def validate_params(kind: str, params: dict[str, Any]) -> BaseModel:
    """Parse a job's ``params`` with its kind's model; a bad field is a 422 naming it."""
    cls = workload_class(kind)
    try:
        return cls.params_model.model_validate(params)
    except ValidationError as exc:
        errors = [{"field": ".".join(["params", *map(str, e["loc"])]), "message": e["msg"]} for e in exc.errors()]
        first = errors[0]
        raise BadRequest(f"invalid job spec: {first['field']}: {first['message']}", detail=errors)


def admit(kind: str, params: BaseModel, registry: Any) -> None:
    """Run the kind's submit-time checks on its parsed ``params``, if it declares any."""
    check: Callable[[BaseModel, Any], None] | None = getattr(workload_class(kind), "admit", None)
    if check is not None:
        check(params, registry)


def required_blobs(kind: str, params: dict[str, Any]) -> list[str]:
    """The sha256s of the blobs a job of ``kind`` with ``params`` needs on its board.

    Raises :class:`BadRequest` for an unknown kind or invalid params (the worker reports those).
    """
    cls = workload_class(kind)
    declare: Callable[[BaseModel], list[str]] | None = getattr(cls, "blobs", None)
    if declare is None:
        return []
    parsed = validate_params(kind, params)
    return list(dict.fromkeys(declare(parsed)))
