"""``fleetyard run ARTIFACT``: run a compiler artifact here (``--local``) or on K boards.

A local run needs no server: the artifact runs on this machine's CPU through the same code as
on a board. On boards, a local file is pushed first (the server inspects and may refuse it), its
inputs file uploaded, and a ``run`` job submitted; each rank's outputs come back as blobs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from fleetyard.cli import _junit
from fleetyard.cli._junit import Case
from fleetyard.cli._output import emit_json, note, out, table
from fleetyard.errors import BadRequest

if TYPE_CHECKING:
    pass

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def is_artifact_ref(args: Sequence[str]) -> bool:
    """True when ``fleetyard run``'s arguments name an artifact rather than a command.

    One argument that is a sha256, or a file whose content is an ONNX model or an IREE module.
    """
    if len(args) != 1:
        return False
    ref = args[0]
    if _SHA256.match(ref):
        return True
    path = Path(ref)
    if not path.is_file():
        return False
    from fleetyard.runtimes import detect_format
    from fleetyard.runtimes.errors import UnknownFormat

    try:
        detect_format(path)
    except UnknownFormat:
        return False
    return True


def parse_dims(items: Sequence[str]) -> dict[str, int]:
    """``["N=8", …]`` → ``{"N": 8}``."""
    dims: dict[str, int] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip().isdigit():
            raise typer.BadParameter(f"expected SYMBOL=INT, got {item!r}", param_hint="'--dim'")
        dims[key.strip()] = int(value)
    return dims


def parse_ranges(items: Sequence[str]) -> dict[str, tuple[float, float]]:
    """``["x=-1:1", …]`` → ``{"x": (-1.0, 1.0)}``."""
    ranges: dict[str, tuple[float, float]] = {}
    for item in items:
        key, sep, span = item.partition("=")
        lo, colon, hi = span.partition(":")
        try:
            if not sep or not colon or not key.strip():
                raise ValueError
            ranges[key.strip()] = (float(lo), float(hi))
        except ValueError:
            raise typer.BadParameter(f"expected INPUT=LO:HI, got {item!r}", param_hint="'--range'") from None
    return ranges


def run_artifact(
    fy_factory: Any,
    ref: str,
    *,
    local: bool,
    params: Mapping[str, Any],
    inputs: Path | None,
    out_dir: Path | None,
    job: Mapping[str, Any],
    as_json: bool,
    junit: Path | None = None,
) -> int:
    """Run an artifact; return the exit code (0 when every rank succeeded)."""
    from fleetyard.workloads.run import RunParams

    if local:
        path = Path(ref)
        if not path.is_file():
            raise BadRequest(f"--local runs a local artifact file; {ref!r} is not one")
        from fleetyard.cli.repro import write_local_record
        from fleetyard.runtimes import file_sha256
        from fleetyard.workloads.run import run_local

        target = out_dir or Path("fleetyard-out") / path.stem
        sha = file_sha256(path)
        inputs_sha = file_sha256(inputs) if inputs else None
        run_params = RunParams(artifact=sha, inputs=inputs_sha, **params)
        result = run_local(run_params, artifact_path=path, inputs_path=inputs, output_dir=target)
        write_local_record(target, "run", run_params, [path, inputs], result)
        summary = {
            "outcome": str(result.outcome),
            "message": result.message,
            "output_dir": str(target),
            **result.result,
        }
        if junit is not None:
            junit.write_text(junit_xml([{**summary, "rank": 0, "board": "local"}], suite=f"fleetyard.run {path.name}"))
        if as_json:
            emit_json(summary)
        else:
            _print_rank("local", summary)
            note(f"outputs in {target}")
        return 0 if result.outcome.value == "success" else 1

    with fy_factory() as fy:
        sha = fy.resolve_artifact(ref).sha256
        inputs_sha = fy.upload_blob(inputs) if inputs else None
        spec = {**job, "kind": "run", "params": {**params, "artifact": sha, "inputs": inputs_sha}}
        submitted = fy.submit(spec)
        note(f"job {submitted.id}: running artifact {sha[:12]} on {spec.get('boards', 1)} board(s)…")
        final = fy.wait(submitted.id)
        results = fy.results(submitted.id)
        rows = []
        for r in results.ranks:
            if out_dir and "outputs.npz" in r.outputs:
                dest = out_dir / f"rank{r.rank}-{r.board_id}"
                dest.mkdir(parents=True, exist_ok=True)
                fy.download_blob(r.outputs["outputs.npz"], dest / "outputs.npz")
            rows.append({**r.result, "rank": r.rank, "board": r.board_id, "outcome": r.outcome, "message": r.message})
    if junit is not None:
        junit.write_text(junit_xml(rows, suite=f"fleetyard.run {Path(ref).name if Path(ref).is_file() else ref[:12]}"))
    if as_json:
        emit_json({"job": final.id, "state": final.state, "ranks": rows})
    else:
        for row in rows:
            _print_rank(f"rank {row['rank']} on {row['board']}", row)
        if out_dir:
            note(f"outputs in {out_dir}")
    return 0 if final.state == "succeeded" else 1


def junit_xml(rows: Sequence[Mapping[str, Any]], *, suite: str) -> str:
    """One testcase per rank: success passes, the artifact's own failure (user_error) is a
    failure, anything else (a board fault, a config error) an error."""
    cases = [
        Case(
            classname="run",
            name=f"rank {r['rank']} board {r['board']}",
            status="passed" if r["outcome"] == "success" else "failure" if r["outcome"] == "user_error" else "error",
            message=str(r.get("message") or r.get("outcome")),
        )
        for r in rows
    ]
    return _junit.junit_xml(cases, suite=suite)


def _print_rank(title: str, r: Mapping[str, Any]) -> None:
    outcome = r.get("outcome")
    style = "green" if outcome == "success" else "red"
    out().print(
        f"[bold]{title}[/bold]: [{style}]{outcome}[/{style}]" + (f" ({r['message']})" if r.get("message") else "")
    )
    outputs = r.get("outputs") or {}
    if outputs:
        out().print(
            table(
                ["OUTPUT", "DTYPE", "SHAPE", "SHA256"],
                [
                    (n, o.get("dtype"), json.dumps(o.get("shape")), str(o.get("sha256", ""))[:12])
                    for n, o in outputs.items()
                ],
            )
        )
    if r.get("latency_ms_median") is not None:
        runtime = r.get("runtime") or {}
        out().print(
            f"latency median {r['latency_ms_median']:.3f} ms over {len(r.get('latency_ms') or [])} run(s); "
            f"runtime {runtime.get('runtime')} {runtime.get('runtime_version')} on {runtime.get('device')}"
        )
