"""``fleetyard repro RESULT``: re-run a result exactly and say whether it reproduced.

RESULT is a job (``42``: its first failing rank, else rank 0), one rank of it (``42/3``), or a
folder that a ``--local`` run of ``run``, ``validate`` or ``bench`` wrote (it holds
``job.json``). The re-run takes the same kind and parameters: the same artifact, inputs or seeds,
tolerances and settings, all by sha256. A job's rank re-runs on the board it ran on, or on
``--board B``; ``--local`` re-runs it here, on this machine's CPU, from the same blobs.

The original and the re-run are compared (:mod:`fleetyard.workloads.reproduce`): outcome and
verdict, outputs bit for bit; what changed around them (runtime version, board, firmware) is
shown to explain a difference. Exit code: 0 reproduced; 1 not reproduced; 3 the re-run could not
run (a bad board, a spec the fleet refuses); 124 it did not finish in time.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from rich.text import Text

from fleetyard.cli._common import client
from fleetyard.cli._follow import EXIT_WAIT_TIMED_OUT, FINISHED, wait_jobs
from fleetyard.cli._output import emit_json, note, out, table
from fleetyard.errors import BadRequest, NotFound
from fleetyard.workloads.reproduce import Check, RankRecord, compare, reproduced

EXIT_NOT_REPRODUCED = 1
EXIT_RERUN_FAILED = 3
LOCAL_RECORD = "job.json"
ARTIFACT_KINDS = ("run", "validate", "bench")
_WORKLOAD_OUTCOMES = frozenset({"success", "user_error"})  # the workload ran and gave its verdict
_JOB_REF = re.compile(r"^(\d+)(?:/(\d+))?$")


def repro(
    ctx: typer.Context,
    result: Annotated[str, typer.Argument(help="JOB, JOB/RANK, or a folder a --local run wrote (job.json).")],
    board: Annotated[str | None, typer.Option("--board", help="Re-run on this board (default: the same one).")] = None,
    local: Annotated[bool, typer.Option("--local", help="Re-run here, on this machine's CPU.")] = False,
    wait_timeout: Annotated[float | None, typer.Option("--timeout", help="Stop waiting after this many s.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the comparison as JSON.")] = False,
) -> None:
    """Re-run a run/validate/bench (or command) result exactly and compare it with the original.

    Example: fleetyard repro 42/3 --board sim-h2-b0
    """
    if board is not None and local:
        raise BadRequest("--board and --local exclude each other: re-run on a board, or here")
    folder = Path(result)
    if _JOB_REF.match(result) and not folder.is_dir():
        original, info = _from_job(ctx, result, board, local, wait_timeout)
    elif folder.is_dir():
        original, info = _from_folder(ctx, folder, board, wait_timeout)
    else:
        raise BadRequest(f"{result!r} is neither a job (42, or 42/3 for rank 3) nor a folder with {LOCAL_RECORD}")
    again: RankRecord | None = info.pop("again")
    if again is None:
        code = EXIT_WAIT_TIMED_OUT if info.get("state") not in FINISHED else EXIT_RERUN_FAILED
        _emit(as_json, info, [], code)
        raise typer.Exit(code)
    checks = compare(original, again)
    if reproduced(checks):
        code = 0
    elif again.outcome not in _WORKLOAD_OUTCOMES and original.outcome in _WORKLOAD_OUTCOMES:
        code = EXIT_RERUN_FAILED  # the re-run never got to the workload's verdict
    else:
        code = EXIT_NOT_REPRODUCED
    _emit(as_json, info, checks, code)
    raise typer.Exit(code)


def _from_job(
    ctx: typer.Context, ref: str, board: str | None, local: bool, wait_timeout: float | None
) -> tuple[RankRecord, dict[str, Any]]:
    m = _JOB_REF.match(ref)
    assert m is not None  # Invariant: the caller matched it.
    job_id, rank_no = int(m.group(1)), None if m.group(2) is None else int(m.group(2))
    with client(ctx) as fy:
        job = fy.job(job_id)
        ranks = sorted(fy.results(job_id).ranks, key=lambda r: r.rank)
        if not ranks:
            raise BadRequest(f"job {job_id} has no finished rank to reproduce (it is {job.state})")
        failing = [r for r in ranks if r.outcome != "success"]
        wanted = [r for r in ranks if r.rank == rank_no] if rank_no is not None else (failing or ranks)[:1]
        if not wanted:
            raise NotFound(f"job {job_id} has no rank {rank_no}; its ranks are 0..{len(ranks) - 1}")
        rank = wanted[0]
        original = RankRecord(job.kind, rank.outcome, rank.exit_code, rank.result, rank.outputs)
        info: dict[str, Any] = {"original": f"job {job_id} rank {rank.rank} on board {rank.board_id}"}
        spec = job.spec
        if local:
            again = _run_here(spec.kind, spec.params, fetch=lambda sha, dest: fy.download_blob(sha, dest))
            return original, {**info, "again_where": "here (local cpu)", "again": again}
        if spec.kind not in ARTIFACT_KINDS and spec.boards > 1 and board is not None:
            raise BadRequest(f"job {job_id} is a {spec.boards}-board {spec.kind} job; --board re-runs one board")
        one_board = spec.kind in ARTIFACT_KINDS or spec.boards == 1
        update: dict[str, Any] = {
            "name": f"repro of job {job_id} rank {rank.rank}",
            # The board is named: the constraints that chose it the first time no longer apply.
            "generations": [],
            "labels": {},
        }
        if one_board:
            update.update(boards=1, board_ids=[board or rank.board_id])
        else:  # a gang command: the same boards, ranks in the same order
            update["board_ids"] = [r.board_id for r in ranks]
        again_spec = spec.model_copy(update=update)
        submitted = fy.submit(again_spec)
        note(f"job {submitted.id} submitted: {spec.kind} again on {', '.join(again_spec.board_ids)}")
        (final,) = wait_jobs(fy, [submitted.id], wait_timeout)
        info.update(again_job=submitted.id, state=final.state, message=final.message)
        new_ranks = fy.results(submitted.id).ranks if final.state in FINISHED else []
        new = next((r for r in new_ranks if r.rank == (0 if one_board else rank.rank)), None)
        if new is None:
            return original, {**info, "again": None}
        info["again_where"] = f"job {submitted.id} rank {new.rank} on board {new.board_id}"
        return original, {**info, "again": RankRecord(spec.kind, new.outcome, new.exit_code, new.result, new.outputs)}


def _from_folder(
    ctx: typer.Context, folder: Path, board: str | None, wait_timeout: float | None
) -> tuple[RankRecord, dict[str, Any]]:
    record_path = folder / LOCAL_RECORD
    try:
        record = json.loads(record_path.read_text())
        kind, params, files = record["kind"], record["params"], record["files"]
    except FileNotFoundError:
        raise BadRequest(f"{folder} has no {LOCAL_RECORD}; pass a folder a --local run wrote, or a job") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise BadRequest(f"{record_path} is not a local run record: {exc}") from None
    original = RankRecord(kind, record.get("outcome"), record.get("exit_code"), record.get("result") or {},
                          record.get("outputs") or {})  # fmt: skip
    info: dict[str, Any] = {"original": f"local {kind} in {folder}"}

    def fetch(sha: str, dest: Path) -> Path:
        src = Path(files.get(sha, ""))
        if not src.is_file():
            raise BadRequest(f"the file of blob {sha} ({files.get(sha)!r}) is gone; the run cannot be repeated")
        from fleetyard.runtimes import file_sha256

        if file_sha256(src) != sha:
            raise BadRequest(f"{src} changed since the run (sha256 differs); the run cannot be repeated exactly")
        return src

    if board is None:
        return original, {**info, "again_where": "here (local cpu)", "again": _run_here(kind, params, fetch=fetch)}
    with client(ctx) as fy:
        for sha in _blobs(kind, params):
            path = fetch(sha, folder)
            if sha == params.get("artifact"):
                fy.push_artifact(path)
            else:
                fy.upload_blob(path)
        submitted = fy.submit({"kind": kind, "name": f"repro of {folder}", "board_ids": [board], "params": params})
        note(f"job {submitted.id} submitted: {kind} again on {board}")
        (final,) = wait_jobs(fy, [submitted.id], wait_timeout)
        info.update(again_job=submitted.id, state=final.state, message=final.message)
        ranks = fy.results(submitted.id).ranks if final.state in FINISHED else []
    if not ranks:
        return original, {**info, "again": None}
    r = ranks[0]
    info["again_where"] = f"job {submitted.id} on board {r.board_id}"
    return original, {**info, "again": RankRecord(kind, r.outcome, r.exit_code, r.result, r.outputs)}


def _blobs(kind: str, params: Mapping[str, Any]) -> list[str]:
    from fleetyard.workloads.base import required_blobs

    return required_blobs(kind, dict(params))


def _run_here(kind: str, params: Mapping[str, Any], *, fetch: Callable[[str, Path], Path]) -> RankRecord:
    """Run ``kind`` with ``params`` in this process, on this machine's CPU, from the same blobs."""
    if kind not in ARTIFACT_KINDS:
        raise BadRequest(f"--local re-runs {', '.join(ARTIFACT_KINDS)} results; this is a {kind} job")
    from fleetyard.workloads.base import validate_params

    parsed = validate_params(kind, dict(params))
    tmp = Path(tempfile.mkdtemp(prefix="fleetyard-repro-"))
    paths = {sha: fetch(sha, tmp / sha) for sha in _blobs(kind, params)}
    result = run_local_kind(kind, parsed, paths, tmp / "out")
    note(f"re-run's files in {tmp / 'out'}")
    return RankRecord(kind, result["outcome"], result["exit_code"], result["result"], result["outputs"])


