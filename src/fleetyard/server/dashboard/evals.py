"""The result pages of evaluations: ``eval`` jobs side by side and compared across versions, and
robotics rollouts (``rollout`` jobs: the board arm against the control arm, episode by episode).

Eval metrics are the ranks' results combined by :func:`fleetyard.evaluation.aggregate`, and a
comparison is :func:`fleetyard.evaluation.compare_records` over the ranks' ``samples.jsonl``
(read from the blob store): the same functions, hence the same numbers and significance, as
``fleetyard eval show|compare``. A rollout's success intervals are
:func:`fleetyard.workloads.policy_rollout.wilson_interval` over its ranks' counts; its episodes
and trajectories come from the ranks' ``episodes.jsonl`` and ``trajectories.npz``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from fleetyard.domain.auth import Principal
from fleetyard.errors import BadRequest
from fleetyard.evaluation import aggregate, compare_records
from fleetyard.protocol.api import JobOut, RankOut
from fleetyard.server.dashboard.html import chart, e, table, tag, when
from fleetyard.server.dashboard.results import finished_ranks, job_head, job_link, jobs_of, num, pct
from fleetyard.store.blobs import BlobStore
from fleetyard.store.db import Store
from fleetyard.workloads.eval import SAMPLES_FILE
from fleetyard.workloads.policy_rollout import EPISODES_FILE, TRAJECTORIES_FILE, wilson_interval

MAX_COMPARED = 8  # versions on one comparison page
MAX_TRAJECTORIES = 4  # seeds plotted on a rollout page
MAX_OBS_DIMS = 8
MAX_POINTS = 1000  # steps plotted per trajectory (evenly thinned beyond)


# ---- evals ----------------------------------------------------------------------------------


def eval_metrics(ranks: Sequence[RankOut]) -> dict[str, Any] | None:
    """The job's metrics as ``fleetyard eval show`` gives them; None unless every rank finished."""
    done = [r for r in ranks if r.outcome == "success" and "tally" in (r.result or {})]
    if not done or len(done) != len(ranks):
        return None
    try:
        return aggregate([r.result for r in done])
    except ValueError:
        return None


def evals_body(store: Store, *, reader: Principal, a: int | None = None) -> str:
    rows = []
    for job, ranks in jobs_of(store, "eval", reader=reader):
        m = eval_metrics(ranks)
        pick_a = (
            f'<input type="radio" name="a" value="{job.id}"{" checked" if job.id == a else ""} data-testid="pick-a">'
        )
        pick_b = f'<input type="checkbox" name="b" value="{job.id}" data-testid="pick-b">'
        rows.append(
            (
                pick_a if m else "", pick_b if m else "", f'<a href="/ui/evals/compare?a={job.id}">{job.id}</a>',
                e(job.name),
                tag(job.state), str(len(ranks)),
                *(("", "", "", "", "", "") if m is None else (
                    str(m["samples"]), num(m["top1"], 4), num(m["top5"], 4), num(m["mse"]),
                    f'<code>{e(str(m["artifact"])[:12])}</code>',
                    f'<code>{e(str(m["dataset"].get("sha256"))[:12])}</code>',
                )),
                e(when(job.finished_at)),
            )
        )  # fmt: skip
    if not rows:
        return '<p class="muted">no eval jobs yet</p>'
    return (
        "<p>Pick a baseline (A) and one or more versions to compare with it (B), on the same data set: "
        "top-1 by McNemar's exact test, MSE by a paired bootstrap interval, as <code>fleetyard eval compare</code>."
        "</p>"
        '<form method="get" action="/ui/evals/compare" data-testid="eval-compare-form">'
        + table(
            (
                "A",
                "B",
                "job",
                "name",
                "state",
                "boards",
                "samples",
                "top1",
                "top5",
                "mse",
                "artifact",
                "data set",
                "finished",
            ),
            rows,
            testid="eval-list",
            row_testid="eval-row",
        )
        + '<button data-testid="eval-compare-button">compare</button></form>'
    )


def _records(blobs: BlobStore, job_id: int, ranks: Sequence[RankOut]) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for r in ranks:
        sha = (r.outputs or {}).get(SAMPLES_FILE)
        if sha is None or not blobs.has(sha):
            raise BadRequest(f"job {job_id} rank {r.rank} kept no {SAMPLES_FILE}: its samples cannot be paired")
        with blobs.path(sha).open() as f:
            records.extend(json.loads(line) for line in f if line.strip())
    return records


def verdict(significant: bool) -> str:
    """As the CLI says it."""
    return "significant at 0.05" if significant else "not significant at 0.05"


