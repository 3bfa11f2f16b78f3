"""The fleet page (boards by rack and host, coloured by state), a board's page, and the fleet's
availability over time."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import sqlalchemy as sa

from fleetyard.domain.board import Actor, BoardState
from fleetyard.errors import NotFound
from fleetyard.policy.uptime import Transition, uptime
from fleetyard.server.dashboard.html import STATE_COLOURS, chart, e, kv, qs, table, tag, when
from fleetyard.store import tables as t
from fleetyard.store.db import Store

B = t.boards.c
_STATES = frozenset(str(s) for s in BoardState)
_ACTORS = frozenset(str(a) for a in Actor)


def _pct(x: float | None) -> str:
    return "" if x is None else f"{100.0 * x:.2f}%"


def fleet_body(store: Store, *, state: str | None, generation: str | None, host: str | None) -> str:
    """The fleet page's body. One query for the boards (whatever the fleet's size), one for the
    hosts and one for the declared racks; the state filter applies after the counts."""
    q = sa.select(B.id, B.host_id, B.slot, B.generation, B.state, B.firmware).order_by(B.host_id, B.slot)
    if generation:
        q = q.where(B.generation == generation)
    if host:
        q = q.where(B.host_id == host)
    with store.read() as conn:
        rows = conn.execute(q).all()
        H = t.hosts.c
        hosts = {r.id: (r.state, r.labels or {}) for r in conn.execute(sa.select(H.id, H.state, H.labels))}
        declared = dict(conn.execute(sa.select(t.inventory_hosts.c.id, t.inventory_hosts.c.rack)).all())
        generations = sorted(g for (g,) in conn.execute(sa.select(B.generation).distinct()))
    counts = Counter(r.state for r in rows)
    shown = [r for r in rows if r.state == state] if state else rows

    def rack_of(host_id: str) -> str:
        labels = hosts.get(host_id, ("", {}))[1]
        return str(labels.get("rack") or declared.get(host_id) or host_id)

    racks: dict[str, dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
    for r in shown:
        racks[rack_of(r.host_id)][r.host_id].append(r)

    out = [_filters(state=state, generation=generation, host=host, generations=generations)]
    chips = []
    for s in [str(x) for x in BoardState]:
        if counts.get(s):
            link = qs(state=s, generation=generation, host=host)
            chips.append(f'<a href="/ui/fleet{link}">{tag(s)}</a> {counts[s]}')
    out.append(
        f"<p>{len(rows)} boards · " + " · ".join(chips) + (f" · showing {e(state)} only" if state else "") + "</p>"
    )
    parts: list[str] = []
    for rack in sorted(racks):
        parts.append(f'<div class="rack"><b>rack {e(rack)}</b><br>')
        for host_id in sorted(racks[rack]):
            hstate = hosts.get(host_id, ("?", {}))[0]
            parts.append(f'<div class="host"><span>{e(host_id)} ({e(hstate)})</span><div class="grid">')
            for r in racks[rack][host_id]:
                bid = e(r.id)
                parts.append(
                    f'<a class="s-{e(r.state)}" href="/ui/boards/{bid}" data-state="{e(r.state)}" '
                    f'title="{bid} · {e(r.state)} · {e(r.generation)} fw {e(r.firmware)} · slot {r.slot}"></a>'
                )
            parts.append("</div></div>")
        parts.append("</div>")
    out.append("".join(parts) or '<p class="muted">no boards match</p>')
    out.append(_legend())
    return "".join(out)


def _filters(*, state: str | None, generation: str | None, host: str | None, generations: list[str]) -> str:
    states = "".join(
        f'<option value="{s}"{" selected" if s == state else ""}>{s}</option>' for s in ["", *map(str, BoardState)]
    )
    gens = "".join(
        f'<option value="{e(g)}"{" selected" if g == generation else ""}>{e(g)}</option>' for g in ["", *generations]
    )
    return (
        '<form method="get" action="/ui/fleet">state <select name="state">' + states + "</select> "
        'generation <select name="generation">' + gens + "</select> "
        f'host <input name="host" value="{e(host)}" size="16"> <button>filter</button> '
        '<a href="/ui/fleet">clear</a></form>'
    )


def _legend() -> str:
    return "<p>" + " ".join(tag(s) for s in map(str, BoardState) if s in STATE_COLOURS) + "</p>"


def board_body(store: Store, *, board_id: str, can_drain: bool, limit: int = 200) -> str:
    import plotly.graph_objects as go

    with store.read() as conn:
        b = conn.execute(sa.select(t.boards).where(B.id == board_id)).first()
        if b is None:
            raise NotFound(f"no board {board_id!r}")
        events = conn.execute(
            sa.select(t.board_events)
            .where(t.board_events.c.board_id == board_id)
            .order_by(t.board_events.c.id.desc())
            .limit(limit)
        ).all()
    facts = {
        "host": b.host_id, "slot": b.slot, "generation": b.generation, "firmware": b.firmware,
        "hardware revision": b.hardware_revision, "device": b.device, "state reason": b.state_reason,
        "since": when(b.state_changed_at), "drain reason": b.drain_reason, "job": b.job_id,
        "probe": None if b.probe_ok is None else ("ok" if b.probe_ok else f"failing: {b.probe_reason}"),
        "labels": b.labels or None,
    }  # fmt: skip
    out = [f"<p>{tag(b.state)}</p>", kv({k: v for k, v in facts.items() if v not in (None, "")})]
    if can_drain:
        out.append(
            f'<h2>Drain</h2><form method="post" action="/ui/boards/{e(board_id)}/drain">'
            '<input name="reason" required placeholder="why" size="40"> <button>drain</button></form>'
        )
    out.append("<h2>Telemetry</h2>")
    telemetry = {k: v for k, v in (b.telemetry or {}).items() if isinstance(v, int | float)}
    if telemetry:
        names = sorted(telemetry)
        fig = go.Figure(go.Bar(x=names, y=[telemetry[n] for n in names]))
        fig.update_layout(margin={"l": 40, "r": 10, "t": 10, "b": 80})
        out.append(f'<p class="muted">as of {e(when(b.telemetry_at))}</p>' + chart(fig, height="300px"))
        out.append(kv(telemetry))
    else:
        out.append('<p class="muted">no telemetry reported</p>')
    out.append(f"<h2>Timeline (latest {len(events)})</h2>")
    out.append(
        table(
            ("at", "from", "to", "actor", "reason", "job"),
            (
                (
                    e(when(ev.at)), tag(ev.from_state) if ev.from_state else "", tag(ev.to_state), e(ev.actor),
                    e(ev.reason), f'<a href="/ui/jobs/{ev.job_id}">{ev.job_id}</a>' if ev.job_id else "",
                )
                for ev in events
            ),
        )
    )  # fmt: skip
    return "".join(out)


def availability_series(store: Store, *, until: float, hours: int) -> tuple[list[float], dict[str, list[float | None]]]:
    """Fleet (and per generation) availability for each hour of the last ``hours``, by
    :func:`fleetyard.policy.uptime.uptime` over ``board_events``: the hours' ends, and the series."""
    since = until - hours * 3600.0
    E = t.board_events.c
    with store.read() as conn:
        generation_of = dict(conn.execute(sa.select(B.id, B.generation)).all())
        before = sa.select(sa.func.max(E.id)).where(E.at < since).group_by(E.board_id).scalar_subquery()
        rows = conn.execute(
            sa.select(E.board_id, E.at, E.to_state, E.actor, E.reason).where(
                sa.or_(sa.and_(E.at >= since, E.at <= until), E.id.in_(before))
            )
        ).all()
    transitions = [
        Transition(r.board_id, r.at, BoardState(r.to_state), Actor(r.actor), r.reason)
        for r in rows
        if r.to_state in _STATES and r.actor in _ACTORS
    ]
    gens = sorted(set(generation_of.values()))
    ends: list[float] = []
    series: dict[str, list[float | None]] = {"fleet": [], **{g: [] for g in gens}}
    for h in range(hours):
        t0 = since + h * 3600.0
        t1 = t0 + 3600.0
        figures = uptime(transitions, generation_of, since=t0, until=t1)
        ends.append(t1)
        series["fleet"].append(figures.availability)
        per = figures.by_generation
        for g in gens:
            a = per.get(g, {}).get("availability")
            series[g].append(None if a is None else float(a))
    return ends, series


