"""``fleetyard firmware …``: the firmware registry: images per generation and each one's standard.

fleetyard firmware make-sim-image --gen sim-g2 --version 2.2.0 fw-sim-g2-2.2.0.bin
fleetyard firmware push fw-sim-g2-2.2.0.bin --gen sim-g2 --version 2.2.0 --notes "fixes ECC scrub"
fleetyard firmware standard sim-g2 2.2.0        # what onboarding flashes
fleetyard firmware ls --gen sim-g2
fleetyard firmware rollout sim-g2 2.2.0 --canary 8 --shares 0.05,0.25,0.5,1 --soak 30m --reason "ECC scrub fix"
fleetyard firmware rollouts                      # newest first
fleetyard firmware rollout-status 3              # each wave: boards by step, figures, gate, verdict
fleetyard firmware pause 3 --reason "on-call busy"; fleetyard firmware resume 3; fleetyard firmware abort 3
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from fleetyard.cli._common import JsonOpt, client, parse_duration
from fleetyard.cli._output import emit_json, fmt_time, key_values, note, out, styled, table
from fleetyard.client import FirmwareOut
from fleetyard.domain.firmware_image import sim_image
from fleetyard.protocol.api import RolloutDetail, RolloutOut

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
    sha256: Annotated[
        str | None, typer.Option("--sha256", help="What its publisher says it hashes to: a mismatch is refused.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Upload an image and register it for a generation (a sim image must name that generation)."""
    f = client(ctx).push_firmware(
        image, generation, version, notes=notes, hardware_revisions=hw_rev or [], sha256=sha256
    )
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


# ---- staged rollouts

ReasonOpt = Annotated[str, typer.Option("--reason", "-r", help="Why (kept in the audit log).")]


