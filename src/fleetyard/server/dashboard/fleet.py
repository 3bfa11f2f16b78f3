"""The fleet page (boards by rack and host, coloured by state), a board's page, and the fleet's
availability over time."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from fleetyard.domain.board import Actor, BoardState
from fleetyard.errors import NotFound
from fleetyard.policy.uptime import IN_SERVICE, counted
from fleetyard.server.dashboard.html import STATE_COLOURS, chart, e, kv, qs, table, tag, when
from fleetyard.store import tables as t
from fleetyard.store.breakers import open_breakers
from fleetyard.store.db import Store

B = t.boards.c
UNDRAINABLE = frozenset({str(BoardState.DRAINED), str(BoardState.SUSPECT)})  # what the undrain service returns


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
        tripped = open_breakers(conn)
    counts = Counter(r.state for r in rows)
    shown = [r for r in rows if r.state == state] if state else rows

    def rack_of(host_id: str) -> str:
        labels = hosts.get(host_id, ("", {}))[1]
        return str(labels.get("rack") or declared.get(host_id) or host_id)

    racks: dict[str, dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
    for r in shown:
        racks[rack_of(r.host_id)][r.host_id].append(r)

    out = [_tripped(tripped), _filters(state=state, generation=generation, host=host, generations=generations)]
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
                    'data-testid="board-row" '
                    f'title="{bid} · {e(r.state)} · {e(r.generation)} fw {e(r.firmware)} · slot {r.slot}"></a>'
                )
            parts.append("</div></div>")
        parts.append("</div>")
    out.append("".join(parts) or '<p class="muted">no boards match</p>')
    out.append(_legend())
    return "".join(out)


def _tripped(breakers: dict[str, Any]) -> str:
    """A warning per tripped breaker: automatic healing (all of it, for the control plane's) stopped."""
    lines = [
        f'<p class="warn" data-testid="breaker-tripped"><b>{e(gen)} breaker tripped</b> {when(r.tripped_at)}: '
        f"{e(r.reason)} (fleetyard fleet reset-breaker {e(gen)} -r WHY)</p>"
        for gen, r in sorted(breakers.items())
    ]
    return "".join(lines)


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


def board_body(store: Store, *, board_id: str, can_drain: bool, csrf: str = "", limit: int = 200) -> str:
    """A board's page: its facts, drain and undrain forms (for an operator; each carries the
    session's ``csrf`` token), its telemetry and its timeline."""
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
    out = [
        f'<p data-testid="board-state" data-state="{e(b.state)}">{tag(b.state)}</p>',
        '<div data-testid="board-facts">' + kv({k: v for k, v in facts.items() if v not in (None, "")}) + "</div>",
    ]
    if can_drain:
        token = f'<input type="hidden" name="csrf" value="{e(csrf)}">'
        out.append(
            f'<h2>Drain</h2><form method="post" action="/ui/boards/{e(board_id)}/drain" data-testid="drain-form">'
            f'{token}<input name="reason" required placeholder="why" size="40" data-testid="drain-reason"> '
            '<button data-testid="drain-button">drain</button></form>'
        )
        if b.state in UNDRAINABLE or b.drain_reason is not None:
            out.append(
                f'<h2>Undrain</h2><form method="post" action="/ui/boards/{e(board_id)}/undrain" '
                f'data-testid="undrain-form">{token}<input name="reason" required placeholder="why" size="40" '
                'data-testid="undrain-reason"> <button data-testid="undrain-button">undrain</button></form>'
            )
    out.append("<h2>Telemetry</h2>")
    telemetry = {k: v for k, v in (b.telemetry or {}).items() if isinstance(v, int | float)}
    if telemetry:
        names = sorted(telemetry)
        fig = go.Figure(go.Bar(x=names, y=[telemetry[n] for n in names]))
        fig.update_layout(margin={"l": 40, "r": 10, "t": 10, "b": 80})
        out.append(
            f'<p class="muted">as of {e(when(b.telemetry_at))}</p><div data-testid="telemetry-chart">'
            + chart(fig, height="300px")
            + "</div>"
        )
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
            testid="board-timeline",
            row_testid="timeline-row",
        )
    )  # fmt: skip
    return "".join(out)


