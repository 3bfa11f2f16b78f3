"""``fleetyard jobs …``: submit, list, show, logs, cancel, wait, results."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from typing import Annotated

import typer
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from fleetyard.cli._common import JsonOpt, client
from fleetyard.cli._follow import LogPrinter, wait_exit_code, wait_jobs
from fleetyard.cli._output import (
    compact,
    emit_json,
    fmt_duration,
    fmt_labels,
    fmt_time,
    key_values,
    note,
    out,
    styled,
    table,
)
from fleetyard.cli._specs import read_specs
from fleetyard.client import Client, JobDetail, JobOut, LogChunk, RankOut, ResultsOut
from fleetyard.domain.job import JobState

app = typer.Typer(help="Submit and watch jobs.", no_args_is_help=True)

TimeoutOpt = Annotated[
    float | None, typer.Option("--timeout", help="Give up waiting after this many seconds (exit 124).")
]


def _duration(job: JobOut) -> float | None:
    if job.started_at is None:
        return None
    return (job.finished_at or time.time()) - job.started_at


def jobs_table(jobs: list[JobOut], title: str | None = None) -> Table:
    rows = [
        (
            j.id,
            j.name or "",
            j.kind,
            styled(j.state),
            styled(j.outcome),
            j.team,
            j.spec.boards,
            ",".join(j.spec.generations) or "any",
            fmt_time(j.submitted_at),
            fmt_duration(_duration(j)),
        )
        for j in jobs
    ]
    cols = ("ID", "NAME", "KIND", "STATE", "OUTCOME", "TEAM", "BOARDS", "GEN", "SUBMITTED", "RAN")
    return table(cols, rows, title=title)


def _outcome(r: RankOut) -> Text:
    """Its outcome, and what ended it when that was not its own workload (``host_lost``, …)."""
    text = styled(r.outcome)
    if r.cause is not None and r.cause not in ("workload", r.outcome):
        text.append(f" ({r.cause})", style="dim")
    return text


def ranks_table(ranks: list[RankOut], attempt: int | None = None) -> Table:
    def took(r: RankOut) -> str:
        if r.started_at is None:
            return ""
        return fmt_duration((r.finished_at or time.time()) - r.started_at)

    rows = [
        (
            *((attempt,) if attempt is not None else ()),
            r.rank,
            r.board_id,
            r.host_id,
            styled(r.state),
            _outcome(r),
            "" if r.exit_code is None else r.exit_code,
            took(r),
            compact(r.result, 80) if r.result else "",
            " ".join(f"{k}={v[:12]}" for k, v in sorted(r.outputs.items())),
            r.message or "",
        )
        for r in sorted(ranks, key=lambda r: r.rank)
    ]
    cols = ("RANK", "BOARD", "HOST", "STATE", "OUTCOME", "EXIT", "TOOK", "RESULT", "OUTPUTS", "MESSAGE")
    return table((("ATTEMPT",) if attempt is not None else ()) + cols, rows)


def _job_summary(job: JobOut) -> list[tuple[str, object]]:
    spec = job.spec
    return [
        ("id", job.id),
        ("name", job.name),
        ("kind", job.kind),
        ("state", styled(job.state)),
        ("outcome", styled(job.outcome)),
        ("message", job.message),
        ("team / owner", f"{job.team} / {job.owner}"),
        ("priority", f"{spec.priority_class or 'default class'}, {job.priority}"),
        ("waiting", job.pending_reason),
        ("boards", f"{spec.boards} ({spec.placement}) of {', '.join(spec.generations) or 'any generation'}"),
        ("labels", fmt_labels(spec.labels)),
        ("time limit", fmt_duration(spec.time_limit_s)),
        ("params", compact(spec.params, 300)),
        ("submitted", fmt_time(job.submitted_at)),
        ("started", fmt_time(job.started_at)),
        ("finished", fmt_time(job.finished_at)),
        ("ran", fmt_duration(_duration(job))),
        ("attempts", f"{job.attempts} ({job.infra_retries} infra retries)"),
    ]


@app.command("submit")
def submit(
    ctx: typer.Context,
    file: Annotated[str, typer.Argument(help="A YAML or JSON job spec, or a list of them; '-' reads stdin.")],
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the jobs; exit non-zero unless all succeed.")] = False,
    timeout: TimeoutOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Submit the job(s) a spec file describes."""
    specs, is_list = read_specs(file)
    with client(ctx) as fy:
        if is_list:
            ids = fy.submit_many(specs)
            submitted: list[JobOut] = []
        else:
            submitted = [fy.submit(specs[0])]
            ids = [submitted[0].id]
        note(f"submitted {len(ids)} job(s): {_id_range(ids)}")
        if not wait:
            if as_json:
                emit_json({"ids": ids} if is_list else submitted[0])
            elif submitted:
                out().print(jobs_table(submitted))
            else:
                typer.echo("\n".join(map(str, ids)))
            return
        jobs = wait_jobs(fy, ids, timeout)
    if as_json:
        emit_json(jobs if is_list else jobs[0])
    else:
        out().print(jobs_table(jobs))
    raise typer.Exit(wait_exit_code(jobs))


def _id_range(ids: list[int]) -> str:
    if len(ids) > 5 and ids == list(range(ids[0], ids[0] + len(ids))):
        return f"{ids[0]}…{ids[-1]}"
    return ", ".join(map(str, ids))


