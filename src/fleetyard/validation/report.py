"""Showing a :class:`~fleetyard.validation.compare.ComparisonReport`: a Rich table for people and
an HTML fragment for the dashboard (the JSON for machines is ``ComparisonReport.to_json``).

One row per output: pass/fail, max abs and max rel error, cosine, SNR, failing elements, and the
smallest atol that would have passed; then a row per missing and per extra output.
"""

from __future__ import annotations

import html
import math

from rich.table import Table
from rich.text import Text

from fleetyard.validation.compare import ComparisonReport, OutputComparison

__all__ = ["fmt", "render_html", "render_table"]

COLUMNS = ("output", "result", "max abs err", "max rel err", "cosine", "SNR dB", "failing", "min passing atol")


def fmt(x: float | None, spec: str = ".3g") -> str:
    """A figure for a cell: ``-`` when not measured, ``inf``/``nan`` spelled out."""
    if x is None:
        return "-"
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return format(x, spec)


def _cells(o: OutputComparison) -> list[str]:
    failing = f"{o.failing} ({o.failing_fraction:.2%})" if o.size else "0"
    return [
        fmt(o.max_abs),
        fmt(o.max_rel),
        fmt(o.cosine, ".6f"),
        fmt(o.snr_db, ".1f"),
        failing,
        fmt(o.min_passing_atol),
    ]


def render_table(report: ComparisonReport, *, title: str | None = None) -> Table:
    """A Rich table (print it with a ``rich.console.Console``)."""
    table = Table(title=title)
    for c in COLUMNS:
        table.add_column(c, justify="left" if c in ("output", "result") else "right")
    for o in report.outputs:
        result = Text("PASS", style="bold green") if o.passed else Text("FAIL", style="bold red")
        if o.message:
            table.add_row(Text(o.name), result, Text(o.message, style="red"), *[""] * 5)
        else:
            table.add_row(Text(o.name), result, *_cells(o))
    for name in report.missing:
        table.add_row(Text(name), Text("MISSING", style="bold red"), "not in the actual outputs", *[""] * 5)
    for name in report.extra:
        table.add_row(Text(name), Text("EXTRA", style="yellow"), "no reference", *[""] * 5)
    return table


def render_html(report: ComparisonReport) -> str:
    """A ``<table class="fy-compare">`` fragment; every name and message is escaped."""
    e = html.escape
    head = "".join(f"<th>{e(c)}</th>" for c in COLUMNS)
    rows = []
    for o in report.outputs:
        cls, word = ("fy-pass", "PASS") if o.passed else ("fy-fail", "FAIL")
        if o.message:
            cells = f'<td colspan="6" class="fy-message">{e(o.message)}</td>'
        else:
            cells = "".join(f"<td>{e(c)}</td>" for c in _cells(o))
        rows.append(f'<tr class="{cls}"><td class="fy-name">{e(o.name)}</td><td>{word}</td>{cells}</tr>')
    for name in report.missing:
        rows.append(
            f'<tr class="fy-fail fy-missing"><td class="fy-name">{e(name)}</td><td>MISSING</td>'
            '<td colspan="6">not in the actual outputs</td></tr>'
        )
    for name in report.extra:
        rows.append(
            f'<tr class="fy-extra"><td class="fy-name">{e(name)}</td><td>EXTRA</td>'
            '<td colspan="6">no reference</td></tr>'
        )
    verdict = "fy-pass" if report.passed else "fy-fail"
    return f'<table class="fy-compare {verdict}"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
