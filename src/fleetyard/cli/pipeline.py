"""``fleetyard pipeline …``: pipelines of jobs (a DAG of stages) run on the fleet.

fleetyard pipeline run examples/pipelines/compiler-ci.yaml --set artifact=SHA --junit ci.xml
fleetyard pipeline ls
fleetyard pipeline show 7
fleetyard pipeline cancel 7

``run`` waits for the verdict and exits 0 only when every stage succeeded: 1 when a stage failed,
a condition held one back (a gate) or the pipeline ran out of time. That makes it a CI step.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from fleetyard.cli._common import JsonOpt, client
from fleetyard.cli._junit import Case, junit_xml
from fleetyard.cli._output import emit_json, fmt_time, note, out, styled, table
from fleetyard.client import PipelineRunOut
from fleetyard.domain import plain_yaml

app = typer.Typer(help="Pipelines: stages of jobs joined by needs, matrices and gates.", no_args_is_help=True)

FINISHED = ("succeeded", "failed", "gated", "timed_out", "canceled")


def _set(items: list[str] | None) -> dict[str, Any]:
    """``--set NAME=VALUE``; the value reads as YAML (numbers, booleans), else as text."""
    out_: dict[str, Any] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise typer.BadParameter(f"expected NAME=VALUE, got {item!r}", param_hint="'--set'")
        try:
            out_[name.strip()] = plain_yaml.load(value) if value else ""
        except yaml.YAMLError:
            out_[name.strip()] = value
    return out_


def _show(run: PipelineRunOut) -> None:
    rows = [
        (
            s.name,
            styled(s.state),
            s.job_id or "",
            s.attempts or "",
            ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in list(s.metrics.items())[:4]),
            s.message or "",
        )
        for s in run.stages
    ]
    title = f"pipeline run {run.id} ({run.name}): {run.state}"
    out().print(table(["STAGE", "STATE", "JOB", "TRIES", "METRICS", "WHY"], rows, title=title))
    if run.message and run.state in FINISHED:
        note(run.message)


def _junit(run: PipelineRunOut) -> str:
    cases = []
    for s in run.stages:
        status = {"succeeded": "passed", "skipped": "failure" if s.gated else "error"}.get(s.state, "error")
        if s.state == "failed":
            status = "failure"
        cases.append(
            Case(
                classname=f"pipeline.{run.name}.{s.stage}",
                name=s.name,
                status=status,  # type: ignore[arg-type]
                message=s.message or s.state,
                text=str(s.metrics) if s.metrics else "",
            )
        )
    return junit_xml(cases, suite=f"fleetyard.pipeline {run.name} #{run.id}")


@app.command("run")
def run(
    ctx: typer.Context,
    spec: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="The pipeline spec (YAML).")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="A param: NAME=VALUE (repeat).")] = None,
    junit: Annotated[Path | None, typer.Option("--junit", help="Write JUnit XML: a testcase per stage.")] = None,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Wait for the verdict (exit 1 unless it passed).")
    ] = True,
    poll_s: Annotated[float, typer.Option("--poll", min=0.1, help="Seconds between looks.")] = 1.0,
    as_json: JsonOpt = False,
) -> None:
    """Start a pipeline run and (by default) wait for its verdict."""
    c = client(ctx)
    r = c.start_pipeline(spec.read_text(), _set(set_))
    if not as_json:
        note(f"pipeline run {r.id} ({r.name}) started: {len(r.stages)} stage instance(s)")
    while wait and r.state not in FINISHED:
        time.sleep(poll_s)
        r = c.pipeline(r.id)
    if junit is not None:
        junit.write_text(_junit(r))
    if as_json:
        emit_json(r)
    else:
        _show(r)
    if wait and r.state != "succeeded":
        raise typer.Exit(1)


@app.command("ls")
def ls(
    ctx: typer.Context,
    state: Annotated[str | None, typer.Option("--state", help="Only runs in this state.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Pipeline runs, newest first."""
    runs = client(ctx).pipelines(state)
    if as_json:
        emit_json(runs)
        return
    rows = [
        (r.id, r.name, r.state, r.owner, fmt_time(r.created_at), fmt_time(r.finished_at), r.message or "") for r in runs
    ]
    out().print(table(["ID", "NAME", "STATE", "OWNER", "STARTED", "FINISHED", "WHY"], rows))


@app.command("show")
def show(ctx: typer.Context, run_id: Annotated[int, typer.Argument(help="The run.")], as_json: JsonOpt = False) -> None:
    """A run: each stage instance, its job, metrics and why it ended as it did."""
    r = client(ctx).pipeline(run_id)
    if as_json:
        emit_json(r)
        return
    _show(r)


@app.command("cancel")
def cancel(
    ctx: typer.Context, run_id: Annotated[int, typer.Argument(help="The run.")], as_json: JsonOpt = False
) -> None:
    """Cancel a running pipeline run."""
    r = client(ctx).cancel_pipeline(run_id)
    if as_json:
        emit_json(r)
        return
    _show(r)
