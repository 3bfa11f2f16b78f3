"""The result pages of finished jobs that check a model: validation reports (``validate``: per
output error statistics against their tolerances, and the |error| histogram the workload keeps)
and benchmarks (``bench``: percentiles and the latency histogram the workload keeps).

Everything shown is read from the ranks' stored results (``assignments.result``): nothing is
recomputed here but the layout. Shared helpers for the other result pages (:mod:`.evals`) live
here too.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from fleetyard.domain.auth import Principal, may_read
from fleetyard.domain.spec import Visibility
from fleetyard.errors import NotFound
from fleetyard.protocol.api import JobOut, RankOut
from fleetyard.server.dashboard.html import chart, e, table, tag, when
from fleetyard.server.services import jobs as jobs_svc
from fleetyard.server.services.views import rank_out
from fleetyard.store import tables as t
from fleetyard.store.db import Store

# kind -> (the kind's result pages, what the link says): the job page links there.
RESULT_PAGES = {
    "validate": ("/ui/validations", "validation report"),
    "bench": ("/ui/benchmarks", "benchmark: latency distribution"),
    "eval": ("/ui/evals", "evals: compare with another version"),
    "rollout": ("/ui/robotics", "robotics rollout: episodes and trajectories"),
}
LIST_LIMIT = 200
PERCENTILES = ("p50", "p90", "p99", "p99.9")
HOVER = "%{customdata[0]:.4g} to %{customdata[1]:.4g} ms: %{y} queries<extra></extra>"


def num(x: Any, digits: int = 6) -> str:
    """A stored number as shown: ``digits`` significant digits; "inf"/"nan" strings as they are."""
    if x is None:
        return ""
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        return f"{x:.{digits}g}" if math.isfinite(x) else str(x)
    return e(x)


def pct(x: float | None) -> str:
    return "" if x is None else f"{100.0 * x:.2f}%"


def job_link(job: JobOut, base: str) -> str:
    return f'<a href="{base}/{job.id}">{job.id}</a>'


def finished_ranks(store: Store, *, job_id: int, kind: str, reader: Principal) -> tuple[JobOut, list[RankOut]]:
    """The job (it must be of ``kind``, and ``reader``'s to read) and its last attempt's ranks."""
    job = jobs_svc.get_brief(store, job_id=job_id, reader=reader)
    if job.kind != kind:
        raise NotFound(f"job {job_id} is a {job.kind} job, not {kind}")
    return job, jobs_svc.results(store, job_id=job_id, reader=reader).ranks


def jobs_of(
    store: Store, kind: str, *, reader: Principal, limit: int = LIST_LIMIT
) -> list[tuple[JobOut, list[RankOut]]]:
    """The latest jobs of a kind that ``reader`` may read, each with its last attempt's ranks (one
    query for all the ranks)."""
    jobs = [
        j
        for j in jobs_svc.list_jobs(store, kind=kind, limit=limit, reader=reader)
        if may_read(reader, j.team, j.spec.visibility is Visibility.FLEET)
    ]
    if not jobs:
        return []
    A = t.assignments.c
    last = (
        sa.select(sa.func.max(t.attempts.c.id))
        .where(t.attempts.c.job_id.in_([j.id for j in jobs]))
        .group_by(t.attempts.c.job_id)
        .scalar_subquery()
    )
    ranks: dict[int, list[RankOut]] = {}
    with store.read() as conn:
        for row in conn.execute(sa.select(t.assignments).where(A.attempt_id.in_(last)).order_by(A.job_id, A.rank)):
            ranks.setdefault(row.job_id, []).append(rank_out(row))
    return [(j, ranks.get(j.id, [])) for j in jobs]


def job_head(job: JobOut) -> str:
    facts = [
        ("job", f'<a href="/ui/jobs/{job.id}" data-testid="job-link">{job.id}</a>'),
        ("name", e(job.name)),
        ("state", tag(job.state)),
        ("outcome", e(job.outcome)),
        ("owner", e(f"{job.owner} ({job.team})")),
        ("finished", e(when(job.finished_at))),
    ]
    return table(("", ""), facts, testid="job-facts").replace("<tr><th></th><th></th></tr>", "", 1)


def rank_heading(r: RankOut) -> str:
    board = f'<a href="/ui/boards/{e(r.board_id)}">{e(r.board_id)}</a>'
    return f'<h2 data-testid="rank-heading">Rank {r.rank} on {board}</h2>'


def no_result(r: RankOut) -> str:
    return f'<p class="muted" data-testid="no-result">rank {r.rank}: no result ({e(r.state)} {e(r.message)})</p>'


# ---- validation -----------------------------------------------------------------------------


def _worst(result: Mapping[str, Any]) -> str:
    return f"{e(result.get('worst_output'))} {num(result.get('worst_max_abs'))}".strip()


def validations_body(store: Store, *, reader: Principal) -> str:
    rows = []
    for job, ranks in jobs_of(store, "validate", reader=reader):
        res = [r.result for r in ranks if r.result.get("comparison")]
        rows.append(
            (
                job_link(job, "/ui/validations"), e(job.name), tag(job.state), str(len(ranks)),
                " ".join(tag("passed" if x["passed"] else "failed") for x in res),
                ", ".join(f"{x.get('failing_sets', 0)}/{x.get('sets', 0)}" for x in res),
                "; ".join(_worst(x) for x in res), e(when(job.finished_at)),
            )
        )  # fmt: skip
    if not rows:
        return '<p class="muted">no validate jobs yet</p>'
    return table(
        ("job", "name", "state", "boards", "verdict", "failing sets", "worst output, max abs error", "finished"),
        rows,
        testid="validation-list",
        row_testid="validation-row",
    )


def _tolerance(result: Mapping[str, Any], name: str) -> dict[str, Any]:
    """An output's tolerance: the histogram's record, else the failing report's, else none known."""
    hist = (result.get("error_histograms") or {}).get(name)
    if hist and hist.get("tolerance"):
        return dict(hist["tolerance"])
    for o in (result.get("failing_report") or {}).get("outputs", []):
        if o.get("name") == name and o.get("tolerance"):
            return dict(o["tolerance"])
    return {}


