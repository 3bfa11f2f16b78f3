"""The pages of work: queues and jobs (with their logs), pipeline runs (with their DAG), and
firmware rollouts (with their waves and gate figures). They read through the API's services."""

from __future__ import annotations

from collections import Counter, defaultdict

import sqlalchemy as sa

from fleetyard.domain.auth import Principal
from fleetyard.domain.job import JobState
from fleetyard.protocol.api import PipelineRunOut, RolloutDetail
from fleetyard.server.dashboard.html import e, kv, qs, table, tag, when
from fleetyard.server.dashboard.results import RESULT_PAGES
from fleetyard.server.services import jobs as jobs_svc
from fleetyard.server.services import pipelines as pipelines_svc
from fleetyard.server.services import rollouts as rollouts_svc
from fleetyard.store import tables as t
from fleetyard.store.db import Store

LOG_REFRESH_S = 3


def jobs_body(
    store: Store, *, state: str | None, team: str | None, kind: str | None, limit: int, reader: Principal
) -> str:
    J = t.jobs.c
    with store.read() as conn:
        counts: dict[str, int] = dict(conn.execute(sa.select(J.state, sa.func.count()).group_by(J.state)).all())
        queues = conn.execute(
            sa.select(J.team, sa.func.count()).where(J.state == str(JobState.QUEUED)).group_by(J.team).order_by(J.team)
        ).all()
    jobs = jobs_svc.list_jobs(store, state=state, team=team, kind=kind, limit=limit, reader=reader)
    chips = " · ".join(
        f'<a href="/ui/jobs{qs(state=s, team=team, kind=kind)}">{tag(s)}</a> {counts[s]}' for s in sorted(counts)
    )
    out = [
        f'<p>{chips or "no jobs"} · <a href="/ui/jobs">all</a></p>',
        '<form method="get" action="/ui/jobs">'
        f'state <input name="state" value="{e(state)}" size="10"> team <input name="team" value="{e(team)}" size="12"> '
        f'kind <input name="kind" value="{e(kind)}" size="10"> <button>filter</button></form>',
    ]
    if queues:
        out.append("<h2>Queued per team</h2>" + table(("team", "queued"), ((e(q), str(n)) for q, n in queues)))
    out.append(f"<h2>Jobs (latest {len(jobs)})</h2>")
    out.append(
        table(
            ("id", "name", "kind", "state", "team", "owner", "priority", "submitted", "why pending / message"),
            (
                (
                    f'<a href="/ui/jobs/{j.id}">{j.id}</a>', e(j.name), e(j.kind), tag(j.state), e(j.team),
                    e(j.owner), str(j.priority), e(when(j.submitted_at)),
                    e(j.pending_reason if j.state == JobState.QUEUED else j.message),
                )
                for j in jobs
            ),
            testid="jobs-table",
            row_testid="job-row",
        )
    )  # fmt: skip
    return "".join(out)