def availability_body(store: Store, *, until: float, hours: int) -> str:
    import datetime as dt

    import plotly.graph_objects as go

    ends, series = availability_series(store, until=until, hours=hours)
    xs = [dt.datetime.fromtimestamp(x, dt.UTC) for x in ends]
    fig = go.Figure()
    for name, ys in series.items():
        fig.add_trace(
            go.Scatter(
                x=xs, y=[None if y is None else 100.0 * y for y in ys], mode="lines+markers", name=name,
                line={"width": 3 if name == "fleet" else 1},
            )
        )  # fmt: skip
    fig.update_layout(yaxis={"title": "available (% of counted board time)", "range": [0, 100.5]},
                      margin={"l": 60, "r": 10, "t": 10, "b": 40})  # fmt: skip
    links = " · ".join(f'<a href="/ui/availability?hours={h}">{h} h</a>' for h in (6, 24, 72, 168))
    rows = [(e(when(x)), *(e(_pct(series[n][i])) for n in series)) for i, x in enumerate(ends)]
    return (
        f"<p>Per hour over the last {hours} h ({links}). In service (available, allocated) over counted time; "
        "drained or servicing by an operator's hand is not counted (policy.uptime).</p>"
        + chart(fig)
        + "<h2>Figures</h2>"
        + table(("hour ending (UTC)", *series), rows)
    )
