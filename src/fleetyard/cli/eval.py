"""``fleetyard eval show|compare``: an ``eval`` job's metrics, and whether two evals differ.

``show JOB`` combines the job's ranks (:func:`fleetyard.evaluation.aggregate`) into its metrics.
``compare JOB_A JOB_B`` downloads both jobs' per-sample records (``samples.jsonl`` of every rank)
and pairs them by sample index (:func:`fleetyard.evaluation.compare_records`): top-1 by McNemar's
exact test, MSE by a paired bootstrap interval; each says whether B differs from A at 0.05.
The jobs must have run the same data set (same inputs sample by sample). Exit code 0; 3 when a
job is not a finished eval or the two did not run the same data set.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from fleetyard.cli._common import JsonOpt, client
from fleetyard.cli._output import emit_json, key_values, note, out

app = typer.Typer(help="Evaluations (eval jobs): metrics, and comparing two.", no_args_is_help=True)

EXIT_NOT_COMPARABLE = 3


def _ranks(fy: Any, job_id: int) -> list[Any]:
    res = fy.results(job_id)
    ranks = [r for r in res.ranks if r.outcome == "success" and "tally" in (r.result or {})]
    if not ranks or len(ranks) != len(res.ranks):
        note(f"job {job_id} is not a finished eval ({res.state}, {len(ranks)} of {len(res.ranks)} ranks done)")
        raise typer.Exit(EXIT_NOT_COMPARABLE)
    return ranks


def job_metrics(fy: Any, job_id: int) -> dict[str, Any]:
    """An eval job's aggregated metrics (its ranks combined)."""
    from fleetyard.evaluation import aggregate  # numpy and SciPy: imported by the commands that use them

    try:
        metrics = aggregate([r.result for r in _ranks(fy, job_id)])
    except ValueError as exc:
        note(f"job {job_id}: {exc}")
        raise typer.Exit(EXIT_NOT_COMPARABLE) from None
    return {"job_id": job_id, **metrics}


def job_records(fy: Any, job_id: int) -> list[dict[str, Any]]:
    """Every per-sample record of an eval job, from its ranks' ``samples.jsonl`` outputs."""
    from fleetyard.workloads.eval import SAMPLES_FILE

    records: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="fleetyard-eval-") as tmp:
        for r in _ranks(fy, job_id):
            sha = r.outputs.get(SAMPLES_FILE)
            if sha is None:
                note(f"job {job_id} rank {r.rank} uploaded no {SAMPLES_FILE}")
                raise typer.Exit(EXIT_NOT_COMPARABLE)
            path = fy.download_blob(sha, Path(tmp) / f"{r.rank}.jsonl")
            records.extend(json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return records


def _fmt(x: Any, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}f}" if isinstance(x, float) else str(x)


@app.command("show")
def show(
    ctx: typer.Context, job_id: Annotated[int, typer.Argument(help="An eval job.")], as_json: JsonOpt = False
) -> None:
    """The job's metrics over all its boards: samples, top-1, top-5, MSE, user metrics."""
    with client(ctx) as fy:
        m = job_metrics(fy, job_id)
    if as_json:
        emit_json(m)
        return
    rows: list[tuple[str, Any]] = [
        ("samples", m["samples"]),
        ("top1", _fmt(m["top1"])),
        ("top5", _fmt(m["top5"])),
        ("mse", _fmt(m["mse"], 6)),
        *((f"user {k}", _fmt(v)) for k, v in sorted(m["user"].items())),
        ("boards", m["world_size"]),
        ("artifact", m["artifact"]),
        ("data set", f"{m['dataset'].get('kind')} {m['dataset'].get('sha256')}"),
    ]
    out().print(key_values(rows, title=f"eval job {job_id}"))


def verdict(significant: bool) -> str:
    return "significant at 0.05" if significant else "not significant at 0.05"


@app.command("compare")
def compare(
    ctx: typer.Context,
    job_a: Annotated[int, typer.Argument(help="The baseline eval job.")],
    job_b: Annotated[int, typer.Argument(help="The eval job compared with it.")],
    as_json: JsonOpt = False,
) -> None:
    """B against A on the same data set: top-1 delta (McNemar exact), MSE delta (paired bootstrap)."""
    from fleetyard.evaluation import compare_records

    with client(ctx) as fy:
        ma, mb = job_metrics(fy, job_a), job_metrics(fy, job_b)
        if ma["dataset"]["sha256"] != mb["dataset"]["sha256"]:
            note(f"jobs {job_a} and {job_b} evaluated different data sets")
            raise typer.Exit(EXIT_NOT_COMPARABLE)
        try:
            cmp = compare_records(job_records(fy, job_a), job_records(fy, job_b))
        except ValueError as exc:
            note(str(exc))
            raise typer.Exit(EXIT_NOT_COMPARABLE) from None
    cmp = {"a": {"job_id": job_a, "artifact": ma["artifact"]}, "b": {"job_id": job_b, "artifact": mb["artifact"]},
           "dataset": ma["dataset"], **cmp}  # fmt: skip
    if as_json:
        emit_json(cmp)
        return
    rows: list[tuple[str, Any]] = [("paired samples", cmp["paired"])]
    t = cmp["top1"]
    if t is not None:
        rows += [
            ("top1", f"A {_fmt(t['a'])}  B {_fmt(t['b'])}  delta {t['delta']:+.4f}"),
            ("  McNemar", f"A only {t['a_only']}, B only {t['b_only']}, p = {t['p_value']:.4g}: "
                          f"{verdict(t['significant'])}"),
        ]  # fmt: skip
    m = cmp["mse"]
    if m is not None:
        lo, hi = m["ci95"]
        rows += [
            ("mse", f"A {_fmt(m['a'], 6)}  B {_fmt(m['b'], 6)}  delta {m['delta']:+.6g}"),
            ("  bootstrap", f"95% CI of the per-sample delta [{lo:.4g}, {hi:.4g}]: {verdict(m['significant'])}"),
        ]
    if cmp["labels_differ"]:
        rows.append(
            ("warning", f"labels differ on {cmp['labels_differ']} samples (generated data labelled per artifact)")
        )
    out().print(key_values(rows, title=f"eval {job_b} vs {job_a}"))
