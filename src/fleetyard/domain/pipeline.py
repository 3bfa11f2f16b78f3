"""The pipeline spec: stages of jobs joined by ``needs``, expanded over matrices, gated by conditions.

    name: compiler-ci
    params: {artifact: null, min_top1: 0.75}   # defaults; --set artifact=… overrides
    time_limit: 2h                             # the whole pipeline
    stages:
      validate:
        matrix: {generation: [sim-g1, sim-g2, sim-g3]}
        job:                                   # a job spec (fleetyard.domain.spec.JobSpec)
          kind: validate
          generations: ["${{ matrix.generation }}"]
          params: {artifact: "${{ params.artifact }}", input_sets: 4}
        retries: 1
      eval:
        needs: [validate]
        job: {kind: eval, params: {artifact: "${{ params.artifact }}"}}
      report:
        needs: [eval]
        if: "${{ stages.eval.metrics.top1 >= params.min_top1 }}"
        job: {kind: command, params: {command: "echo ${{ stages.eval.outputs.report }}"}}

A string that is exactly one ``${{ … }}`` takes the referenced value's type; inside a longer
string the value is written in. References: ``params.NAME``, ``matrix.AXIS`` (its own stage's
instance), ``stages.STAGE.metrics.NAME`` and ``stages.STAGE.outputs.NAME`` (an earlier stage it
needs, directly or not; not a matrix stage: which instance would it mean?). A job of several
ranks records each rank's file ``NAME`` as ``NAME@RANK`` and rank 0's also as plain ``NAME``
(:func:`fleetyard.policy.pipeline.stage_outputs`): ``stages.eval.outputs.samples.jsonl@1``. A condition is
references and literals compared with ``== != < <= > >=`` and joined by ``and`` / ``or`` / ``not``;
nothing else is evaluated.

Pure: :func:`parse_pipeline` validates (a cycle, an unknown stage or reference, a bad expression
are refused naming the stage and the fix), :func:`expand` turns stages into instances (one per
matrix combination), :func:`render` fills a template from a context, :func:`condition` judges one.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from fleetyard.domain import plain_yaml
from fleetyard.errors import BadRequest

__all__ = [
    "Instance",
    "PipelineSpec",
    "StageSpec",
    "condition",
    "expand",
    "parse_duration",
    "parse_pipeline",
    "references",
    "render",
]

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
_EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
_REF = re.compile(
    r"^(params|matrix)\.([A-Za-z_][A-Za-z0-9_-]*)$|^stages\.([A-Za-z][A-Za-z0-9_-]*)\.(metrics|outputs)\.(.+)$"
)
_TOKEN = re.compile(
    r"\s*(?:(?P<num>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)|(?P<str>'[^']*'|\"[^\"]*\")|(?P<op>==|!=|<=|>=|<|>|\(|\))"
    r"|(?P<word>[A-Za-z_][A-Za-z0-9_.\-@]*))"
)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


def parse_duration(value: str | float | int) -> float:
    """``90`` / ``"90s"`` / ``"30m"`` / ``"2h"`` / ``"1d"`` -> seconds."""
    if isinstance(value, int | float):
        return float(value)
    m = _DURATION.match(value)
    if m is None:
        raise ValueError(f"expected a duration like 90s, 30m, 2h or 1d, got {value!r}")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


class StageSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    job: dict[str, Any] = Field(description="a job spec template (kind, boards, generations, params, …)")
    needs: list[str] = Field(default_factory=list)
    matrix: dict[str, list[Any]] = Field(default_factory=dict, description="axis -> values; one job per combination")
    when: str | None = Field(None, alias="if", description="a condition over earlier stages' metrics and params")
    retries: int = Field(0, ge=0, le=10, description="runs again after a failure, this many times at most")

    @field_validator("matrix")
    @classmethod
    def _axes(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for axis, values in v.items():
            if not _NAME.match(axis):
                raise ValueError(f"matrix axis {axis!r}: use letters, digits, '_' and '-', starting with a letter")
            if not values:
                raise ValueError(f"matrix axis {axis!r} has no values: give at least one")
        return v


class PipelineSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    params: dict[str, Any] = Field(default_factory=dict)
    time_limit_s: float = Field(6 * 3600.0, gt=0)
    stages: dict[str, StageSpec]

    def order(self) -> list[str]:
        """The stages in an order where each comes after what it needs (the spec's order otherwise)."""
        done: list[str] = []
        left = list(self.stages)
        while left:
            ready = [s for s in left if all(n in done for n in self.stages[s].needs)]
            if not ready:  # a cycle: what is left never gets ready (parse_pipeline refuses it)
                break
            done += ready
            left = [s for s in left if s not in ready]
        return done

    def ancestors(self, stage: str) -> set[str]:
        out: set[str] = set()
        todo = list(self.stages[stage].needs)
        while todo:
            s = todo.pop()
            if s not in out:
                out.add(s)
                todo += self.stages[s].needs
        return out


@dataclass(frozen=True)
class Instance:
    """One job of a stage: the stage's name and, for a matrix stage, its combination."""

    stage: str
    matrix: tuple[tuple[str, Any], ...] = ()

    @property
    def name(self) -> str:
        if not self.matrix:
            return self.stage
        return f"{self.stage}[{','.join(f'{k}={v}' for k, v in self.matrix)}]"


def expand(spec: PipelineSpec) -> list[Instance]:
    """Every stage's instances, stages in dependency order."""
    out: list[Instance] = []
    for stage in spec.order():
        m = spec.stages[stage].matrix
        if not m:
            out.append(Instance(stage))
            continue
        axes = list(m)
        for combo in itertools.product(*(m[a] for a in axes)):
            out.append(Instance(stage, tuple(zip(axes, combo, strict=True))))
    return out


def references(text: str) -> list[str]:
    """The references named in a template string or condition (``stages.eval.metrics.top1``…)."""
    refs: list[str] = []
    for expr in _EXPR.findall(text):
        refs += [t.group("word") for t in _TOKEN.finditer(expr) if t.group("word") and t.group("word") not in _WORDS]
    return refs


_WORDS = {"and", "or", "not", "true", "false", "null"}


class _Missing(Exception):
    pass


def _lookup(ref: str, ctx: Mapping[str, Any]) -> Any:
    node: Any = ctx
    m = _REF.match(ref)
    if m is None:
        raise ValueError(
            f"{ref!r} is not a reference: use params.NAME, matrix.AXIS or stages.STAGE.metrics|outputs.NAME"
        )
    parts = [p for p in m.groups() if p is not None]
    if m.group(3) is not None:
        parts.insert(0, "stages")
    for p in parts:
        if not isinstance(node, Mapping) or p not in node:
            raise _Missing(ref)
        node = node[p]
    return node


def render(template: Any, ctx: Mapping[str, Any]) -> Any:
    """The template with its ``${{ ref }}`` filled in from ``ctx`` (``{"params", "matrix", "stages"}``).
    A reference with no value yet raises KeyError naming it."""
    if isinstance(template, str):
        whole = _EXPR.fullmatch(template.strip())
        try:
            if whole is not None:
                return _lookup(whole.group(1), ctx)
            return _EXPR.sub(lambda m: str(_lookup(m.group(1), ctx)), template)
        except _Missing as e:
            raise KeyError(f"{e.args[0]} has no value") from None
    if isinstance(template, Mapping):
        return {k: render(v, ctx) for k, v in template.items()}
    if isinstance(template, list):
        return [render(v, ctx) for v in template]
    return template


def condition(text: str, ctx: Mapping[str, Any]) -> bool:
    """Judge a condition (``${{ a >= 0.9 and not b }}``; the braces are optional). A reference
    with no value (a metric the stage did not report) makes the condition false."""
    m = _EXPR.fullmatch(text.strip())
    expr = m.group(1) if m else text
    try:
        return bool(_Parser(expr, ctx).parse())
    except _Missing:
        return False


class _Parser:
    """``or`` < ``and`` < ``not`` < comparison < atom: recursive descent, no ``eval``."""

    def __init__(self, text: str, ctx: Mapping[str, Any] | None) -> None:
        """``ctx`` None: check the syntax only (every reference reads as 0)."""
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        for t in _TOKEN.finditer(text):
            if t.start() != pos and text[pos : t.start()].strip():
                raise ValueError(f"cannot read {text[pos : t.start()].strip()!r} in {text!r}")
            kind = t.lastgroup or ""
            self.tokens.append((kind, t.group(kind)))
            pos = t.end()
        if text[pos:].strip():
            raise ValueError(f"cannot read {text[pos:].strip()!r} in {text!r}")
        self.ctx, self.i, self.text = ctx, 0, text

    def _peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def _take(self) -> tuple[str, str]:
        t = self._peek()
        if t is None:
            raise ValueError(f"{self.text!r} ends too soon")
        self.i += 1
        return t

    def parse(self) -> Any:
        v = self._or()
        if self._peek() is not None:
            raise ValueError(f"unexpected {self._peek()[1]!r} in {self.text!r}")  # type: ignore[index]
        return v

    def _or(self) -> Any:
        v = self._and()
        while self._peek() == ("word", "or"):
            self._take()
            rhs = self._and()
            v = bool(v) or bool(rhs)
        return v

    def _and(self) -> Any:
        v = self._not()
        while self._peek() == ("word", "and"):
            self._take()
            rhs = self._not()
            v = bool(v) and bool(rhs)
        return v

    def _not(self) -> Any:
        if self._peek() == ("word", "not"):
            self._take()
            return not self._not()
        return self._cmp()

    def _cmp(self) -> Any:
        left = self._atom()
        t = self._peek()
        if t is not None and t[0] == "op" and t[1] not in "()":
            op = self._take()[1]
            right = self._atom()
            try:
                return {
                    "==": left == right, "!=": left != right, "<": left < right, "<=": left <= right,
                    ">": left > right, ">=": left >= right,
                }[op]  # fmt: skip
            except TypeError:
                raise ValueError(f"cannot compare {left!r} {op} {right!r} in {self.text!r}") from None
        return left

    def _atom(self) -> Any:
        kind, text = self._take()
        if kind == "num":
            return float(text) if any(c in text for c in ".eE") else int(text)
        if kind == "str":
            return text[1:-1]
        if kind == "op" and text == "(":
            v = self._or()
            if self._take() != ("op", ")"):
                raise ValueError(f"a '(' is not closed in {self.text!r}")
            return v
        if kind == "word":
            if text in ("true", "false"):
                return text == "true"
            if text == "null":
                return None
            if self.ctx is None:
                if _REF.match(text) is None:
                    raise ValueError(f"{text!r} is not a reference (params.NAME, stages.STAGE.metrics.NAME…)")
                return 0
            return _lookup(text, self.ctx)
        raise ValueError(f"unexpected {text!r} in {self.text!r}")


def parse_pipeline(text: str, *, overrides: Mapping[str, Any] | None = None) -> PipelineSpec:
    """Parse and check a pipeline YAML (``overrides``: ``--set NAME=VALUE`` params)."""
    try:
        doc = plain_yaml.load(text)
    except yaml.YAMLError as e:
        raise BadRequest(f"the pipeline is not valid YAML: {e}") from None
    if not isinstance(doc, dict):
        raise BadRequest("a pipeline is a mapping with name, stages (and params, time_limit)")
    doc = dict(doc)
    if "time_limit" in doc:
        try:
            doc["time_limit_s"] = parse_duration(doc.pop("time_limit"))
        except ValueError as e:
            raise BadRequest(f"time_limit: {e}") from None
    try:
        spec = PipelineSpec.model_validate(doc)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise BadRequest(f"pipeline {where}: {first['msg']}", detail={"field": where}) from None
    unknown = set(overrides or {}) - set(spec.params)
    if unknown:
        raise BadRequest(
            f"--set {', '.join(sorted(unknown))}: the pipeline has no such param "
            f"(its params: {', '.join(spec.params) or 'none'}); declare it under params:",
            detail={"unknown": sorted(unknown)},
        )
    spec = spec.model_copy(update={"params": {**spec.params, **(overrides or {})}})
    _check(spec)
    return spec


def _check(spec: PipelineSpec) -> None:
    for name, st in spec.stages.items():
        if not _NAME.match(name):
            raise BadRequest(
                f"stage {name!r}: a stage's name uses letters, digits, '_' and '-', starting with a letter"
            )
        for n in st.needs:
            if n not in spec.stages:
                raise BadRequest(
                    f"stage {name}: needs {n!r}, which is not a stage (stages: {', '.join(spec.stages)})",
                    detail={"stage": name},
                )
        if "kind" not in st.job:
            raise BadRequest(f"stage {name}: its job names no kind (e.g. kind: validate)", detail={"stage": name})
    if len(spec.order()) != len(spec.stages):
        stuck = sorted(set(spec.stages) - set(spec.order()))
        raise BadRequest(f"stages {', '.join(stuck)} need each other (a cycle): break it", detail={"stages": stuck})
    for name, st in spec.stages.items():
        before = spec.ancestors(name)
        texts = [_strings(st.job), [st.when] if st.when else []]
        for text in itertools.chain.from_iterable(texts):
            for ref in references(text):
                _check_ref(spec, name, st, ref, before)
        if st.when is not None:
            m = _EXPR.fullmatch(st.when.strip())
            try:
                _Parser(m.group(1) if m else st.when, None).parse()
            except ValueError as e:
                raise BadRequest(f"stage {name}: if: {e}", detail={"stage": name}) from None


def _check_ref(spec: PipelineSpec, stage: str, st: StageSpec, ref: str, before: set[str]) -> None:
    m = _REF.match(ref)
    if m is None:
        raise BadRequest(
            f"stage {stage}: {ref!r} is not a reference: use params.NAME, matrix.AXIS or "
            "stages.STAGE.metrics.NAME / stages.STAGE.outputs.NAME",
            detail={"stage": stage, "ref": ref},
        )
    scope, key, other = m.group(1), m.group(2), m.group(3)
    if scope == "params" and key not in spec.params:
        raise BadRequest(f"stage {stage}: params.{key} is not declared under params:", detail={"stage": stage})
    if scope == "matrix" and key not in st.matrix:
        raise BadRequest(f"stage {stage}: matrix.{key} is not an axis of its matrix", detail={"stage": stage})
    if other is not None:
        if other not in spec.stages:
            raise BadRequest(f"stage {stage}: {ref} names no stage {other!r}", detail={"stage": stage})
        if other not in before:
            raise BadRequest(
                f"stage {stage}: {ref} reads stage {other}, which it does not need: add it to needs",
                detail={"stage": stage},
            )
        if spec.stages[other].matrix:
            raise BadRequest(
                f"stage {stage}: {ref} reads matrix stage {other} (one job per combination): which one? "
                "Read a stage that gathers them instead",
                detail={"stage": stage},
            )


def _strings(node: Any) -> Sequence[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, Mapping):
        return [s for v in node.values() for s in _strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return []