def _comparison_table(a: int, b: int, cmp: Mapping[str, Any]) -> str:
    rows = []
    t = cmp.get("top1")
    if t is not None:
        rows.append(("top1", t, f"p = {t['p_value']:.4g} (A only {t['a_only']}, B only {t['b_only']})", 4))
    m = cmp.get("mse")
    if m is not None:
        lo, hi = m["ci95"]
        rows.append(("mse", m, f"95% CI of the per-sample delta [{lo:.4g}, {hi:.4g}]", 6))
    cells = [
        (
            f'<span data-testid="metric-name">{name}</span>', num(x["a"], digits), num(x["b"], digits),
            f'<span data-testid="metric-delta">{x["delta"]:+.{digits}g}</span>', e(x["test"]),
            f'<span data-testid="metric-significance">{e(detail)}</span>',
            f'<span data-testid="metric-verdict" data-significant="{str(x["significant"]).lower()}">'
            f"{tag('differs' if x['significant'] else 'same')} {verdict(x['significant'])}</span>",
        )
        for name, x, detail, digits in rows
    ]  # fmt: skip
    body = table(("metric", f"A (job {a})", f"B (job {b})", "delta B - A", "test", "figures", "verdict"), cells,
                 testid="comparison-table", row_testid="metric-row")  # fmt: skip
    notes = [f"{cmp['paired']} paired samples", f"{cmp['outputs_identical']} identical outputs"]
    if cmp["only_a"] or cmp["only_b"]:
        notes.append(f"{cmp['only_a']} only in A, {cmp['only_b']} only in B")
    if cmp["labels_differ"]:
        notes.append(f"warning: labels differ on {cmp['labels_differ']} samples (generated data labelled per artifact)")
    return f"<p>{e(' · '.join(notes))}</p>{body}"


def compare_page(store: Store, blobs: BlobStore, *, a: int, b: Sequence[int], reader: Principal) -> str:
    """B (one or more) against A: each comparison as ``fleetyard eval compare A B`` reports it."""
    import plotly.graph_objects as go

    ids = [a, *[x for x in dict.fromkeys(b) if x != a]][: MAX_COMPARED + 1]
    jobs: dict[int, tuple[JobOut, list[RankOut], dict[str, Any] | None]] = {}
    for job_id in ids:
        job, ranks = finished_ranks(store, job_id=job_id, kind="eval", reader=reader)
        jobs[job_id] = (job, ranks, eval_metrics(ranks))
    names = ["top1", "top5", "mse"]
    summary = [
        (
            f'<a href="/ui/jobs/{i}">{i}</a>' + (" (A)" if i == a else ""), e(job.name), tag(job.state),
            *(("", "", "", "") if m is None else (str(m["samples"]), *(num(m[n], 6) for n in names))),
            *([] if m is None else [e(", ".join(f"{k} {num(v, 4)}" for k, v in sorted(m["user"].items())))]),
        )
        for i, (job, _, m) in jobs.items()
    ]  # fmt: skip
    out = ["<h2>Metrics</h2>", table(("job", "name", "state", "samples", *names, "user metrics"), summary,
                                     testid="eval-metrics", row_testid="eval-metrics-row")]  # fmt: skip
    fig = go.Figure()
    for n in ("top1", "top5"):
        fig.add_trace(go.Bar(x=[f"job {i}" for i in jobs], y=[None if m is None else m[n] for *_, m in jobs.values()],
                             name=n))  # fmt: skip
    fig.update_layout(barmode="group", yaxis={"title": "accuracy", "range": [0, 1]},
                      margin={"l": 60, "r": 10, "t": 10, "b": 40})  # fmt: skip
    out.append(f'<div data-testid="eval-metrics-chart">{chart(fig, height="280px")}</div>')
    _, base_ranks, base_m = jobs[a]
    if base_m is None:
        out.append(f'<p class="err" data-testid="compare-error">job {a} is not a finished eval</p>')
        return "".join(out)
    if len(ids) == 1:
        out.append(
            '<p class="muted">pick one or more versions to compare on the <a href="/ui/evals">evals page</a></p>'
        )
        return "".join(out)
    base_records = _records(blobs, a, base_ranks)
    for other in ids[1:]:
        job, ranks, m = jobs[other]
        out.append(f'<section data-testid="eval-comparison" data-a="{a}" data-b="{other}">'
                   f"<h2>Job {other} (B) against job {a} (A)</h2>")  # fmt: skip
        if m is None:
            out.append(f'<p class="err" data-testid="compare-error">job {other} is not a finished eval</p></section>')
            continue
        if m["dataset"]["sha256"] != base_m["dataset"]["sha256"]:
            out.append(f'<p class="err" data-testid="compare-error">jobs {a} and {other} evaluated different data '
                       "sets: not comparable</p></section>")  # fmt: skip
            continue
        try:
            cmp = compare_records(base_records, _records(blobs, other, ranks))
        except (ValueError, BadRequest) as exc:
            msg = exc.message if isinstance(exc, BadRequest) else str(exc)
            out.append(f'<p class="err" data-testid="compare-error">{e(msg)}</p></section>')
            continue
        out.append(_comparison_table(a, other, cmp) + "</section>")
    return "".join(out)