def bin_labels(edges: Sequence[float]) -> list[str]:
    """Labels of the validate workload's |error| bins: [0, e0), [e0, e1), ..., [e_last, inf)."""
    bounds = [0.0, *edges, math.inf]
    return [f"[{lo:.0e}, {hi:.0e})" if lo else f"[0, {hi:.0e})" for lo, hi in itertools.pairwise(bounds)]


def _error_histogram(result: Mapping[str, Any]) -> str:
    import plotly.graph_objects as go

    hists: Mapping[str, Any] = result.get("error_histograms") or {}
    if not hists:
        return (
            '<p class="muted" data-testid="no-histogram">this result keeps no error histogram '
            "(a validate run from before histograms were recorded)</p>"
        )
    names = list(hists)
    labels = bin_labels(hists[names[0]]["edges"])
    fig = go.Figure()
    for name in names:
        fig.add_trace(go.Bar(x=labels, y=hists[name]["counts"], name=name))
    fig.update_layout(
        barmode="group", xaxis={"title": "|actual - reference|"}, yaxis={"title": "elements", "type": "log"},
        margin={"l": 60, "r": 10, "t": 10, "b": 90},
    )  # fmt: skip
    rows = [
        (e(label), *(str(hists[n]["counts"][i]) for n in names)) for i, label in enumerate(labels)
    ]  # fmt: skip
    rows.append(("exactly 0 (in the first bin)", *(str(hists[n].get("zero", 0)) for n in names)))
    rows.append(("not finite (NaN or inf)", *(str(hists[n].get("nonfinite", 0)) for n in names)))
    return (
        f'<div data-testid="error-histogram">{chart(fig, height="340px")}</div>'
        + "<details><summary>histogram counts</summary>"
        + table(("|error| bin", *names), rows, testid="error-histogram-table", row_testid="histogram-row")
        + "</details>"
    )


