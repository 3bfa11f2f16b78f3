"""``fleetyard run``: a command job in one line, its logs on stdout, its result as the exit code."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fleetyard.cli._common import client, parse_labels
from fleetyard.cli._follow import LogPrinter, run_exit_code
from fleetyard.cli._output import emit_json, err, note
from fleetyard.cli._specs import build_run_spec
from fleetyard.errors import FleetyardError

EXIT_INTERRUPTED = 130  # what shells answer for a job stopped by Ctrl-C


def run(
    ctx: typer.Context,
    command: Annotated[
        list[str], typer.Argument(help="The command and its arguments; put them after `--`.", show_default=False)
    ],
    boards: Annotated[int, typer.Option("--boards", "-k", min=1, help="How many boards, all at once.")] = 1,
    gen: Annotated[
        list[str] | None, typer.Option("--gen", help="Board generation (repeat for any of several).")
    ] = None,
    label: Annotated[list[str] | None, typer.Option("--label", help="Board label KEY=VALUE to match.")] = None,
    same_host: Annotated[bool, typer.Option("--same-host", help="All boards on one host.")] = False,
    same_rack: Annotated[bool, typer.Option("--same-rack", help="All boards in one rack (board label rack=).")] = False,
    prefer: Annotated[
        bool, typer.Option("--prefer", help="--same-host/--same-rack is a preference, not a requirement.")
    ] = False,
    spread: Annotated[bool, typer.Option("--spread", help="Spread over hosts instead of packing them.")] = False,
    firmware: Annotated[
        str | None, typer.Option("--firmware", help="Firmware selector: ==V, >=V, <V, 'in V1,V2', …")
    ] = None,
    board: Annotated[list[str] | None, typer.Option("--board", help="Only this board (repeat: any of these).")] = None,
    exclude: Annotated[list[str] | None, typer.Option("--exclude", help="Never this board (repeat).")] = None,
    priority_class: Annotated[
        str | None, typer.Option("--class", help="Priority class, e.g. ci-gate, interactive, batch, scavenger.")
    ] = None,
    time_limit: Annotated[float | None, typer.Option("--time-limit", help="Seconds before it is stopped.")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Job name (default: the command).")] = None,
    priority: Annotated[int, typer.Option("--priority", help="Higher runs first (-1000…1000).")] = 0,
    team: Annotated[str | None, typer.Option("--team", help="Team to run as (default: your token's).")] = None,
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Print the job id and return at once.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (with --detach, or for an artifact).")] = False,
    local: Annotated[
        bool, typer.Option("--local", help="Artifact: run it here, on this machine's CPU, with no server.")
    ] = False,
    inputs: Annotated[
        Path | None, typer.Option("--inputs", exists=True, dir_okay=False, help="Artifact: inputs (.npz/.npy/.json).")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Artifact: seed of generated inputs.")] = 0,
    dim: Annotated[list[str] | None, typer.Option("--dim", help="Artifact: symbolic dim SYMBOL=INT.")] = None,
    value_range: Annotated[
        list[str] | None, typer.Option("--range", help="Artifact: generated values of INPUT in LO:HI.")
    ] = None,
    repeat: Annotated[int, typer.Option("--repeat", min=1, help="Artifact: runs of the same inputs.")] = 1,
    function: Annotated[str | None, typer.Option("--function", help="Artifact (IREE): the function.")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Artifact: where outputs are written.")] = None,
    junit: Annotated[
        Path | None, typer.Option("--junit", help="Artifact: write a JUnit XML, one testcase per board.")
    ] = None,
) -> None:
    """Run a command, or a compiler artifact, on K boards, and exit with its result.

    Examples:
      fleetyard run --boards 4 --gen sim-g2 --same-host -- sh -c 'echo $FLEETYARD_RANK'
      fleetyard run --boards 32 --same-rack --firmware '>=2.1' --class ci-gate -- ./gate.sh
      fleetyard run model.onnx --local --dim N=8        # here, on this machine's CPU
      fleetyard run model.onnx --boards 2 --gen sim-g1 --out outs/

    An artifact is one argument: an .onnx or .vmfb file (pushed first) or a pushed artifact's
    sha256. Exit code: 0 on success, a failed rank's own exit code, else 1. Ctrl-C cancels the job.
    """
    from fleetyard.cli.run_artifact import is_artifact_ref, parse_dims, parse_ranges, run_artifact

    if same_host and same_rack:
        raise typer.BadParameter("give --same-host or --same-rack, not both", param_hint="'--same-rack'")
    placement = {
        "placement": "same-host" if same_host else "same-rack" if same_rack else "any",
        "placement_required": not prefer,
        "packing": "spread" if spread else "pack",
        "board_ids": board or [],
        "exclude_boards": exclude or [],
        **({"firmware": firmware} if firmware else {}),
        **({"priority_class": priority_class} if priority_class else {}),
    }
    if local or is_artifact_ref(command):
        if not is_artifact_ref(command):
            raise typer.BadParameter("--local runs an artifact: give one .onnx or .vmfb file", param_hint="'--local'")
        job_fields = {
            "boards": boards,
            "generations": gen or [],
            "labels": parse_labels(label),
            **placement,
            "priority": priority,
            **({"name": name} if name else {}),
            **({"team": team} if team else {}),
            **({"time_limit_s": time_limit} if time_limit else {}),
        }
        params = {
            "seed": seed,
            "dims": parse_dims(dim or []),
            "ranges": parse_ranges(value_range or []),
            "repeat": repeat,
            "function": function,
        }
        code = run_artifact(
            lambda: client(ctx),
            command[0],
            local=local,
            params=params,
            inputs=inputs,
            out_dir=out_dir,
            job=job_fields,
            as_json=as_json,
            junit=junit,
        )
        raise typer.Exit(code)
    if inputs or dim or value_range or out_dir or function or junit or repeat != 1:
        raise typer.BadParameter(
            "--inputs/--dim/--range/--repeat/--function/--out/--junit are for artifacts, not commands"
        )

    spec = build_run_spec(
        command,
        boards=boards,
        generations=gen or [],
        labels=parse_labels(label),
        time_limit_s=time_limit,
        name=name,
        priority=priority,
        team=team,
        extra=placement,
    )
    with client(ctx) as fy:
        job = fy.submit(spec)
        if detach:
            if as_json:
                emit_json(job)
            else:
                typer.echo(job.id)
            return
        note(f"job {job.id} submitted; logs follow (Ctrl-C cancels it)")
        printer = LogPrinter(prefix_ranks=spec.boards > 1)
        status = err().status(f"job {job.id}: waiting for {spec.boards} board(s)…")
        status.start()
        try:
            for chunk in fy.follow_logs(job.id):
                status.stop()
                printer.write(chunk)
        except KeyboardInterrupt:
            status.stop()
            printer.flush()
            try:
                fy.cancel(job.id)
                note(f"canceled job {job.id}", style="yellow")
            except FleetyardError as exc:
                note(f"could not cancel job {job.id}: {exc.message}", style="red")
            raise typer.Exit(EXIT_INTERRUPTED)
        finally:
            status.stop()
        printer.flush()
        final = fy.wait(job.id, timeout=30)
        results = fy.results(job.id) if final.state != "succeeded" else None
    code = run_exit_code(final, results)
    if code:
        why = f"{final.outcome}" + (f": {final.message}" if final.message else "")
        note(f"job {final.id} {final.state} ({why}); exit code {code}", style="red")
    raise typer.Exit(code)
