"""``fleetyard up --demo``: submit the example jobs, wait for them, and show what they did."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from fleetyard.cli._follow import FINISHED
from fleetyard.cli._output import err, fmt_duration, out, styled, table
from fleetyard.cli._specs import read_specs
from fleetyard.client import Client, JobOut, JobSpec
from fleetyard.errors import BadRequest

# hello first, then the gang, then the rest by name.
_FIRST = ("hello.yaml", "gang.yaml")

# Used when the examples folder is not at hand (an installed package, another working directory).
_FALLBACK = [
    JobSpec.model_validate(
        {
            "name": "hello",
            "params": {"command": ["sh", "-c", 'echo "hello from $FLEETYARD_BOARD_ID ($FLEETYARD_DEVICE)"']},
        }
    )
]


def find_examples(start: Path | None = None) -> Path | None:
    """The examples folder: in the working directory, else next to the source tree."""
    here = Path(__file__).resolve()
    candidates = [(start or Path.cwd()) / "examples", here.parents[3] / "examples"]
    for candidate in candidates:
        if candidate.is_dir() and any(candidate.glob("*.yaml")):
            return candidate
    return None


def demo_specs(examples: Path | None) -> list[tuple[str, JobSpec]]:
    """(source, spec) of every example job, in demo order."""
    if examples is None:
        return [("built-in", spec) for spec in _FALLBACK]
    files = sorted(examples.glob("*.yaml"), key=lambda p: (_FIRST.index(p.name) if p.name in _FIRST else 99, p.name))
    found: list[tuple[str, JobSpec]] = []
    for path in files:
        specs, _ = read_specs(str(path))
        found += [(path.name, spec) for spec in specs]
    return found


@dataclass
class DemoJob:
    source: str
    spec: JobSpec
    job: JobOut | None = None
    rejected: str | None = None
    output: str = ""


def run_demo(client: Client, examples: Path | None, timeout_s: float = 300.0) -> bool:
    """Submit the examples, wait, print a table of results; True when every accepted job succeeded."""
    demo = [DemoJob(source, spec) for source, spec in demo_specs(examples)]
    where = str(examples) if examples else "built-in examples"
    err().print(f"\n[bold]Demo:[/] submitting {len(demo)} example jobs from {where}")
    for d in demo:
        try:
            d.job = client.submit(d.spec)
        except BadRequest as exc:
            # A spec this fleet can never run (say, a 4-board gang on 2-board hosts) is refused
            # at submit; say why instead of stopping the demo.
            d.rejected = exc.message
    _wait(client, [d for d in demo if d.job is not None], timeout_s)
    for d in demo:
        if d.job is not None:
            d.output = _first_lines(client, d.job.id)
    rows: list[tuple[object, ...]] = []
    for d in demo:
        if d.job is None:
            rows.append(("", d.source, _boards(d.spec), styled("rejected"), "", "", d.rejected or ""))
            continue
        ran = None
        if d.job.started_at is not None and d.job.finished_at is not None:
            ran = d.job.finished_at - d.job.started_at
        rows.append(
            (
                d.job.id,
                d.source,
                _boards(d.spec),
                styled(d.job.state),
                styled(d.job.outcome),
                fmt_duration(ran),
                d.output,
            )
        )
    out().print(table(("JOB", "EXAMPLE", "BOARDS", "STATE", "OUTCOME", "RAN", "OUTPUT"), rows, title="demo jobs"))
    return all(d.job is not None and d.job.state == "succeeded" for d in demo if d.job is not None)


def _boards(spec: JobSpec) -> str:
    gens = ",".join(spec.generations) or "any"
    where = " same host" if spec.placement == "same-host" else ""
    return f"{spec.boards} x {gens}{where}"


def _wait(client: Client, demo: list[DemoJob], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err(), transient=True) as progress:
        task = progress.add_task("demo jobs finished", total=len(demo))
        pending = {d.job.id: d for d in demo if d.job is not None}
        while pending and time.monotonic() < deadline:
            for job_id, d in list(pending.items()):
                d.job = client.wait(job_id, timeout=0)
                if d.job.state in FINISHED:
                    del pending[job_id]
                    progress.advance(task)
            if pending:
                time.sleep(0.3)


def _first_lines(client: Client, job_id: int, lines: int = 2) -> str:
    page = client.logs(job_id)
    text = "".join(c.data for c in sorted(page.chunks, key=lambda c: (c.attempt_id, c.rank, c.seq)))
    kept = [line for line in text.splitlines() if line.strip()]
    more = f" (+{len(kept) - lines} lines)" if len(kept) > lines else ""
    return " / ".join(kept[:lines]) + more