def _validation_rank(r: RankOut) -> str:
    res = r.result
    agg = res.get("comparison")
    head = (
        f'<h2 data-testid="rank-heading">Rank {r.rank} on <a href="/ui/boards/{e(r.board_id)}">{e(r.board_id)}</a></h2>'
    )
    if not agg:
        return head + no_result(r)
    verdict = "passed" if res["passed"] else "failed"
    ref = res.get("reference") or {}
    out = [
        head,
        f'<p><span data-testid="validation-verdict" data-verdict="{verdict}">{tag(verdict)}</span> '
        f"{res.get('failing_sets', 0)} of {res.get('sets', 0)} input sets failed · reference {e(ref.get('kind'))} "
        f"{e(ref.get('version', ''))} · tolerances atol {e(', '.join(res['tolerances']['atol']) or 'default')}, "
        f"rtol {e(', '.join(res['tolerances']['rtol']) or 'default')}</p>",
    ]
    rows = []
    for o in agg.get("outputs", []):
        tol = _tolerance(res, o["name"])
        status = "passed" if o["passed"] else "failed"
        rows.append(
            (
                f'<span data-testid="output-name">{e(o["name"])}</span>',
                f'<span data-testid="output-status" data-status="{status}">{tag(status)}</span>',
                f"{o['sets_failed']}/{o['sets']}", f"{o['failing']}/{o['elements']}",
                f'<span data-testid="max-abs">{num(o.get("max_abs"))}</span>',
                f'<span data-testid="mean-abs">{num(o.get("mean_abs"))}</span>',
                num(o.get("p99_abs")),
                f'<span data-testid="max-rel">{num(o.get("max_rel"))}</span>',
                f'<span data-testid="atol">{num(tol.get("atol"))}</span>',
                f'<span data-testid="rtol">{num(tol.get("rtol"))}</span>',
                num(o.get("cosine")), e("; ".join(o.get("messages", []))),
            )
        )  # fmt: skip
    for name, sets in (agg.get("missing") or {}).items():
        rows.append((e(name), tag("failed"), f"missing in {sets} sets", "", "", "", "", "", "", "", "", "missing"))
    out.append(
        table(
            (
                "output",
                "status",
                "sets failed",
                "elements failing",
                "max abs err",
                "mean abs err",
                "p99 abs err",
                "max rel err",
                "atol",
                "rtol",
                "min cosine",
                "messages",
            ),
            rows,
            testid="validation-outputs",
            row_testid="output-row",
        )
    )
    out.append("<h3>|error| histogram, every input set</h3>" + _error_histogram(res))
    if res.get("layerwise"):
        summary = res["layerwise"].get("summary") or res["layerwise"].get("error")
        out.append(f'<p data-testid="layerwise">layer-wise: {e(summary)}</p>')
    return "".join(out)


def validation_page(store: Store, *, job_id: int, reader: Principal) -> tuple[str, str]:
    job, ranks = finished_ranks(store, job_id=job_id, kind="validate", reader=reader)
    body = job_head(job) + "".join(_validation_rank(r) for r in ranks)
    return f"Validation report: job {job.id}", body


# ---- benchmarks -----------------------------------------------------------------------------


def benchmarks_body(store: Store, *, reader: Principal) -> str:
    rows = []
    for job, ranks in jobs_of(store, "bench", reader=reader):
        for r in ranks or [None]:  # type: ignore[list-item]
            res = r.result if r is not None else {}
            lat = res.get("latency_ms") or {}
            rows.append(
                (
                    job_link(job, "/ui/benchmarks"), e(job.name), tag(job.state),
                    "" if r is None else e(r.board_id), e(res.get("scenario")),
                    tag(res["verdict"].lower()) if res.get("verdict") else "",
                    *(num(lat.get(p)) for p in ("p50", "p90", "p99")), num(res.get("queries_per_s")),
                    e(when(job.finished_at)),
                )
            )  # fmt: skip
    if not rows:
        return '<p class="muted">no bench jobs yet</p>'
    return table(
        ("job", "name", "state", "board", "scenario", "verdict", "p50 ms", "p90 ms", "p99 ms", "queries/s", "finished"),
        rows,
        testid="bench-list",
        row_testid="bench-row",
    )


