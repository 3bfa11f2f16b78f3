"""``fleetyard onboarding …``: how boards get through onboarding (inspect, flash, burn-in), per batch.

fleetyard onboarding status                  # each batch: boards per step, done, failed
fleetyard onboarding status sjc1/r01         # each board of a batch: step, since when, why
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from fleetyard.cli._common import JsonOpt, client
from fleetyard.cli._output import emit_json, fmt_ago, fmt_time, note, out, styled, table
from fleetyard.client import OnboardingBatchOut, OnboardingBoardOut

app = typer.Typer(help="Onboarding: boards on their way into service (inspect, flash, burn-in).", no_args_is_help=True)

STEPS = ("queued", "inspect", "flash", "burn_in")


def _batches(batches: list[OnboardingBatchOut]) -> None:
    rows = [
        (
            b.batch,
            b.boards,
            *(b.steps.get(s, 0) or "" for s in STEPS),
            b.done,
            b.failed or "",
            fmt_time(b.first_created_at),
            fmt_time(b.last_finished_at),
        )
        for b in batches
    ]
    cols = ["BATCH", "BOARDS", "QUEUED", "INSPECT", "FLASH", "BURN-IN", "DONE", "FAILED", "STARTED", "LAST FINISHED"]
    out().print(table(cols, rows))


def _last_note(evidence: dict[str, Any]) -> str:
    """What the board's latest step came to (its reason, once it ended)."""
    if evidence.get("reason"):
        return str(evidence["reason"])
    log = evidence.get("log") or []
    return str(log[-1].get("note", "")) if log else ""


def _boards(boards: list[OnboardingBoardOut]) -> None:
    rows = [(b.board_id, styled(b.step), fmt_ago(b.since), styled(b.outcome), _last_note(b.evidence)) for b in boards]
    out().print(table(["BOARD", "STEP", "SINCE", "OUTCOME", "LATEST"], rows))


@app.command("status")
def status(
    ctx: typer.Context,
    batch: Annotated[str | None, typer.Argument(help="A batch (e.g. sjc1/r01, or repair): its boards.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Onboarding progress: each batch's boards per step, or each board of one batch."""
    c = client(ctx)
    if batch is None:
        batches = c.onboarding()
        if as_json:
            emit_json(batches)
            return
        if not batches:
            note("no board has onboarded yet")
        _batches(batches)
        return
    boards = c.onboarding_batch(batch)
    if as_json:
        emit_json(boards)
        return
    _boards(boards)