def job_page(store: Store, *, job_id: int, reader: Principal) -> tuple[str, str, bool]:
    """The job page's title, body, and whether it is still going (the page refreshes itself)."""
    job = jobs_svc.get(store, job_id=job_id, reader=reader)
    logs = jobs_svc.logs(store, job_id=job_id, reader=reader)
    going = not JobState(job.state).finished
    facts = {
        "name": job.name, "kind": job.kind, "team": job.team, "owner": job.owner, "priority": job.priority,
        "submitted": when(job.submitted_at), "started": when(job.started_at), "finished": when(job.finished_at),
        "outcome": job.outcome, "message": job.message, "attempts": job.attempts, "infra retries": job.infra_retries,
    }  # fmt: skip
    out = [f'<p data-testid="job-state" data-state="{e(job.state)}">{tag(job.state)}</p>']
    if job.state == JobState.QUEUED:
        out.append(f"<p><b>Why pending:</b> {e(job.pending_reason or 'not yet looked at by the scheduler')}</p>")
    out.append('<div data-testid="job-facts">' + kv({k: v for k, v in facts.items() if v not in (None, "")}) + "</div>")
    if job.kind in RESULT_PAGES:
        base, label = RESULT_PAGES[job.kind]
        target = f"{base}?a={job.id}" if job.kind == "eval" else f"{base}/{job.id}"
        out.append(f'<p>Results: <a href="{target}" data-testid="job-results-link">{e(label)}</a></p>')
    for a in job.attempt_list:
        out.append(f"<h2>Attempt {a.number} {tag(a.state)} {e(a.outcome)}</h2>")
        out.append(
            table(
                ("rank", "board", "host", "state", "outcome", "exit", "message", "result"),
                (
                    (
                        str(r.rank), f'<a href="/ui/boards/{e(r.board_id)}">{e(r.board_id)}</a>', e(r.host_id),
                        tag(r.state), e(r.outcome), e(r.exit_code), e(r.message), kv(r.result) if r.result else "",
                    )
                    for r in a.ranks
                ),
            )
        )  # fmt: skip
    live = f" (live: this page reloads every {LOG_REFRESH_S} s while the job runs)" if going else ""
    out.append(f"<h2>Logs{live}</h2>")
    text = "".join(f"[a{c.attempt_id} r{c.rank}] {c.data}" for c in logs.chunks)
    out.append(f'<pre id="logs">{e(text) or "no output yet"}</pre>')
    return f"Job {job.id}" + (f" ({job.name})" if job.name else ""), "".join(out), going


def pipelines_body(store: Store, *, state: str | None, reader: Principal) -> str:
    runs = pipelines_svc.list_runs(store, reader=reader, state=state, limit=100)
    return table(
        ("run", "name", "state", "owner", "team", "started", "finished", "message"),
        (
            (
                f'<a href="/ui/pipelines/{r.id}">{r.id}</a>', e(r.name), tag(r.state), e(r.owner), e(r.team),
                e(when(r.created_at)), e(when(r.finished_at)), e(r.message),
            )
            for r in runs
        ),
    )  # fmt: skip


def _levels(needs: dict[str, list[str]]) -> dict[str, int]:
    """Each stage's depth in the DAG: 0 for a stage that needs none, else one more than its deepest need."""
    depth: dict[str, int] = {}

    def of(stage: str, seen: frozenset[str]) -> int:
        if stage not in depth:
            before = [of(n, seen | {stage}) for n in needs.get(stage, []) if n in needs and n not in seen]
            depth[stage] = 1 + max(before) if before else 0
        return depth[stage]

    for s in needs:
        of(s, frozenset())
    return depth


def _stage_state(states: list[str]) -> str:
    for s in ("failed", "running", "waiting"):
        if s in states:
            return s
    return states[0] if len(set(states)) == 1 else "running"