def _shares(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected shares like 0.05,0.25,0.5,1, got {text!r}", param_hint="--shares") from None


def _rollouts_table(rollouts: list[RolloutOut]) -> None:
    rows = [
        (
            r.id, r.generation, r.version, styled(r.state), f"{r.wave + 1}/{r.waves}",
            ", ".join(f"{n} {s}" for s, n in sorted(r.counts.items())), f"{r.created_by}, {fmt_time(r.created_at)}",
            r.message or r.reason,
        )
        for r in rollouts
    ]  # fmt: skip
    out().print(table(["ID", "GENERATION", "VERSION", "STATE", "WAVE", "BOARDS", "STARTED", "MESSAGE"], rows))


def _pct(x: Any) -> str:
    return "" if x is None else f"{x:.1%}" if isinstance(x, float) else str(x)


def _status(r: RolloutDetail) -> None:
    console = out()
    console.print(
        key_values(
            [
                ("rollout", f"{r.id}: {r.generation} to {r.version} (image {r.image[:12]})"),
                ("state", styled(r.state)),
                ("wave", f"{r.wave + 1} of {r.waves}"),
                ("boards", ", ".join(f"{n} {s}" for s, n in sorted(r.counts.items()))),
                ("plan", ", ".join(f"{k}={v}" for k, v in r.plan.items() if k not in ("gates", "control_boards"))),
                ("started", f"{fmt_time(r.created_at)} by {r.created_by}: {r.reason}"),
                ("ended", fmt_time(r.ended_at)),
                ("message", r.message or ""),
            ]
        )
    )
    for w in r.wave_records:
        verdict = "" if w.verdict is None else "passed" if w.verdict else "FAILED"
        steps = ", ".join(f"{n} {s}" for s, n in sorted(w.steps.items()))
        title = f"wave {w.index + 1}: {w.boards} board{'s' if w.boards != 1 else ''} ({steps})"
        title += f", gate {verdict}" if verdict else ""
        rows = [
            (name, _pct(v.get("wave")), _pct(v.get("control")), _pct(v.get("limit")))
            for name, v in sorted((w.gate or {}).items())
        ]
        if rows:
            console.print(table(["MEASURE", "WAVE", "CONTROL", "LIMIT"], rows, title=title))
        else:
            console.print(title + (f"; started {fmt_time(w.started_at)}" if w.started_at else "; not started"))
        for reason in w.reasons:
            console.print(f"  - {reason}", markup=False)
        if w.soak and w.soak_checks_at is not None and w.verdict is None:
            judged = ", ".join(f"{side} {n} of {of}" for side, (n, of) in w.soak.items())
            console.print(
                f"  soak checks judged: {judged}" + ("" if w.checks_in else " (the gate waits for them)"),
                markup=False,
            )
        if w.figures:
            for side in ("wave", "control"):
                f = w.figures.get(side) or {}
                console.print(
                    f"  {side}: {f.get('checks', 0)} checks ({f.get('check_failures', 0)} failed), "
                    f"{f.get('attempts', 0)} ranks ({f.get('infra_errors', 0)} infra errors), "
                    f"{f.get('validations', 0)} validations ({f.get('validation_passes', 0)} passed), "
                    f"{len(f.get('throughput') or {})} benchmarks, {f.get('flashes', 0)} flashes "
                    f"({f.get('flash_failures', 0)} failed)",
                    markup=False,
                )
    board_rows = [
        (b.board_id, "control" if b.control else b.wave + 1, styled(b.step), b.from_version, b.firmware or "",
         styled(b.state), fmt_time(b.step_at), b.message or "")
        for b in r.boards
    ]  # fmt: skip
    console.print(table(["BOARD", "WAVE", "STEP", "FROM", "FIRMWARE", "STATE", "SINCE", "MESSAGE"], board_rows))


@app.command("rollout")
def rollout(
    ctx: typer.Context,
    generation: Annotated[str, typer.Argument(help="The generation, e.g. sim-g2.")],
    version: Annotated[str, typer.Argument(help="A registered version of it (fleetyard firmware ls).")],
    reason: ReasonOpt,
    canary: Annotated[int | None, typer.Option("--canary", help="Boards in the first wave (default 8).")] = None,
    shares: Annotated[
        str | None, typer.Option("--shares", help="Cumulative shares of the generation per wave, e.g. 0.05,0.25,0.5,1.")
    ] = None,
    soak: Annotated[str | None, typer.Option("--soak", help="After each wave, before its gate: 30m, 1800 …")] = None,
    control: Annotated[
        int | None, typer.Option("--control", help="Boards kept on the old firmware until the last wave (default 8).")
    ] = None,
    drain: Annotated[
        str | None, typer.Option("--drain", help="wait: running jobs finish; requeue: re-queued after a timeout.")
    ] = None,
    drain_timeout: Annotated[
        str | None, typer.Option("--drain-timeout", help="With --drain requeue: how long a job may keep a board.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Roll a generation out to a firmware version in waves: a canary, then shares of the
    generation, each soaked and gated against control boards; a failed gate rolls back."""
    r = client(ctx).start_rollout(
        generation, version, reason=reason, canary=canary, shares=_shares(shares),
        soak_s=None if soak is None else parse_duration(soak, "--soak"), control=control, drain=drain,
        drain_timeout_s=None if drain_timeout is None else parse_duration(drain_timeout, "--drain-timeout"),
    )  # fmt: skip
    if as_json:
        emit_json(r)
        return
    _status(r)
    note(f"follow it: fleetyard firmware rollout-status {r.id}")


@app.command("rollouts")
def rollouts(
    ctx: typer.Context,
    generation: Annotated[str | None, typer.Option("--gen", help="Only this generation.")] = None,
    active: Annotated[bool, typer.Option("--active", help="Only running, paused or rolling back.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Firmware rollouts, newest first."""
    found = client(ctx).rollouts(generation, active=active)
    if as_json:
        emit_json(found)
        return
    _rollouts_table(found)


@app.command("rollout-status")
def rollout_status(
    ctx: typer.Context,
    rollout_id: Annotated[int, typer.Argument(help="The rollout's id (fleetyard firmware rollouts).")],
    as_json: JsonOpt = False,
) -> None:
    """A rollout: each wave's boards by step, its figures and gate table, its verdict; each board."""
    r = client(ctx).rollout(rollout_id)
    if as_json:
        emit_json(r)
        return
    _status(r)


def _control(ctx: typer.Context, rollout_id: int, action: str, reason: str, as_json: bool) -> None:
    r = client(ctx).control_rollout(rollout_id, action, reason)
    if as_json:
        emit_json(r)
        return
    _rollouts_table([r])


IdArg = Annotated[int, typer.Argument(help="The rollout's id.")]


@app.command("pause")
def pause(
    ctx: typer.Context, rollout_id: IdArg, reason: ReasonOpt = "paused by hand", as_json: JsonOpt = False
) -> None:
    """Pause a rollout: no new board starts; those in flight finish their step."""
    _control(ctx, rollout_id, "pause", reason, as_json)


@app.command("resume")
def resume(
    ctx: typer.Context, rollout_id: IdArg, reason: ReasonOpt = "resumed by hand", as_json: JsonOpt = False
) -> None:
    """Resume a paused rollout."""
    _control(ctx, rollout_id, "resume", reason, as_json)


@app.command("abort")
def abort(
    ctx: typer.Context, rollout_id: IdArg, reason: ReasonOpt = "aborted by hand", as_json: JsonOpt = False
) -> None:
    """Abort a rollout: nothing new starts, boards in flight finish their step, none is rolled back."""
    _control(ctx, rollout_id, "abort", reason, as_json)