@app.command("ls")
def ls(
    ctx: typer.Context,
    state: Annotated[JobState | None, typer.Option("--state", help="One of the job states.")] = None,
    team: Annotated[str | None, typer.Option("--team")] = None,
    kind: Annotated[str | None, typer.Option("--kind")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10000)] = 50,
    as_json: JsonOpt = False,
) -> None:
    """List jobs, newest first."""
    with client(ctx) as fy:
        jobs = fy.jobs(state=state, team=team, kind=kind, limit=limit)
    if as_json:
        emit_json(jobs)
    elif not jobs:
        note("no jobs")
    else:
        out().print(jobs_table(jobs))


def show_job(job: JobDetail) -> None:
    parts: list[RenderableType] = [key_values(_job_summary(job))]
    for attempt in job.attempt_list:
        title = f"attempt {attempt.number}: {attempt.state}" + (f", {attempt.outcome}" if attempt.outcome else "")
        if attempt.message:
            title += f" ({attempt.message})"
        parts += ["", f"[bold]{title}[/]", ranks_table(attempt.ranks)]
    out().print(Group(*parts))


@app.command("show")
def show(ctx: typer.Context, job_id: Annotated[int, typer.Argument()], as_json: JsonOpt = False) -> None:
    """One job with its attempts and ranks."""
    with client(ctx) as fy:
        job = fy.job(job_id)
    if as_json:
        emit_json(job)
    else:
        show_job(job)


@app.command("why")
def why(ctx: typer.Context, job_id: Annotated[int, typer.Argument()], as_json: JsonOpt = False) -> None:
    """Why a job is pending, with the numbers: constraints, quota, gang, the line, reservations."""
    with client(ctx) as fy:
        w = fy.why(job_id)
    if as_json:
        emit_json(w)
        return
    out().print(f"[bold]job {w.job_id}[/] ({w.state}): {w.summary}", highlight=False)
    d = w.details
    if d:
        turned = ", ".join(f"{n} by {k}" for k, n in d.get("excluded_by", {}).items()) or "none"
        pairs: list[tuple[str, object]] = [
            ("wants", f"{d['boards_wanted']} board(s): {d['constraints']}; {d['placement']}"),
            ("fleet", f"{d['boards_in_fleet']} boards; {d['boards_matching']} match; excluded: {turned}"),
            ("free now", d["boards_matching_free_now"]),
            *(("quota", q) for q in d.get("quota", [])),
        ]
        if w.reservation:
            boards = w.reservation["boards"]
            pairs.append(
                (
                    "reservation",
                    f"{len(boards)} board(s) held, expected start {fmt_time(w.reservation['expected_start'])}",
                )
            )
        out().print(key_values(pairs))


@app.command("logs")
def logs(
    ctx: typer.Context,
    job_id: Annotated[int, typer.Argument()],
    follow: Annotated[bool, typer.Option("-f", "--follow", help="Keep printing until the job ends.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print chunks as JSON lines.")] = False,
) -> None:
    """Print a job's logs; with several ranks, each line starts with its rank."""
    with client(ctx) as fy:
        job = fy.job(job_id)
        printer = LogPrinter(prefix_ranks=job.spec.boards > 1)
        chunks = fy.follow_logs(job_id) if follow else _all_chunks(fy, job_id)
        try:
            for chunk in chunks:
                if as_json:
                    sys.stdout.write(json.dumps(chunk.model_dump(mode="json")) + "\n")
                    sys.stdout.flush()
                else:
                    printer.write(chunk)
        finally:
            printer.flush()


def _all_chunks(fy: Client, job_id: int) -> Iterator[LogChunk]:
    cursor = 0
    while True:
        page = fy.logs(job_id, after=cursor)
        yield from page.chunks
        if not page.chunks or page.cursor <= cursor:
            return
        cursor = page.cursor


@app.command("cancel")
def cancel(ctx: typer.Context, job_id: Annotated[int, typer.Argument()], as_json: JsonOpt = False) -> None:
    """Cancel a job (yours or your team's; admins and operators may cancel any)."""
    with client(ctx) as fy:
        job = fy.cancel(job_id)
    if as_json:
        emit_json(job)
    else:
        out().print(f"job {job.id}: ", styled(job.state), sep="")


@app.command("wait")
def wait(
    ctx: typer.Context,
    job_id: Annotated[int, typer.Argument()],
    timeout: TimeoutOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Wait for a job to finish; exit 0 only if it succeeded (1 if not, 124 on --timeout)."""
    with client(ctx) as fy:
        [job] = wait_jobs(fy, [job_id], timeout)
    if as_json:
        emit_json(job)
    else:
        extra = f" ({job.outcome}: {job.message})" if job.message else ""
        out().print(f"job {job.id}: ", styled(job.state), extra, sep="")
    raise typer.Exit(wait_exit_code([job]))


def print_results(res: ResultsOut) -> None:
    head = f"job {res.job_id}: {res.state}" + (f", {res.outcome}" if res.outcome else "")
    if res.attempt_id is not None:
        head += f" (attempt {res.attempt_id})"
    out().print(head, markup=False, highlight=False)
    if res.ranks:
        out().print(ranks_table(res.ranks))


@app.command("results")
def results(ctx: typer.Context, job_id: Annotated[int, typer.Argument()], as_json: JsonOpt = False) -> None:
    """The last attempt's ranks: exit codes, results and output blobs."""
    with client(ctx) as fy:
        res = fy.results(job_id)
    if as_json:
        emit_json(res)
    else:
        print_results(res)
