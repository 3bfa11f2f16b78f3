"""``fleetyard bench``: an artifact's latency or throughput, on K boards or on this machine.

Each rank runs the ``bench`` kind (:mod:`fleetyard.workloads.bench`) and reports a LoadGen-style
result with a VALID/INVALID verdict. The command prints one row per board (or ``--json``) and
exits 1 when any rank failed or was INVALID, so that CI can gate on it.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from pydantic import ValidationError
from rich.text import Text

from fleetyard.cli import _junit
from fleetyard.cli._common import client, parse_labels
from fleetyard.cli._junit import Case
from fleetyard.cli._output import emit_json, err, note, out, styled, table
from fleetyard.errors import BadRequest, FleetyardError

EXIT_INTERRUPTED = 130
_FLAGS = {
    "scenario": "--scenario",
    "warmup_s": "--warmup",
    "min_duration_s": "--min-duration",
    "min_queries": "--min-queries",
    "max_duration_s": "--max-duration",
    "target_percentile": "--percentile",
    "batch": "--batch",
    "dims": "--dim",
}


def _dims(items: list[str] | None) -> dict[str, int]:
    dims: dict[str, int] = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip().isdigit():
            raise typer.BadParameter(f"expected NAME=N, got {item!r}", param_hint="'--dim'")
        dims[name.strip()] = int(value)
    return dims


def _fmt(value: Any, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _row(board: str, firmware: str, result: dict[str, Any], failure: str | None) -> tuple[Any, ...]:
    if failure is not None:
        return (board, firmware, "", "", "", "", "", "", "", styled("failed"), failure)
    lat = result.get("latency_ms") or {}
    verdict = result.get("verdict", "INVALID")
    return (
        board,
        firmware,
        result.get("scenario", ""),
        result.get("queries", ""),
        _fmt(lat.get("p50")),
        _fmt(lat.get("p90")),
        _fmt(lat.get("p99")),
        _fmt(result.get("queries_per_s"), 1),
        _fmt(result.get("samples_per_s"), 1),
        Text(verdict, style="green" if verdict == "VALID" else "red"),
        "; ".join(result.get("reasons") or []),
    )


COLUMNS = [
    "BOARD",
    "FIRMWARE",
    "SCENARIO",
    "QUERIES",
    "P50 MS",
    "P90 MS",
    "P99 MS",
    "QPS",
    "SAMPLES/S",
    "VERDICT",
    "WHY",
]


def bench(
    ctx: typer.Context,
    artifact: Annotated[str, typer.Argument(help="A local .onnx/.vmfb/.pt2 file, or the sha256 of a pushed artifact.")],
    inputs: Annotated[
        Path | None,
        typer.Option("--inputs", exists=True, dir_okay=False, help="Inputs (.npz/.npy/JSON); default: generated."),
    ] = None,
    scenario: Annotated[
        str, typer.Option("--scenario", help="single-stream (latency percentiles) or offline (samples/s).")
    ] = "single-stream",
    warmup: Annotated[float, typer.Option("--warmup", min=0, help="Seconds of unmeasured warm-up.")] = 1.0,
    min_duration: Annotated[
        float, typer.Option("--min-duration", min=0, help="Measure at least this long (s).")
    ] = 10.0,
    min_queries: Annotated[int, typer.Option("--min-queries", min=1, help="Measure at least this many queries.")] = 100,
    max_duration: Annotated[
        float, typer.Option("--max-duration", min=0.001, help="Stop measuring here, even if short (INVALID then).")
    ] = 600.0,
    percentile: Annotated[
        float, typer.Option("--percentile", help="single-stream: the percentile claimed (50, 90, 99, 99.9).")
    ] = 90.0,
    batch: Annotated[int | None, typer.Option("--batch", min=1, help="offline: samples per query.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of generated inputs.")] = 0,
    dim: Annotated[list[str] | None, typer.Option("--dim", help="Symbolic dimension NAME=N (repeatable).")] = None,
    function: Annotated[str | None, typer.Option("--function", help="IREE: the exported function.")] = None,
    local: Annotated[bool, typer.Option("--local", help="Run here on this machine's CPU; no server.")] = False,
    output: Annotated[
        Path | None, typer.Option("--output", help="--local: folder for bench.json (default: a temp folder).")
    ] = None,
    boards: Annotated[int, typer.Option("--boards", "-k", min=1, help="How many boards, all at once.")] = 1,
    gen: Annotated[
        list[str] | None, typer.Option("--gen", help="Board generation (repeat for any of several).")
    ] = None,
    label: Annotated[list[str] | None, typer.Option("--label", help="Board label KEY=VALUE to match.")] = None,
    time_limit: Annotated[float | None, typer.Option("--time-limit", help="Seconds before the job is stopped.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    junit: Annotated[Path | None, typer.Option("--junit", help="Write a JUnit XML, one testcase per board.")] = None,
) -> None:
    """Benchmark an artifact LoadGen-style: warm up, then run until both minimums are met.

    Example: fleetyard bench model.onnx --boards 4 --gen sim-g2 --scenario offline --batch 32

    Exit code: 0 when every rank succeeded with a VALID result, else 1.
    """
    from fleetyard.workloads.bench import BenchParams, bench_local

    raw: dict[str, Any] = {
        "artifact": "0" * 64,  # replaced below, once the artifact is known
        "scenario": scenario,
        "warmup_s": warmup,
        "min_duration_s": min_duration,
        "min_queries": min_queries,
        "max_duration_s": max_duration,
        "target_percentile": percentile,
        "batch": batch,
        "seed": seed,
        "dims": _dims(dim),
        "function": function,
    }
    try:
        BenchParams.model_validate(raw)  # a bad flag fails here, before anything is pushed
    except ValidationError as exc:
        first = exc.errors()[0]
        flag = _FLAGS.get(str(first["loc"][0]), str(first["loc"][0])) if first["loc"] else ""
        raise BadRequest(f"{flag}: {first['msg']}") from None
    path = Path(artifact)
    if local:
        if not path.is_file():
            raise BadRequest(f"--local needs an artifact file; {artifact!r} is not one")
        out_dir = output or Path(tempfile.mkdtemp(prefix="fleetyard-bench-"))
        from fleetyard.cli.repro import write_local_record

        inputs_sha = _file_sha256(inputs) if inputs else None
        params = BenchParams.model_validate({**raw, "artifact": _file_sha256(path), "inputs": inputs_sha})
        res = bench_local(params, artifact_path=path, inputs_path=inputs, output_dir=out_dir)
        write_local_record(out_dir, "bench", params, [path, inputs], res)
        ranks = [{"board_id": "local", "outcome": res.outcome.value, "message": res.message, "result": res.result}]
        note(f"bench.json in {out_dir}")
    else:
        ranks = _remote(ctx, raw, path, inputs, boards, gen or [], parse_labels(label), time_limit)
    if junit is not None:
        junit.write_text(junit_xml(ranks, suite=f"fleetyard.bench {path.name}"))
    failed = _report(ranks, as_json)
    raise typer.Exit(1 if failed else 0)


def _file_sha256(path: Path) -> str:
    from fleetyard.runtimes import file_sha256

    return file_sha256(path)


def _remote(
    ctx: typer.Context,
    raw: dict[str, Any],
    path: Path,
    inputs: Path | None,
    boards: int,
    generations: list[str],
    labels: dict[str, str],
    time_limit: float | None,
) -> list[dict[str, Any]]:
    with client(ctx) as fy:
        sha = fy.resolve_artifact(path).sha256
        params = {**raw, "artifact": sha}
        if inputs is not None:
            params["inputs"] = fy.upload_blob(inputs)
        spec: dict[str, Any] = {
            "kind": "bench",
            "name": f"bench {path.name if path.is_file() else sha[:12]}",
            "boards": boards,
            "generations": generations,
            "labels": labels,
            "params": params,
        }
        if time_limit is not None:
            spec["time_limit_s"] = time_limit
        job = fy.submit(spec)
        note(f"job {job.id} submitted (Ctrl-C cancels it)")
        status = err().status(f"job {job.id}: benchmarking on {boards} board(s)…")
        status.start()
        try:
            fy.wait(job.id)
        except KeyboardInterrupt:
            status.stop()
            try:
                fy.cancel(job.id)
                note(f"canceled job {job.id}", style="yellow")
            except FleetyardError as exc:
                note(f"could not cancel job {job.id}: {exc.message}", style="red")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        finally:
            status.stop()
        results = fy.results(job.id)
    ranks = [
        {"board_id": r.board_id, "outcome": r.outcome, "message": r.message, "result": r.result}
        for r in sorted(results.ranks, key=lambda r: r.rank)
    ]
    if not ranks:
        ranks = [{"board_id": "", "outcome": results.outcome or results.state, "message": "no ranks ran", "result": {}}]
    return ranks


def _failure(rank: Mapping[str, Any]) -> str | None:
    """Why a rank did not give a result (None when it did, VALID or not)."""
    if rank["outcome"] == "success":
        return None
    return f"{rank['outcome']}" + (f": {rank['message']}" if rank["message"] else "")


def junit_xml(ranks: Sequence[Mapping[str, Any]], *, suite: str) -> str:
    """One testcase per board: VALID passes, INVALID is a failure (with its reasons), a rank that
    gave no result an error."""
    cases = []
    for i, r in enumerate(ranks):
        result = r["result"] or {}
        failure = _failure(r)
        verdict = result.get("verdict")
        status: Literal["passed", "failure", "error"] = (
            "error" if failure is not None else "passed" if verdict == "VALID" else "failure"
        )
        message = failure or f"{verdict}: {'; '.join(result.get('reasons') or [])}"
        cases.append(
            Case(
                classname=f"bench.{result.get('scenario') or 'unknown'}",
                name=f"rank {i} board {r['board_id']}",
                status=status,
                message=message,
                text=json.dumps({k: result.get(k) for k in ("latency_ms", "samples_per_s", "queries", "reasons")}),
                time_s=result.get("duration_s"),
            )
        )
    return _junit.junit_xml(cases, suite=suite)


def _report(ranks: list[dict[str, Any]], as_json: bool) -> bool:
    """Print the ranks; true when any failed or was INVALID."""
    failed = False
    rows = []
    for r in ranks:
        result = r["result"] or {}
        failure = _failure(r)
        if failure is not None or result.get("verdict") != "VALID":
            failed = True
        firmware = (result.get("board") or {}).get("firmware") or ""
        rows.append(_row(r["board_id"], firmware, result, failure))
    if as_json:
        emit_json(ranks)
    else:
        out().print(table(COLUMNS, rows))
    return failed
