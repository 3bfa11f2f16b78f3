"""``fleetyard firmware …``: the firmware registry: images per generation and each one's standard.

fleetyard firmware make-sim-image --gen sim-g2 --version 2.2.0 fw-sim-g2-2.2.0.bin
fleetyard firmware push fw-sim-g2-2.2.0.bin --gen sim-g2 --version 2.2.0 --notes "fixes ECC scrub"
fleetyard firmware standard sim-g2 2.2.0        # what onboarding flashes
fleetyard firmware ls --gen sim-g2
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from fleetyard.cli._common import JsonOpt, client
from fleetyard.cli._output import emit_json, fmt_time, out, table
from fleetyard.client import FirmwareOut
from fleetyard.domain.firmware_image import sim_image

app = typer.Typer(help="Firmware images per generation: push, list, the standard one.", no_args_is_help=True)

GenOpt = Annotated[str, typer.Option("--gen", help="The hardware generation, e.g. sim-g2.")]
VersionOpt = Annotated[str, typer.Option("--version", help="The image's version, e.g. 2.2.0 (PEP 440).")]


def _table(images: list[FirmwareOut]) -> None:
    rows = [
        (
            f.generation,
            f.version,
            "standard" if f.standard else "",
            f.sha256[:12],
            f"{f.size:,}",
            ", ".join(f.hardware_revisions) or "all",
            f"{f.uploaded_by}, {fmt_time(f.uploaded_at)}",
            f.notes,
        )
        for f in images
    ]
    out().print(table(["GENERATION", "VERSION", "", "SHA256", "BYTES", "HW REVISIONS", "UPLOADED", "NOTES"], rows))


@app.command("push")
def push(
    ctx: typer.Context,
    image: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="The image file.")],
    generation: GenOpt,
    version: VersionOpt,
    notes: Annotated[str, typer.Option("--notes", help="What changed, for operators.")] = "",
    hw_rev: Annotated[
        list[str] | None, typer.Option("--hw-rev", help="A board revision it supports (repeat; none: all).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Upload an image and register it for a generation (a sim image must name that generation)."""
    f = client(ctx).push_firmware(image, generation, version, notes=notes, hardware_revisions=hw_rev or [])
    if as_json:
        emit_json(f)
        return
    _table([f])


@app.command("ls")
def ls(
    ctx: typer.Context,
    generation: Annotated[str | None, typer.Option("--gen", help="Only this generation.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """The registered images, newest version first in each generation."""
    images = client(ctx).firmware(generation)
    if as_json:
        emit_json(images)
        return
    _table(images)


@app.command("standard")
def standard(
    ctx: typer.Context,
    generation: Annotated[str, typer.Argument(help="The generation.")],
    version: Annotated[str, typer.Argument(help="A registered version of it.")],
    as_json: JsonOpt = False,
) -> None:
    """Make a registered image its generation's standard: the one onboarding flashes."""
    f = client(ctx).set_standard_firmware(generation, version)
    if as_json:
        emit_json(f)
        return
    _table([f])


@app.command("make-sim-image")
def make_sim_image(
    out_path: Annotated[Path, typer.Argument(dir_okay=False, help="Where to write it.")],
    generation: GenOpt,
    version: VersionOpt,
    boots: Annotated[bool, typer.Option("--boots/--no-boot", help="--no-boot: an image that fails to boot.")] = True,
    crash_per_hour: Annotated[
        float, typer.Option("--crash-per-hour", min=0.0, help="Crashes per board-hour it adds (a bad image).")
    ] = 0.0,
    sdc_per_hour: Annotated[
        float, typer.Option("--sdc-per-hour", min=0.0, help="Silent corruptions per board-hour it adds.")
    ] = 0.0,
) -> None:
    """Write a firmware image for simulated boards (its header names the generation and version;
    a bad one can fail to boot, or raise its boards' crash and corruption rates)."""
    extra: dict[str, Any] = {k: v for k, v in (("crash_per_hour", crash_per_hour), ("sdc_per_hour", sdc_per_hour)) if v}
    if not boots:
        extra["boots"] = False
    out_path.write_bytes(sim_image(generation, version, **extra))
    out().print(f"wrote {out_path}: sim firmware {version} for {generation}")