# ---- robotics rollouts ----------------------------------------------------------------------


def _arm_counts(ranks: Sequence[RankOut], arm: str) -> tuple[int, int, list[float]]:
    n = k = 0
    means: list[float] = []
    for r in ranks:
        s = (r.result or {}).get(arm)
        if isinstance(s, Mapping) and "episodes" in s:
            n += int(s["episodes"])
            k += int(s["successes"])
            if s.get("return_mean") is not None:
                means.extend([float(s["return_mean"])] * int(s["episodes"]))
    return k, n, means


def rollouts_body(store: Store, *, reader: Principal) -> str:
    rows = []
    for job, ranks in jobs_of(store, "rollout", reader=reader):
        res = [r.result for r in ranks if "board" in (r.result or {})]
        arms = []
        for arm in ("board", "control"):
            k, n, _ = _arm_counts(ranks, arm)
            arms.append(f"{k}/{n} ({pct(k / n)})" if n else "")
        verdicts = ", ".join(sorted({str((x.get("comparison") or {}).get("verdict", "")) for x in res} - {""}))
        rows.append((job_link(job, "/ui/robotics"), e(job.name), tag(job.state),
                     e(res[0]["env"]) if res else "", *arms, e(verdicts), e(when(job.finished_at))))  # fmt: skip
    if not rows:
        return '<p class="muted">no robotics rollout jobs yet</p>'
    return table(
        ("job", "name", "state", "env", "board arm success", "control arm success", "verdict", "finished"),
        rows,
        testid="rollout-list",
        row_testid="rollout-row",
    )


def _episodes(blobs: BlobStore, ranks: Sequence[RankOut]) -> list[dict[str, Any]]:
    """Every episode of both arms: the ranks' ``episodes.jsonl``, else the board arm's in the result."""
    out: list[dict[str, Any]] = []
    for r in ranks:
        sha = (r.outputs or {}).get(EPISODES_FILE)
        if sha is not None and blobs.has(sha):
            with blobs.path(sha).open() as f:
                out.extend(json.loads(line) for line in f if line.strip())
        else:
            out.extend({**ep, "arm": "board"} for ep in (r.result or {}).get("episodes", []))
    return out


