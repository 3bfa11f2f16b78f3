"""The Rich table and the HTML fragment."""

from __future__ import annotations

import numpy as np
from rich.console import Console

from fleetyard.validation import ComparisonReport, compare_outputs, render_html, render_table


def _report() -> ComparisonReport:
    one = np.ones(3, np.float32)
    return compare_outputs(
        {"<b>ok</b>": one, "bad": one * 2, "shape": np.ones(2, np.float32), "x&y": one},
        {"<b>ok</b>": one, "bad": one, "shape": one, "gone<": one},
    )


def test_rich_table_has_one_row_per_output() -> None:
    console = Console(record=True, width=200)
    console.print(render_table(_report(), title="compare"))
    text = console.export_text()
    for word in ("<b>ok</b>", "PASS", "FAIL", "MISSING", "EXTRA", "shape mismatch", "min passing atol"):
        assert word in text


def test_html_fragment_escapes_names() -> None:
    frag = render_html(_report())
    assert frag.startswith('<table class="fy-compare fy-fail">') and frag.endswith("</table>")
    assert "&lt;b&gt;ok&lt;/b&gt;" in frag and "<b>" not in frag
    assert "x&amp;y" in frag and "gone&lt;" in frag
    assert frag.count('<tr class="fy-pass">') == 1 and 'class="fy-fail fy-missing"' in frag
