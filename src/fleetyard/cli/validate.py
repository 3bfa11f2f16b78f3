"""``fleetyard validate``: do an artifact's outputs match a reference, here or on K boards?

With ``--local`` it runs here (this machine's CPU, no server). Otherwise it pushes the artifact
(and the inputs and golden files), runs a ``validate`` job on K boards, each rank validating on
its own board, and prints one row per board: a board that disagrees with its peers stands out.

Exit code: 0 when every board passed; 1 on a numerical mismatch; 3 when the job failed otherwise
(a bad spec, a board fault); 124 when it did not finish in time.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from pydantic_core import to_jsonable_python
from rich.text import Text

from fleetyard.cli import _junit
from fleetyard.cli._common import client, parse_labels
from fleetyard.cli._follow import EXIT_WAIT_TIMED_OUT, FINISHED, wait_jobs
from fleetyard.cli._junit import Case
from fleetyard.cli._output import emit_json, note, out, styled, table
from fleetyard.errors import BadRequest
from fleetyard.policy.peers import PeerOutputs, compare_peers, peer_group

EXIT_MISMATCH = 1
EXIT_JOB_FAILED = 3


def validate(
    ctx: typer.Context,
    artifact: Annotated[
        str, typer.Argument(help="An .onnx/.vmfb/.pt2 file (pushed first), or a pushed artifact's sha256.")
    ],
    inputs: Annotated[
        Path | None,
        typer.Option(
            "--inputs",
            exists=True,
            dir_okay=False,
            help="Inputs (.npz/.npy/.json): one set, or several (an .npz keyed SET/name, a JSON list).",
        ),
    ] = None,
    expected: Annotated[
        Path | None,
        typer.Option("--expected", exists=True, dir_okay=False, help="Golden outputs (.npz), a set per input set."),
    ] = None,
    reference: Annotated[
        str | None, typer.Option("--reference", help="Reference runtime: onnxruntime (ONNX) or torch (.pt, .pt2).")
    ] = None,
    sets: Annotated[int, typer.Option("--sets", min=1, help="Generated input sets, seeds SEED…SEED+N-1.")] = 1,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the first generated input set.")] = 0,
    atol: Annotated[list[str] | None, typer.Option("--atol", help="1e-5 (every output) or NAME:1e-3; repeat.")] = None,
    rtol: Annotated[list[str] | None, typer.Option("--rtol", help="1e-5 (every output) or NAME:1e-3; repeat.")] = None,
    nan_equal: Annotated[bool, typer.Option("--nan-equal", help="NaN against NaN counts as equal.")] = False,
    layerwise: Annotated[bool, typer.Option("--layerwise", help="ONNX: find the first divergent node.")] = False,
    dim: Annotated[list[str] | None, typer.Option("--dim", help="Symbolic dimension NAME=VALUE; repeat.")] = None,
    function: Annotated[str | None, typer.Option("--function", help="IREE: the exported function.")] = None,
    local: Annotated[bool, typer.Option("--local", help="Run here, on this machine's CPU, with no server.")] = False,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="--local: folder for report.json and the arrays (default: a temp dir).")
    ] = None,
    boards: Annotated[int, typer.Option("--boards", "-k", min=1, help="How many boards, each validating.")] = 1,
    every_board: Annotated[
        bool,
        typer.Option(
            "--every-board", help="One job per board of --gen/--label (fleet-wide), each when its board is free."
        ),
    ] = False,
    gen: Annotated[list[str] | None, typer.Option("--gen", help="Board generation (repeat for several).")] = None,
    label: Annotated[list[str] | None, typer.Option("--label", help="Board label KEY=VALUE to match.")] = None,
    time_limit: Annotated[float | None, typer.Option("--time-limit", help="Seconds before it is stopped.")] = None,
    wait_timeout: Annotated[float | None, typer.Option("--timeout", help="Stop waiting after this many s.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    junit: Annotated[Path | None, typer.Option("--junit", help="Write a JUnit XML, one testcase per board.")] = None,
) -> None:
    """Compare an artifact's outputs with golden files or a reference runtime, on K boards or here.

    Example: fleetyard validate model.onnx --boards 8 --gen sim-g1 --sets 16 --atol 1e-4 --junit v.xml

    Fleet-wide: fleetyard validate model.onnx --every-board --gen sim-g2 (a row per board; PEERS
    marks a board whose outputs differ bit for bit from the most common ones).
    """
    dims = {k: _int(v, "--dim") for k, v in parse_labels(dim).items()}
    fields: dict[str, Any] = {
        "input_sets": sets,
        "seed": seed,
        "reference": reference,
        "atol": list(atol or []),
        "rtol": list(rtol or []),
        "nan_equal": nan_equal,
        "layerwise": layerwise,
        "dims": dims,
        "function": function,
    }
    if local and every_board:
        raise BadRequest("--local and --every-board exclude each other: validate here, or on the fleet's boards")
    if local:
        rows, job_info = _run_local(artifact, inputs, expected, fields, out_dir)
    else:
        rows, job_info = _run_remote(
            ctx, artifact, inputs, expected, fields, boards=boards, generations=gen or [], labels=parse_labels(label),
            time_limit_s=time_limit, wait_timeout=wait_timeout, every_board=every_board,
        )  # fmt: skip
    mark_peers(rows)
    code = exit_code(rows, job_info)
    if junit is not None:
        junit.write_text(junit_xml(rows, suite=f"fleetyard.validate {job_info.get('artifact', '')[:12]}"))
    if as_json:
        emit_json({**job_info, "passed": code == 0, "ranks": rows})
    else:
        _show(rows, job_info)
    raise typer.Exit(code)


def _int(text: str, flag: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise typer.BadParameter(f"expected an integer, got {text!r}", param_hint=f"'{flag}'") from None


def _params(fields: Mapping[str, Any]) -> Any:
    from fleetyard.workloads.validate import ValidateParams

    try:
        return ValidateParams.model_validate(dict(fields))
    except ValidationError as exc:
        e = exc.errors()[0]
        where = ".".join(map(str, e["loc"])) or "params"
        raise BadRequest(f"invalid validate options: {where}: {e['msg']}") from None


def _file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _run_local(
    artifact: str, inputs: Path | None, expected: Path | None, fields: dict[str, Any], out_dir: Path | None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from fleetyard.cli.repro import write_local_record
    from fleetyard.workloads.validate import validate_local

    path = Path(artifact)
    if not path.is_file():
        raise BadRequest(f"--local needs an artifact file; {artifact!r} is not one")
    sha = _file_sha(path)
    params = _params(
        {
            **fields,
            "artifact": sha,
            "inputs": _file_sha(inputs) if inputs else None,
            "expected": _file_sha(expected) if expected else None,
        }
    )
    folder = out_dir or Path(tempfile.mkdtemp(prefix="fleetyard-validate-"))
    res = validate_local(params, artifact_path=path, inputs_path=inputs, expected_path=expected, output_dir=folder)
    write_local_record(folder, "validate", params, [path, inputs, expected], res)
    row = rank_row(
        rank=0,
        board_id="local",
        generation="cpu",
        outcome=res.outcome.value,
        message=res.message,
        result=res.result,
        outputs={p.name: str(p) for p in sorted(folder.iterdir()) if p.is_file()},
    )
    note(f"report and arrays in {folder}")
    return [row], {"artifact": sha, "state": "succeeded" if row["passed"] else "failed", "local": True}


def _run_remote(
    ctx: typer.Context,
    artifact: str,
    inputs: Path | None,
    expected: Path | None,
    fields: dict[str, Any],
    *,
    boards: int,
    generations: Sequence[str],
    labels: Mapping[str, str],
    time_limit_s: float | None,
    wait_timeout: float | None,
    every_board: bool = False,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from fleetyard.client import parse_spec

    is_file = Path(artifact).is_file()
    with client(ctx) as fy:
        sha = fy.resolve_artifact(artifact).sha256
        params = _params(
            {
                **fields,
                "artifact": sha,
                "inputs": fy.upload_blob(inputs) if inputs else None,
                "expected": fy.upload_blob(expected) if expected else None,
            }
        )
        data: dict[str, Any] = {
            "kind": "validate",
            "name": f"validate {Path(artifact).name if is_file else sha[:12]}",
            "boards": boards,
            "generations": list(generations),
            "labels": dict(labels),
            "params": params.model_dump(mode="json"),
        }
        if time_limit_s is not None:
            data["time_limit_s"] = time_limit_s
        fleet = fy.boards()  # one read: the table's generations and, fleet-wide, the boards to run on
        gens = {b.id: b.generation for b in fleet}
        if every_board:
            targets = _every_board(fleet, generations, labels)
            specs = [
                parse_spec({**data, "boards": 1, "board_ids": [b], "name": f"{data['name']} on {b}"}, where="validate")
                for b in targets
            ]
            ids = fy.submit_many(specs)
            note(f"jobs {ids[0]}..{ids[-1]} submitted: validate on each of {len(ids)} board(s)")
        else:
            ids = [fy.submit(parse_spec(data, where="fleetyard validate")).id]
            note(f"job {ids[0]} submitted: validate on {boards} board(s)")
        finals = wait_jobs(fy, ids, wait_timeout)
        ranks = [(r, i) for i in ids for r in sorted(fy.results(i).ranks, key=lambda r: r.rank)]
    rows = [
        rank_row(
            rank=n if every_board else r.rank,
            board_id=r.board_id,
            generation=gens.get(r.board_id),
            outcome=r.outcome,
            message=r.message,
            result=r.result,
            outputs=r.outputs,
        )
        for n, (r, _job) in enumerate(ranks)
    ]
    for row, (_r, job_id) in zip(rows, ranks, strict=True):
        row["job_id"] = job_id
    unfinished = [f for f in finals if f.state not in FINISHED]
    failed = next((f for f in finals if f.state != "succeeded"), None)
    worst = unfinished[0] if unfinished else failed or finals[0]
    info = {"job_id": ids[0] if len(ids) == 1 else ids, "state": worst.state, "outcome": worst.outcome,
            "message": worst.message}  # fmt: skip
    return rows, {**info, "artifact": sha}


def _every_board(fleet: Sequence[Any], generations: Sequence[str], labels: Mapping[str, str]) -> list[str]:
    """The boards a fleet-wide validation runs on: every one of the generations (all when none)
    with the labels that is available or busy now; the others are named and left out."""
    boards = [
        b
        for b in fleet
        if (not generations or b.generation in generations) and all(b.labels.get(k) == v for k, v in labels.items())
    ]
    usable = sorted(b.id for b in boards if b.state in ("available", "allocated"))
    skipped = sorted(f"{b.id} ({b.state})" for b in boards if b.state not in ("available", "allocated"))
    if skipped:
        note(f"left out {len(skipped)} board(s) that cannot run work now: {', '.join(skipped)}", style="yellow")
    if not usable:
        which = ", ".join(generations) or "any generation"
        raise BadRequest(f"no board of {which} can run work now; see fleetyard boards ls")
    return usable


def mark_peers(rows: Sequence[dict[str, Any]]) -> None:
    """Set each row's ``peers``: "same" when its saved candidate outputs are bit for bit those of
    the majority of its peers (the boards of its kind that saved the same input set), "differs"
    when not, None when there is nothing to compare (one board, no outputs, no majority)."""
    verdicts = compare_peers(
        PeerOutputs(i, peer_group(r["result"]), r["outputs"].get("candidate.npz")) for i, r in enumerate(rows)
    )
    for i, r in enumerate(rows):
        v = verdicts.get(i)
        r["peers"] = None if v is None else "differs" if v.differs else "same"


def rank_row(
    *,
    rank: int,
    board_id: str,
    generation: str | None,
    outcome: str | None,
    message: str | None,
    result: Mapping[str, Any],
    outputs: Mapping[str, str],
) -> dict[str, Any]:
    """One board's verdict, flat, for the table, ``--json`` and ``--junit``."""
    return {
        "rank": rank,
        "board_id": board_id,
        "generation": generation,
        "outcome": outcome,
        "passed": outcome == "success" and bool(result.get("passed")),
        "mismatch": result.get("passed") is False,
        "sets": result.get("sets"),
        "failing_sets": result.get("failing_sets"),
        "worst_output": result.get("worst_output"),
        "worst_max_abs": result.get("worst_max_abs"),
        "message": message,
        "result": dict(result),
        "outputs": dict(outputs),
    }