def run_local_kind(kind: str, params: BaseModel, paths: Mapping[str, Path], output_dir: Path) -> dict[str, Any]:
    """Run an artifact kind here with its blobs at ``paths`` (sha256 -> file); the local record."""
    from fleetyard.runtimes import file_sha256

    p: Any = params
    blob = paths.get
    if kind == "run":
        from fleetyard.workloads.run import run_local

        res = run_local(p, artifact_path=paths[p.artifact], inputs_path=p.inputs and blob(p.inputs),
                        output_dir=output_dir)  # fmt: skip
    elif kind == "validate":
        from fleetyard.workloads.validate import validate_local

        res = validate_local(p, artifact_path=paths[p.artifact], inputs_path=p.inputs and blob(p.inputs),
                             expected_path=p.expected and blob(p.expected), output_dir=output_dir)  # fmt: skip
    elif kind == "bench":
        from fleetyard.workloads.bench import bench_local

        res = bench_local(p, artifact_path=paths[p.artifact], inputs_path=p.inputs and blob(p.inputs),
                          output_dir=output_dir)  # fmt: skip
    else:
        raise BadRequest(f"no local runner for kind {kind!r}; local runs are for {', '.join(ARTIFACT_KINDS)}")
    outputs = {f.name: file_sha256(f) for f in sorted(output_dir.iterdir()) if f.is_file()}
    return {
        "kind": kind,
        "params": params.model_dump(mode="json"),
        "outcome": res.outcome.value,
        "exit_code": res.exit_code,
        "message": res.message,
        "result": res.result,
        "outputs": outputs,
    }


