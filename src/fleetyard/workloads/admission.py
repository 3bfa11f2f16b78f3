"""Checks at submit for jobs that run an artifact: refused before they queue, not on a board later.

A kind declares them with an optional classmethod ``admit(params, registry)`` (see
:mod:`fleetyard.workloads.base`); the server calls it with a :class:`Registry` over its artifact
table and blob store. The checks read no array data: an inputs file is checked by its arrays'
headers (:func:`~fleetyard.workloads.tensors.peek_input_sets`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel

from fleetyard.errors import BadRequest
from fleetyard.runtimes import DeviceSettings, DeviceUnavailable, FunctionChoice, InputMismatch, Signature
from fleetyard.runtimes.iree_runtime import module_device_kinds
from fleetyard.workloads.base import WorkloadContext, WorkloadResult, params_as
from fleetyard.workloads.tensors import check_input_file, input_set_count

__all__ = ["OneSetArtifactWorkload", "Registry", "admit_artifact_job"]


class Registry(Protocol):
    """What a submit can look up: registered artifacts (their inspected info) and blobs."""

    def artifact_info(self, sha256: str) -> dict[str, Any] | None:
        """The artifact's ``ArtifactInfo.to_dict()``, or None when it was never registered."""
        ...

    def blob_path(self, sha256: str) -> Path | None:
        """The blob's file, or None when it was never uploaded."""
        ...

    def board_devices(self) -> dict[str, str]:
        """The boards the job could run on (by its generations, labels, board_ids): id -> device."""
        ...


def admit_artifact_job(
    registry: Registry,
    *,
    artifact: str,
    function: str | None = None,
    inputs: str | None = None,
    expected: str | None = None,
    one_input_set: bool = False,
) -> None:
    """Refuse (:class:`BadRequest` and subclasses, HTTP 422) a job whose artifact was never
    registered, whose IREE function does not exist or must be chosen, or whose inputs or golden
    outputs do not fit the artifact's signature (every set of the file is checked)."""
    info = registry.artifact_info(artifact)
    if info is None:
        raise BadRequest(
            f"artifact {artifact} is not registered; push it first (fleetyard artifacts push FILE, "
            "or PUT /v1/blobs/SHA then POST /v1/artifacts)",
            detail={"field": "params.artifact", "sha256": artifact},
        )
    signature = _signature(info, function)
    _check_devices(info, registry)
    for field, sha in (("inputs", inputs), ("expected", expected)):
        if sha is not None and registry.blob_path(sha) is None:
            raise BadRequest(
                f"params.{field}: blob {sha} was never uploaded; upload it first (PUT /v1/blobs/{sha})",
                detail={"field": f"params.{field}", "sha256": sha},
            )
    input_sets = 1
    if inputs is not None:
        path = registry.blob_path(inputs)
        assert path is not None  # Invariant: checked above.
        try:
            input_sets = check_input_file(path, signature)
        except InputMismatch as exc:
            raise InputMismatch(f"params.inputs: {exc.message}", detail=exc.detail) from None
        if one_input_set and input_sets != 1:
            raise InputMismatch(
                f"params.inputs holds {input_sets} input sets; this kind runs one (validate streams several)",
                detail={"field": "params.inputs", "sets": input_sets},
            )
    if expected is not None:
        path = registry.blob_path(expected)
        assert path is not None  # Invariant: checked above.
        have = input_set_count(path)
        if have != input_sets:
            raise InputMismatch(
                f"params.expected has {have} set(s) of golden outputs but there are {input_sets} input set(s); "
                "give one golden set per input set",
                detail={"field": "params.expected", "expected_sets": have, "input_sets": input_sets},
            )


def _check_devices(info: dict[str, Any], registry: Registry) -> None:
    """Refuse an IREE module that no board the job could run on can execute (compiled for cuda,
    and every matching board is a CPU, or the other way round)."""
    kinds = module_device_kinds(info)
    if not kinds:
        return  # not an IREE module, or nothing known of its devices: the fleet is not looked at
    boards = registry.board_devices()
    if not boards:
        return  # no board yet: the board's load decides
    board_kinds: dict[str, list[str]] = {}
    for board_id, device in boards.items():
        try:
            kind = DeviceSettings.from_env({DeviceSettings.ENV_DEVICE: device}).kind
        except DeviceUnavailable:
            continue
        board_kinds.setdefault(kind, []).append(board_id)
    if not board_kinds or kinds & set(board_kinds):
        return
    seen = "; ".join(
        f"{k}: {', '.join(sorted(ids)[:3])}{' …' if len(ids) > 3 else ''}" for k, ids in board_kinds.items()
    )
    raise DeviceUnavailable(
        f"the module was compiled for {', '.join(sorted(kinds))} devices ({info.get('metadata', {}).get('devices')}), "
        f"but every board this job could run on is another kind ({seen}); recompile it for those boards "
        "(--iree-hal-target-device) or ask for boards of a generation that has such devices",
        detail={"field": "params.artifact", "module_devices": sorted(kinds), "boards": board_kinds},
    )


def _signature(info: dict[str, Any], function: str | None) -> Signature:
    functions = list(info.get("functions") or [])
    if function is not None:
        if functions and function not in functions:
            raise FunctionChoice(
                f"params.function: the artifact has no function {function!r}; it exports {', '.join(functions)}",
                detail={"field": "params.function", "functions": functions},
            )
        if not functions:
            raise BadRequest(
                f"params.function applies to IREE modules; this artifact is {info.get('format')}",
                detail={"field": "params.function"},
            )
        return Signature.from_dict(info.get("signatures", {}).get(function) or info["signature"])
    if functions and info.get("function") is None:
        raise FunctionChoice(
            f"the module exports several functions ({', '.join(functions)}); choose one with params.function "
            "(--function)",
            detail={"field": "params.function", "functions": functions},
        )
    return Signature.from_dict(info["signature"])


class OneSetArtifactWorkload:
    """The shell of a kind that runs an artifact on one optional inputs set (``run``, ``bench``):
    its blobs, its checks at submit, and the call of its ``execute`` in the board's worker.

    A subclass sets ``kind``, ``params_model`` (with ``artifact``, ``inputs`` and ``function``)
    and ``execute`` (a staticmethod taking the params and the keywords :meth:`run` passes).
    """

    kind: ClassVar[str]
    params_model: ClassVar[type[BaseModel]]
    execute: ClassVar[Callable[..., WorkloadResult]]

    @classmethod
    def blobs(cls, params: BaseModel) -> list[str]:
        p: Any = params_as(params, cls.params_model)
        return [p.artifact] + ([p.inputs] if p.inputs else [])

    @classmethod
    def admit(cls, params: BaseModel, registry: Registry) -> None:
        p: Any = params_as(params, cls.params_model)
        admit_artifact_job(registry, artifact=p.artifact, function=p.function, inputs=p.inputs, one_input_set=True)

    def run(self, ctx: WorkloadContext) -> WorkloadResult:
        p: Any = params_as(ctx.params, self.params_model)
        return type(self).execute(
            p,
            artifact_path=ctx.blob(p.artifact),
            inputs_path=ctx.blob(p.inputs) if p.inputs else None,
            output_dir=ctx.output_dir,
            env=ctx.env,  # the worker puts FLEETYARD_BOARD_ID and the board session's environment there
            log=ctx.log,
            should_stop=ctx.should_stop,
            artifact_sha256=p.artifact,
        )
