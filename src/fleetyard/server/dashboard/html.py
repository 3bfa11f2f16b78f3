"""Building blocks of the dashboard's pages: the layout, escaping, tables, state colours, charts.

Everything that comes from the store goes through :func:`e` (``html.escape``) before it is
written into a page.
"""

from __future__ import annotations

import datetime as dt
import html
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

from fleetyard.domain.auth import Principal

PLOTLY_JS = "/ui/static/plotly.min.js"

# One colour per board state (and the job, stage and rollout states that share their meaning).
STATE_COLOURS = {
    "available": "#2e9e44",
    "allocated": "#2f6fd6",
    "drained": "#9a9a9a",
    "servicing": "#8e5bd1",
    "onboarding": "#48b8c8",
    "discovered": "#c9d6e3",
    "suspect": "#f0b429",
    "remediating": "#f07c29",
    "quarantined": "#d64545",
    "offline": "#3b3b3b",
    "retired": "#e6e6e6",
    # jobs, stages, runs, rollouts
    "queued": "#c9d6e3",
    "waiting": "#c9d6e3",
    "running": "#2f6fd6",
    "succeeded": "#2e9e44",
    "completed": "#2e9e44",
    "failed": "#d64545",
    "timed_out": "#d64545",
    "gated": "#9a9a9a",
    "skipped": "#e6e6e6",
    "canceled": "#9a9a9a",
    "paused": "#f0b429",
    "rolling_back": "#f07c29",
    "rolled_back": "#d64545",
    "aborted": "#9a9a9a",
    # validation and bench verdicts
    "passed": "#2e9e44",
    "valid": "#2e9e44",
    "invalid": "#d64545",
    # eval comparisons: a significant difference (better or worse), or none
    "differs": "#f07c29",
    "same": "#9a9a9a",
}

NAV = (
    ("/ui/fleet", "Fleet"),
    ("/ui/availability", "Availability"),
    ("/ui/jobs", "Jobs"),
    ("/ui/pipelines", "Pipelines"),
    ("/ui/firmware-rollouts", "Rollouts"),
    ("/ui/validations", "Validation"),
    ("/ui/benchmarks", "Benchmarks"),
    ("/ui/evals", "Evals"),
    ("/ui/robotics", "Robotics"),
)


def e(value: object) -> str:
    """``value`` as text, escaped for HTML (None: empty)."""
    return "" if value is None else html.escape(str(value), quote=True)


def when(at: float | None) -> str:
    if at is None:
        return ""
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def qs(**params: object) -> str:
    """A query string of the params that are set ("" when none)."""
    kept = {k: v for k, v in params.items() if v not in (None, "")}
    return ("?" + urlencode(kept)) if kept else ""


def _css() -> str:
    states = "".join(f".s-{name}{{background:{colour}}}" for name, colour in STATE_COLOURS.items())
    return (
        "body{font-family:system-ui,sans-serif;margin:0;color:#222;font-size:14px}"
        "header{background:#1d2733;color:#fff;padding:8px 16px;display:flex;gap:16px;align-items:center}"
        "header a{color:#cfe3ff;text-decoration:none}header .who{margin-left:auto;color:#aab}"
        "main{padding:12px 16px}h1{font-size:20px;margin:4px 0 12px}h2{font-size:16px;margin:18px 0 6px}"
        "table{border-collapse:collapse;margin:4px 0}td,th{border:1px solid #ddd;padding:3px 6px;"
        "text-align:left;vertical-align:top}th{background:#f3f5f7}"
        ".tag{display:inline-block;padding:1px 6px;border-radius:3px;color:#fff;text-shadow:0 0 2px #000}"
        ".grid{display:flex;flex-wrap:wrap;gap:2px;margin:2px 0}"
        ".grid a{display:block;width:12px;height:12px;border-radius:2px}"
        ".rack{border:1px solid #ccd;margin:6px 0;padding:4px 8px}"
        ".host{display:inline-block;margin:2px 10px 2px 0;vertical-align:top}"
        ".host span{font-size:11px;color:#555}.muted{color:#777}"
        ".warn{background:#fde8e8;border-left:4px solid #c0392b;padding:6px 10px}"
        "pre{background:#f6f8fa;padding:8px;max-height:600px;overflow:auto;white-space:pre-wrap}"
        "form.inline{display:inline}.err{color:#b00}" + states
    )


def page(title: str, body: str, *, who: Principal | None = None, head: str = "", charts: bool = False) -> str:
    """A whole page: the layout around ``body`` (already HTML)."""
    nav = "".join(f'<a href="{href}" data-testid="nav-{e(label.lower())}">{e(label)}</a>' for href, label in NAV)
    user = ""
    if who is not None:
        user = (
            f'<span class="who" data-testid="who">{e(who.name)} ({e(who.role)}) · '
            '<a href="/ui/logout" data-testid="logout">log out</a></span>'
        )
    script = f'<script src="{PLOTLY_JS}"></script>' if charts else ""
    return (
        '<!doctype html><html><head><meta charset="utf-8">'
        f"<title>{e(title)} · Fleetyard</title><style>{_css()}</style>{head}{script}</head>"
        f"<body><header><b>Fleetyard</b>{nav}{user}</header><main><h1>{e(title)}</h1>{body}</main></body></html>"
    )


def tag(state: object) -> str:
    s = e(state)
    return f'<span class="tag s-{s}">{s}</span>'


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, testid: str = "", row_testid: str = "") -> str:
    """A table; the cells are HTML already (escape them with :func:`e`). ``testid`` and
    ``row_testid`` name the table and each body row for browser tests (``data-testid``)."""
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    tr = f'<tr data-testid="{e(row_testid)}">' if row_testid else "<tr>"
    body = "".join(tr + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    tid = f' data-testid="{e(testid)}"' if testid else ""
    return f"<table{tid}><tr>{head}</tr>{body}</table>"


def kv(values: Mapping[str, Any] | None) -> str:
    """A small two-column table of a mapping; nested values as JSON."""
    if not values:
        return '<span class="muted">none</span>'
    rows = []
    for k, v in values.items():
        shown = v if isinstance(v, str | int | float | bool) or v is None else json.dumps(v, default=str)
        rows.append((e(k), e(shown)))
    return table(("", ""), rows).replace("<tr><th></th><th></th></tr>", "", 1)


def chart(fig: Any, *, height: str = "360px") -> str:
    """A plotly figure as a div (its JavaScript comes from :data:`PLOTLY_JS`, never a CDN)."""
    import plotly.io as pio

    out: str = pio.to_html(
        fig, include_plotlyjs=False, full_html=False, default_height=height, config={"displaylogo": False}
    )
    return f'<div data-testid="chart">{out}</div>'