def write_local_record(folder: Path, kind: str, params: BaseModel, files: Sequence[Path | None], res: Any) -> Path:
    """Write ``job.json`` into a ``--local`` run's folder, so that ``fleetyard repro FOLDER``
    can repeat it: the kind, the params, where the files its blobs came from are (by sha256),
    the result and the outputs."""
    from fleetyard.runtimes import file_sha256

    outputs = {f.name: file_sha256(f) for f in sorted(folder.iterdir()) if f.is_file() and f.name != LOCAL_RECORD}
    record = {
        "kind": kind,
        "params": params.model_dump(mode="json"),
        "files": {file_sha256(p): str(p.resolve()) for p in files if p is not None},
        "outcome": res.outcome.value,
        "exit_code": res.exit_code,
        "message": res.message,
        "result": res.result,
        "outputs": outputs,
    }
    path = folder / LOCAL_RECORD
    path.write_text(json.dumps(record, indent=1, default=str))
    return path


def _show_value(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v):
        return v[:16]
    if isinstance(v, float):
        return format(v, ".4g")
    if isinstance(v, list | tuple):
        return ", ".join(map(str, v))
    return str(v)


def _emit(as_json: bool, info: Mapping[str, Any], checks: list[Check], code: int) -> None:
    verdict = {0: "reproduced", EXIT_NOT_REPRODUCED: "not reproduced"}.get(code, "re-run failed")
    if code == EXIT_WAIT_TIMED_OUT:
        verdict = "re-run did not finish in time"
    if as_json:
        emit_json({**info, "verdict": verdict, "reproduced": code == 0, "checks": [c.to_dict() for c in checks]})
        return
    rows = []
    for c in checks:
        mark = Text("same", style="green") if c.same else Text("DIFFERS", style="bold red" if c.decisive else "yellow")
        rows.append((c.name, _show_value(c.original), _show_value(c.again), mark, c.note))
    if rows:
        title = f"{info.get('original')}  vs  {info.get('again_where', 'the re-run')}"
        out().print(table(["CHECK", "ORIGINAL", "AGAIN", "", "NOTE"], rows, title=title))
    style = "bold green" if code == 0 else "bold red"
    message = f" ({info['message']})" if code not in (0, EXIT_NOT_REPRODUCED) and info.get("message") else ""
    out().print(Text(verdict + message, style=style))