def _latency_chart(res: Mapping[str, Any]) -> str:
    import plotly.graph_objects as go

    lat = res.get("latency_ms") or {}
    hist = res.get("latency_histogram") or {}
    edges, counts = hist.get("edges_ms") or [], hist.get("counts") or []
    fig = go.Figure()
    if counts:
        # Bins are even in log10(ms): drawn on a linear axis of log10(ms), ticked in ms.
        logs = [math.log10(x) for x in edges]
        centres = [(a + b) / 2 for a, b in itertools.pairwise(logs)]
        fig.add_trace(go.Bar(x=centres, y=counts, width=[b - a for a, b in itertools.pairwise(logs)],
                             name="queries", marker={"color": "#2f6fd6"},
                             customdata=list(itertools.pairwise(edges)),
                             hovertemplate=HOVER))  # fmt: skip
        decades = range(math.floor(logs[0]), math.ceil(logs[-1]) + 1)
        fig.update_layout(
            xaxis={"title": "latency (ms), log scale", "tickvals": list(decades),
                   "ticktext": [f"{10.0**k:g}" for k in decades]},
            yaxis={"title": "queries"},
        )  # fmt: skip
        top = max(counts)
        for p, colour in zip(("p50", "p90", "p99"), ("#2e9e44", "#f0b429", "#d64545"), strict=True):
            if lat.get(p):
                x = math.log10(lat[p])
                line = {"color": colour, "dash": "dash"}
                fig.add_trace(go.Scatter(x=[x, x], y=[0, top], mode="lines+text", name=p, text=["", p],
                                         textposition="top center", line=line))  # fmt: skip
        note = ""
    else:
        names = [k for k in ("min", *PERCENTILES, "max") if lat.get(k) is not None]
        fig.add_trace(go.Bar(x=names, y=[lat[k] for k in names], name="latency ms"))
        fig.update_layout(yaxis={"title": "latency (ms)"})
        note = (
            '<p class="muted" data-testid="no-histogram">this result keeps percentiles only (a bench run from '
            "before latency histograms were recorded)</p>"
        )
    fig.update_layout(margin={"l": 60, "r": 10, "t": 20, "b": 50}, showlegend=False)
    return note + f'<div data-testid="latency-chart">{chart(fig, height="340px")}</div>'


def _bench_rank(r: RankOut) -> str:
    res = r.result
    head = (
        f'<h2 data-testid="rank-heading">Rank {r.rank} on <a href="/ui/boards/{e(r.board_id)}">{e(r.board_id)}</a></h2>'
    )
    if "latency_ms" not in res:
        return head + no_result(r)
    verdict = str(res.get("verdict", "")).lower()
    lat = res["latency_ms"]
    reasons = "; ".join(res.get("reasons") or [])
    out = [
        head,
        f'<p><span data-testid="bench-verdict" data-verdict="{e(verdict)}">{tag(verdict)}</span> '
        f"{e(res.get('scenario'))}: {res.get('queries')} queries in {num(res.get('duration_s'))} s · "
        f'<span data-testid="queries-per-s">{num(res.get("queries_per_s"))}</span> queries/s · '
        f"{num(res.get('samples_per_s'))} samples/s{' · ' + e(reasons) if reasons else ''}</p>",
    ]
    unsupported = set(res.get("unsupported_percentiles") or [])
    rows = [
        (
            e(k) + (" (too few queries to claim)" if k in unsupported else ""),
            f'<span data-testid="percentile-{e(k)}">{num(lat.get(k))}</span>',
        )
        for k in (*PERCENTILES, "mean", "min", "max")
    ]
    out.append(table(("latency", "ms"), rows, testid="latency-percentiles", row_testid="percentile-row"))
    out.append("<h3>Latency distribution</h3>" + _latency_chart(res))
    return "".join(out)


def benchmark_page(store: Store, *, job_id: int, reader: Principal) -> tuple[str, str]:
    job, ranks = finished_ranks(store, job_id=job_id, kind="bench", reader=reader)
    body = job_head(job) + "".join(_bench_rank(r) for r in ranks)
    return f"Benchmark: job {job.id}", body