# (to_state, actor) -> (counted, in service), as policy.uptime counts a board's time.
_COUNTS = {
    (str(s), str(a)): (counted(s, a), s in IN_SERVICE) for s in BoardState for a in Actor
}  # fmt: skip


def hourly_availability(
    transitions: Iterable[tuple[str, str, float, str, str]], generations: Iterable[str], *, since: float, hours: int
) -> dict[str, list[float | None]]:
    """Availability of the fleet (``"fleet"``) and of each generation in each hour from ``since``:
    what :func:`fleetyard.policy.uptime.uptime` gives for each hour's window, in one pass.

    ``transitions``: (board, generation, at, to_state, actor), each board's up to the end,
    including its last one before ``since``. They cut each board's time into segments (a state
    from one transition to the next, the last open to the end); every segment's overlap with every
    hour is taken at once (numpy) and summed per generation as counted and in-service seconds."""
    import numpy as np  # here: no other page needs it, and every server start paid for it

    gens = sorted(set(generations))
    gen_index = {g: k for k, g in enumerate(gens)}
    until = since + hours * 3600.0
    codes: dict[str, int] = {}
    kept = [
        (codes.setdefault(b, len(codes)), gen_index[g], at, *_COUNTS[(state, actor)])
        for b, g, at, state, actor in transitions
        if g in gen_index and at <= until and (state, actor) in _COUNTS
    ]
    edges = since + 3600.0 * np.arange(hours + 1)
    counted_s = np.zeros((len(gens), hours))
    served_s = np.zeros((len(gens), hours))
    if kept:
        rows = np.array(kept, dtype=np.float64)
        order = np.lexsort((rows[:, 2], rows[:, 0]))  # by board, then time; stable among equal times, as uptime()
        rows = rows[order]
        board, gen, at = rows[:, 0], rows[:, 1].astype(np.int64), rows[:, 2]
        end = np.full(at.shape, until)
        same = board[1:] == board[:-1]
        end[:-1][same] = at[1:][same]  # a segment lasts until its board's next transition
        lo, hi = np.maximum(at[:, None], edges[None, :-1]), np.minimum(end[:, None], edges[None, 1:])
        overlap = np.clip(hi - lo, 0.0, None)  # seconds of each segment in each hour
        overlap *= rows[:, 3:4]  # counted time only
        np.add.at(counted_s, gen, overlap)
        np.add.at(served_s, gen, overlap * rows[:, 4:5])

    def ratio(served: np.ndarray, count: np.ndarray) -> list[float | None]:
        return [float(a / c) if c > 0 else None for a, c in zip(served.tolist(), count.tolist(), strict=True)]

    series: dict[str, list[float | None]] = {"fleet": ratio(served_s.sum(axis=0), counted_s.sum(axis=0))}
    for g, k in gen_index.items():
        series[g] = ratio(served_s[k], counted_s[k])
    return series


def availability_series(store: Store, *, until: float, hours: int) -> tuple[list[float], dict[str, list[float | None]]]:
    """Fleet (and per generation) availability for each hour of the last ``hours``, as
    :func:`fleetyard.policy.uptime.uptime` counts it over ``board_events``: the hours' ends, and the series.
    One query for the transitions in the window and each board's last before it (with its
    board's generation), one for the generations."""
    since = until - hours * 3600.0
    E = t.board_events.c
    with store.read() as conn:
        generations = [g for (g,) in conn.execute(sa.select(B.generation).distinct())]
        before = sa.select(sa.func.max(E.id)).where(E.at < since).group_by(E.board_id).scalar_subquery()
        rows = conn.execute(
            sa.select(E.board_id, B.generation, E.at, E.to_state, E.actor)
            .join(t.boards, B.id == E.board_id)
            .where(sa.or_(sa.and_(E.at >= since, E.at <= until), E.id.in_(before)))
            .order_by(E.id)
        ).all()
    ends = [since + 3600.0 * (h + 1) for h in range(hours)]
    return ends, hourly_availability(rows, generations, since=since, hours=hours)


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
        + f'<div data-testid="availability-chart">{chart(fig)}</div>'
        + "<h2>Figures</h2>"
        + table(("hour ending (UTC)", *series), rows, testid="availability-table", row_testid="availability-row")
    )