def dag_svg(run: PipelineRunOut) -> str:
    """The run's stages as boxes in columns by depth, an arrow from each need, coloured by state."""
    from fleetyard.server.dashboard.html import STATE_COLOURS

    levels = _levels(run.needs)
    states: dict[str, list[str]] = defaultdict(list)
    for i in run.stages:
        states[i.stage].append(i.state)
    columns: dict[int, list[str]] = defaultdict(list)
    for stage in run.needs:
        columns[levels[stage]].append(stage)
    w, h, dx, dy = 160, 36, 200, 56
    pos = {s: (10 + lv * dx, 10 + k * dy) for lv, col in columns.items() for k, s in enumerate(col)}
    width = 20 + dx * (max(columns, default=0) + 1)
    height = 20 + dy * max((len(c) for c in columns.values()), default=1)
    parts = [f'<svg width="{width}" height="{height}" class="dag" data-testid="dag">']
    for stage, needs in run.needs.items():
        x2, y2 = pos[stage]
        for n in needs:
            if n in pos:
                x1, y1 = pos[n]
                parts.append(
                    f'<line x1="{x1 + w}" y1="{y1 + h // 2}" x2="{x2}" y2="{y2 + h // 2}" '
                    'stroke="#888" stroke-width="2"/>'
                )
    for stage, (x, y) in pos.items():
        st = _stage_state(states.get(stage) or ["waiting"])
        colour = STATE_COLOURS.get(st, "#ccc")
        count = len(states.get(stage, []))
        label = f"{stage} x{count}" if count > 1 else stage
        parts.append(
            f'<g><title>{e(stage)}: {e(st)}</title><rect x="{x}" y="{y}" width="{w}" height="{h}" rx="5" '
            f'fill="{colour}" stroke="#333"/><text x="{x + 8}" y="{y + 22}" fill="#fff" '
            f'style="text-shadow:0 0 2px #000" font-size="13">{e(label[:22])}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)


def pipeline_page(store: Store, *, run_id: int, reader: Principal) -> tuple[str, str, bool]:
    run = pipelines_svc.get(store, run_id=run_id, reader=reader)
    levels = _levels(run.needs)
    order = sorted(run.stages, key=lambda i: (levels.get(i.stage, 0), i.stage, i.name))
    out = [
        f"<p>{tag(run.state)} {e(run.message)}</p>",
        kv({"owner": run.owner, "team": run.team, "started": when(run.created_at), "finished": when(run.finished_at)}),
        "<h2>DAG</h2>",
        dag_svg(run),
        "<h2>Stages</h2>",
        table(
            ("depth", "stage instance", "needs", "state", "attempts", "job", "metrics", "message"),
            (
                (
                    str(levels.get(i.stage, 0)), e(i.name), e(", ".join(run.needs.get(i.stage, []))),
                    tag(i.state) + (" (condition false)" if i.gated else ""), str(i.attempts),
                    f'<a href="/ui/jobs/{i.job_id}">{i.job_id}</a>' if i.job_id else "",
                    kv(i.metrics) if i.metrics else "", e(i.message),
                )
                for i in order
            ),
        ),
    ]  # fmt: skip
    return f"Pipeline run {run.id}: {run.name}", "".join(out), run.state == "running"


def _wave_rows(r: RolloutDetail) -> list[tuple[str, ...]]:
    return [
        (
            str(w.index), str(w.boards), e(", ".join(f"{k} {v}" for k, v in sorted(w.steps.items()))),
            e(when(w.started_at)), e(when(w.flashed_at)),
            "" if w.verdict is None else tag("succeeded" if w.verdict else "failed"),
            kv(w.figures) if w.figures else "", kv(w.gate) if w.gate else "", e("; ".join(w.reasons)),
        )
        for w in r.wave_records
    ]  # fmt: skip


def rollouts_body(store: Store, *, limit: int = 20) -> str:
    rollouts = rollouts_svc.list_rollouts(store)
    rollouts.sort(key=lambda r: r.id, reverse=True)
    if not rollouts:
        return '<p class="muted">no firmware rollouts yet</p>'
    out = [
        table(
            ("id", "generation", "version", "state", "wave", "boards per step", "by", "started", "message"),
            (
                (
                    f'<a href="#rollout-{r.id}">{r.id}</a>', e(r.generation), e(r.version), tag(r.state),
                    f"{r.wave + 1}/{r.waves}", e(", ".join(f"{k} {v}" for k, v in sorted(r.counts.items()))),
                    e(r.created_by), e(when(r.created_at)), e(r.message),
                )
                for r in rollouts
            ),
        )
    ]  # fmt: skip
    for brief in rollouts[:limit]:
        r = rollouts_svc.get(store, rollout_id=brief.id)
        states = Counter(b.state for b in r.boards if b.state)
        out.append(
            f'<h2 id="rollout-{r.id}">Rollout {r.id}: {e(r.generation)} → {e(r.version)} {tag(r.state)}</h2>'
            f"<p>{e(r.reason)} · control boards: {sum(b.control for b in r.boards)} · boards now: "
            + e(", ".join(f"{k} {v}" for k, v in sorted(states.items())))
            + "</p>"
            + table(
                ("wave", "boards", "steps", "started", "flashed", "verdict", "figures", "gate", "reasons"),
                _wave_rows(r),
            )
        )
    return "".join(out)