def _trajectory_charts(blobs: BlobStore, ranks: Sequence[RankOut], seeds: Sequence[int]) -> str:
    """Observations over steps for a few seeds (diverged ones first): board arm solid, control dashed."""
    import numpy as np
    import plotly.graph_objects as go

    parts: list[str] = []
    for r in ranks:
        sha = (r.outputs or {}).get(TRAJECTORIES_FILE)
        if sha is None or not blobs.has(sha):
            continue
        with np.load(blobs.path(sha), allow_pickle=False) as z:
            keys = set(z.files)
            for seed in seeds:
                if f"board_seed{seed}_observations" not in keys or len(parts) >= MAX_TRAJECTORIES:
                    continue
                fig = go.Figure()
                for arm, dash in (("board", "solid"), ("control", "dash")):
                    key = f"{arm}_seed{seed}_observations"
                    if key not in keys:
                        continue
                    obs = np.asarray(z[key], dtype=np.float64)
                    obs = obs.reshape(len(obs), -1)[:, :MAX_OBS_DIMS]
                    step = max(1, -(-len(obs) // MAX_POINTS))
                    xs = np.arange(len(obs))[::step]
                    for d in range(obs.shape[1]):
                        fig.add_trace(go.Scatter(x=xs, y=obs[::step, d], mode="lines", name=f"{arm} obs[{d}]",
                                                 line={"dash": dash, "width": 1.5}))  # fmt: skip
                fig.update_layout(xaxis={"title": "step"}, yaxis={"title": "observation"},
                                  margin={"l": 60, "r": 10, "t": 10, "b": 40})  # fmt: skip
                parts.append(f'<h3>Seed {seed}</h3><div data-testid="trajectory-chart" data-seed="{seed}">'
                             f'{chart(fig, height="300px")}</div>')  # fmt: skip
    if not parts:
        return '<p class="muted" data-testid="no-trajectories">no trajectories kept</p>'
    return "".join(parts)


def rollout_page(store: Store, blobs: BlobStore, *, job_id: int, reader: Principal) -> tuple[str, str]:
    import plotly.graph_objects as go

    job, ranks = finished_ranks(store, job_id=job_id, kind="rollout", reader=reader)
    results = [r.result for r in ranks if "board" in (r.result or {})]
    out = [job_head(job)]
    if not results:
        return f"Robotics rollout: job {job.id}", "".join(out) + "".join(
            f'<p class="muted" data-testid="no-result">rank {r.rank}: no result ({e(r.state)} {e(r.message)})</p>'
            for r in ranks
        )
    first = results[0]
    threshold = first.get("success_threshold")
    out.append(f"<p>{e(first['env'])} · success rule {e(first['success_rule'])}"
               + (f" (return ≥ {num(threshold)})" if threshold is not None else "")
               + f" · action {e(first['action'])} · {len(ranks)} board(s)</p>")  # fmt: skip
    arms = []
    for arm in ("board", "control"):
        k, n, means = _arm_counts(ranks, arm)
        if not n:
            continue
        lo, hi = wilson_interval(k, n)
        arms.append(
            (
                f'<span data-testid="arm-name">{arm}</span>', str(n), f'<span data-testid="successes">{k}</span>',
                f'<span data-testid="success-rate">{k / n:.4f}</span>',
                f'<span data-testid="success-ci">[{lo:.4f}, {hi:.4f}]</span>',
                num(sum(means) / len(means) if means else None),
            )
        )  # fmt: skip
    out.append("<h2>Success rate (Wilson 95% interval)</h2>")
    out.append(table(("arm", "episodes", "successes", "success rate", "95% interval", "mean return"), arms,
                     testid="rollout-success", row_testid="arm-row"))  # fmt: skip
    cmps = [(r.rank, r.result["comparison"]) for r in ranks if "comparison" in (r.result or {})]
    if cmps:
        out.append("<h2>Board arm against control arm</h2>")
        out.append(
            table(
                ("rank", "verdict", "diverged seeds", "mean return diff", "sign test p"),
                (
                    (
                        str(rank), f'<span data-testid="rollout-verdict">{e(c["verdict"])}</span>',
                        f"{c['diverged']}: {e(', '.join(map(str, c['diverged_seeds'])))}",
                        num(c.get("return_diff_mean")), num(c.get("sign_test_p")),
                    )
                    for rank, c in cmps
                ),
                testid="rollout-comparison",
                row_testid="rollout-comparison-row",
            )
        )  # fmt: skip
    episodes = _episodes(blobs, ranks)
    by_seed: dict[int, dict[str, dict[str, Any]]] = {}
    for ep in episodes:
        by_seed.setdefault(int(ep["seed"]), {})[str(ep.get("arm", "board"))] = ep
    rows = []
    for seed, both in sorted(by_seed.items()):
        b, c = both.get("board", {}), both.get("control", {})
        diverged = b.get("diverged_at", c.get("diverged_at"))
        rows.append(
            (
                str(seed), f'<span data-testid="board-return">{num(b.get("return"))}</span>',
                f'<span data-testid="board-success">{num(b.get("success"))}</span>', num(b.get("length")),
                f'<span data-testid="control-return">{num(c.get("return"))}</span>',
                f'<span data-testid="control-success">{num(c.get("success"))}</span>', num(c.get("length")),
                f'<span data-testid="diverged-at">{"" if diverged is None else diverged}</span>',
            )
        )  # fmt: skip
    fig = go.Figure()
    for arm_name in ("board", "control"):
        xs = [s for s, arm in sorted(by_seed.items()) if arm_name in arm]
        if xs:
            fig.add_trace(go.Bar(x=[str(s) for s in xs], y=[by_seed[s][arm_name]["return"] for s in xs], name=arm_name))
    fig.update_layout(barmode="group", xaxis={"title": "seed", "type": "category"}, yaxis={"title": "return"},
                      margin={"l": 60, "r": 10, "t": 10, "b": 40})  # fmt: skip
    out.append(f"<h2>Episodes ({len(by_seed)})</h2>")
    out.append(f'<div data-testid="returns-chart">{chart(fig, height="280px")}</div>')
    out.append(
        table(
            (
                "seed",
                "board return",
                "board success",
                "board steps",
                "control return",
                "control success",
                "control steps",
                "diverged at step",
            ),
            rows,
            testid="episode-table",
            row_testid="episode-row",
        )
    )
    diverged_first = sorted(by_seed, key=lambda s: (by_seed[s].get("board", {}).get("diverged_at") is None, s))
    out.append(f"<h2>Trajectories (up to {MAX_TRAJECTORIES} seeds, diverged ones first)</h2>")
    out.append(_trajectory_charts(blobs, ranks, diverged_first))
    return f"Robotics rollout: job {job.id}", "".join(out)