def exit_code(rows: Sequence[Mapping[str, Any]], job: Mapping[str, Any]) -> int:
    """0 when every rank passed; 1 on a mismatch; 124 when unfinished; 3 on any other failure."""
    if rows and all(r["passed"] for r in rows):
        return 0
    if not job.get("local") and job.get("state") not in FINISHED:
        return EXIT_WAIT_TIMED_OUT
    if any(r["mismatch"] for r in rows):
        return EXIT_MISMATCH
    return EXIT_JOB_FAILED


def junit_xml(rows: Sequence[Mapping[str, Any]], *, suite: str = "fleetyard.validate") -> str:
    """A JUnit XML report: one testcase per rank (board); a mismatch is a failure, anything else
    that did not pass an error."""
    cases = [
        Case(
            classname=f"validate.{r.get('generation') or 'board'}",
            name=f"rank {r['rank']} board {r['board_id']}",
            status="passed" if r["passed"] else "failure" if r["mismatch"] else "error",
            message=str(r.get("message") or r.get("outcome") or "failed"),
            text=json.dumps(to_jsonable_python(r.get("result", {}).get("failing_report")), indent=1),
        )
        for r in rows
    ]
    return _junit.junit_xml(cases, suite=suite)


def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return format(x, ".3g")
    return str(x)


