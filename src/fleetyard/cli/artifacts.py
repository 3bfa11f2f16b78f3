"""``fleetyard artifacts …``: push compiler artifacts (ONNX, IREE .vmfb), list and inspect them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from fleetyard.cli._common import JsonOpt, client
from fleetyard.cli._output import emit_json, fmt_time, out, table

app = typer.Typer(help="Compiler artifacts: push, list, inspect.", no_args_is_help=True)


def _signature_rows(info: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    sig = info.get("signature") or {}
    rows = []
    for kind in ("inputs", "outputs"):
        for t in sig.get(kind, []):
            shape = t.get("shape")
            dims = "?" if shape is None else "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"
            rows.append((kind[:-1], t.get("name", ""), str(t.get("dtype", "")), dims))
    return rows


def _show(info: dict[str, Any], title: str) -> None:
    facts = [
        f"format {info.get('format')}  runtime {info.get('runtime')}  {info.get('size')} bytes",
        f"sha256 {info.get('sha256')}",
    ]
    if info.get("functions"):
        facts.append(f"functions {', '.join(info['functions'])} (default: {info.get('function') or 'none'})")
    if info.get("targets"):
        facts.append(f"targets {', '.join(info['targets'])}")
    out().print(f"[bold]{title}[/bold]\n" + "\n".join(facts))
    out().print(table(["", "NAME", "DTYPE", "SHAPE"], _signature_rows(info)))


@app.command("push")
def push(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="An .onnx or .vmfb file.")],
    name: Annotated[str | None, typer.Option("--name", help="A name to find it by (default: the file's).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Upload an artifact; the server inspects it and refuses a corrupt or unsupported one."""
    with client(ctx) as fy:
        art = fy.push_artifact(path, name=name)
    if as_json:
        emit_json(art)
        return
    _show(art.info, f"{art.name} ({art.sha256[:12]})")


@app.command("ls")
def ls(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Option("--name", help="Only artifacts of this name.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10000)] = 100,
    as_json: JsonOpt = False,
) -> None:
    """List pushed artifacts, newest first."""
    with client(ctx) as fy:
        arts = fy.artifacts(name=name, limit=limit)
    if as_json:
        emit_json(arts)
        return
    rows = [
        (
            a.sha256[:12],
            a.name,
            a.format,
            len(a.info.get("signature", {}).get("inputs", [])),
            a.size,
            a.created_by,
            fmt_time(a.created_at),
        )
        for a in arts
    ]
    out().print(table(["SHA256", "NAME", "FORMAT", "INPUTS", "BYTES", "BY", "PUSHED"], rows))


@app.command("inspect")
def inspect(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="A local artifact file, or the sha256 of a pushed one.")],
    as_json: JsonOpt = False,
) -> None:
    """Inputs, outputs, functions and targets of an artifact (a local file needs no server)."""
    if Path(ref).is_file():
        from fleetyard import runtimes

        info = runtimes.inspect(ref).to_dict()
        title = ref
    else:
        with client(ctx) as fy:
            art = fy.artifact(ref)
        info, title = art.info, f"{art.name} ({art.sha256[:12]})"
    if as_json:
        emit_json(info)
        return
    _show(info, title)
