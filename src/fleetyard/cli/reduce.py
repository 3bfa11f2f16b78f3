"""``fleetyard reduce MODEL``: the smallest ONNX subgraph that still fails, here on this machine.

The check is a tolerance (ONNX Runtime with full graph optimisation against the unoptimised
graph, judged by the comparison module's tolerances) or a command's exit code (``--check``):
e.g. a compiler that crashes, or a script comparing a device's output.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer

from fleetyard.cli._output import emit_json, note, out


def reduce(
    model: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="An ONNX model.")],
    inputs: Annotated[
        Path | None, typer.Option("--inputs", exists=True, dir_okay=False, help="Inputs (.npz/.npy/.json).")
    ] = None,
    check: Annotated[
        str | None,
        typer.Option(
            "--check",
            help="A command that fails (non-zero exit) on a bad subgraph; {model} and {inputs} are replaced "
            "by the paths (else the model's path is appended).",
        ),
    ] = None,
    timeout: Annotated[float | None, typer.Option("--timeout", help="Seconds before --check counts as hung.")] = None,
    atol: Annotated[list[str] | None, typer.Option("--atol", help="Absolute tolerance, or NAME:VALUE.")] = None,
    rtol: Annotated[list[str] | None, typer.Option("--rtol", help="Relative tolerance, or NAME:VALUE.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of generated inputs.")] = 0,
    dim: Annotated[list[str] | None, typer.Option("--dim", help="Symbolic dim SYMBOL=INT.")] = None,
    max_checks: Annotated[int, typer.Option("--max-checks", min=1, help="Most subgraphs to try.")] = 500,
    out_dir: Annotated[Path, typer.Option("--out", help="Where the reduced models are written.")] = Path(
        "fleetyard-reduce"
    ),
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Bisect an ONNX model to the smallest subgraph that still fails, keeping the largest that passes.

    Example: fleetyard reduce model.onnx --inputs in.npz --check 'my-compiler {model}'

    Writes smallest_failing.onnx and largest_passing.onnx (with the inputs each was fed) and
    summary.json to --out. Exit code 0 when a failing subgraph was found.
    """
    from fleetyard.cli.run_artifact import parse_dims
    from fleetyard.runtimes import inspect
    from fleetyard.validation import TolerancePolicy
    from fleetyard.validation.localize import policy_check
    from fleetyard.validation.reduce import command_check, tolerance_check
    from fleetyard.validation.reduce import reduce as reduce_model
    from fleetyard.workloads.tensors import generate_inputs, load_inputs

    signature = inspect(model).signature
    feeds = (
        load_inputs(inputs, signature) if inputs else generate_inputs(signature, seed=seed, dims=parse_dims(dim or []))
    )
    if check:
        fails = command_check(shlex.split(check), timeout=timeout)
    else:
        policy = TolerancePolicy.from_strings(atol or (), rtol or ())
        fails = tolerance_check(check=policy_check(policy))
    note(f"reducing {model} ({'--check ' + check if check else 'tolerance'})…")
    result = reduce_model(model, feeds, check_fails=fails, max_checks=max_checks)
    written = result.save(out_dir)
    if as_json:
        emit_json({**result.to_dict(), "written": {k: str(v) for k, v in written.items()}})
        return
    out().print(
        f"[bold]smallest failing[/bold]: {len(result.smallest_failing_nodes)} of {result.total_nodes} nodes: "
        + ", ".join(result.smallest_failing_nodes)
    )
    if result.largest_passing is not None:
        out().print(f"[bold]largest passing[/bold]: {len(result.largest_passing_nodes)} nodes")
    for line in result.notes:
        out().print(f"  {line}")
    note(f"{result.checks} subgraphs checked; written to {out_dir}")