_PEERS = {"same": Text("same", style="green"), "differs": Text("DIFFERS", style="bold red")}


def _show(rows: Sequence[Mapping[str, Any]], job: Mapping[str, Any]) -> None:
    verdicts = [
        (
            r["rank"],
            r["board_id"],
            r.get("generation") or "",
            Text("PASS", style="bold green") if r["passed"] else Text("FAIL", style="bold red"),
            styled(r.get("outcome")),
            "" if r.get("sets") is None else f"{(r['sets'] or 0) - (r['failing_sets'] or 0)}/{r['sets']}",
            r.get("worst_output") or "",
            _fmt(r.get("worst_max_abs")),
            _PEERS.get(r.get("peers") or "", ""),
        )
        for r in rows
    ]
    columns = ["RANK", "BOARD", "GEN", "RESULT", "OUTCOME", "SETS PASSED", "WORST OUTPUT", "MAX ABS ERR", "PEERS"]
    out().print(table(columns, verdicts))
    bad = next((r for r in rows if not r["passed"]), None)
    if bad is not None:
        report = bad["result"].get("failing_report")
        if report:
            out().print(comparison_table(report, title=f"board {bad['board_id']}: first failing input set"))
        layer = bad["result"].get("layerwise")
        if layer and layer.get("summary"):
            out().print(f"layer-wise: {layer['summary']}", markup=False, highlight=False)
        note(f"board {bad['board_id']}: {bad.get('message') or bad.get('outcome')}", style="red")
    elif job.get("state") != "succeeded" and not rows:
        note(f"job {job.get('job_id')} {job.get('state')}: {job.get('message') or job.get('outcome')}", style="red")


def comparison_table(report: Mapping[str, Any], *, title: str | None = None) -> Any:
    """A Rich table from a ComparisonReport's JSON (``to_json``): one row per output."""
    rows: list[tuple[Any, ...]] = []
    for o in report.get("outputs", []):
        verdict = Text("PASS", style="bold green") if o["passed"] else Text("FAIL", style="bold red")
        if o.get("message"):
            rows.append((o["name"], verdict, Text(o["message"], style="red"), "", "", "", "", ""))
            continue
        failing = f"{o['failing']} ({o['failing_fraction']:.2%})" if o.get("size") else "0"
        cells = (_fmt(o.get(k)) for k in ("max_abs", "max_rel", "cosine", "snr_db"))
        rows.append((o["name"], verdict, *cells, failing, _fmt(o.get("min_passing_atol"))))
    for name in report.get("missing", []):
        rows.append((name, Text("MISSING", style="bold red"), "not in the actual outputs", "", "", "", "", ""))
    columns = ["OUTPUT", "RESULT", "MAX ABS ERR", "MAX REL ERR", "COSINE", "SNR DB", "FAILING", "MIN PASSING ATOL"]
    return table(columns, rows, title=title)
