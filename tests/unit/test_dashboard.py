"""The web dashboard (/ui): pages behind the tokens, what they show against the API, the drain
form, the login cookie, and plotly served from this server (no network)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from tests.unit.test_api_flow import Fleet, finish

from fleetyard.domain.auth import Role
from fleetyard.server.routers.dashboard import COOKIE
from fleetyard.store import tables as t
from fleetyard.store.tokens import create_token

PIPELINE = """
name: tiny
stages:
  build:
    job: {kind: command, params: {command: "true"}}
  test:
    needs: [build]
    job: {kind: command, params: {command: "true"}}
"""

CHART_PAGES = ("/ui/availability", "/ui/boards/h1-b0")


@pytest.fixture
def ui(fleet: Fleet) -> Fleet:
    """Two hosts of two boards, one finished job with logs, one pipeline run."""
    fleet.register("h1")
    fleet.register("h2")
    fleet.beat("h1", boards=[{"id": "h1-b0", "telemetry": {"temp_c": 61.5, "power_w": 120.0}}])
    job = fleet.submit(name="hello")
    assert fleet.rec.schedule(time.time()) == 1
    [a] = fleet.take("h1") or fleet.take("h2")
    fleet.events(a["board_id"].split("-")[0], finish(a))
    fleet.job_id = job["id"]  # type: ignore[attr-defined]
    r = fleet.client.post("/v1/pipelines", json={"text": PIPELINE}, headers=fleet.h(fleet.user))
    assert r.status_code == 201, r.text
    fleet.run_id = r.json()["id"]  # type: ignore[attr-defined]
    fleet.operator = create_token(fleet.url, name="olga", role=Role.OPERATOR)  # type: ignore[attr-defined]
    return fleet


def _pages(f: Fleet) -> list[str]:
    return [
        "/ui/fleet",
        "/ui/fleet?state=available&generation=sim-g1&host=h1",
        "/ui/boards/h1-b0",
        "/ui/jobs",
        f"/ui/jobs/{f.job_id}",  # type: ignore[attr-defined]
        "/ui/pipelines",
        f"/ui/pipelines/{f.run_id}",  # type: ignore[attr-defined]
        "/ui/firmware-rollouts",
        "/ui/availability",
        "/ui/availability?hours=6",
        "/ui/validations",
        "/ui/benchmarks",
        "/ui/evals",
        "/ui/robotics",
    ]


def test_every_page_answers_with_a_token_and_redirects_to_login_without(ui: Fleet) -> None:
    for path in _pages(ui):
        r = ui.client.get(path, headers=ui.h(ui.user))
        assert r.status_code == 200, (path, r.text[:300])
        assert r.headers["content-type"].startswith("text/html")
        assert "alice (user)" in r.text
        anon = ui.client.get(path, follow_redirects=False)
        assert anon.status_code == 303 and anon.headers["location"].startswith("/ui/login?next=%2Fui%2F"), path
        bad = ui.client.get(path, headers=ui.h("nope"), follow_redirects=False)
        assert bad.status_code == 303
    assert ui.client.get("/ui/boards/nope", headers=ui.h(ui.user)).status_code == 404
    assert ui.client.get("/ui/jobs/999999", headers=ui.h(ui.user)).status_code == 404


def test_fleet_page_shows_every_board_of_the_api_coloured_by_its_state(ui: Fleet) -> None:
    with ui.store.write() as conn:
        conn.execute(t.hosts.update().where(t.hosts.c.id == "h2").values(labels={"rack": "r7"}))
    ui.client.post("/v1/boards/h2-b1/drain", json={"reason": "cable"}, headers=ui.h(ui.admin))
    boards = ui.client.get("/v1/boards", headers=ui.h(ui.user)).json()
    assert len(boards) == 4
    html = ui.client.get("/ui/fleet", headers=ui.h(ui.user)).text
    cells = dict(re.findall(r'<a class="s-[a-z_]+" href="/ui/boards/([^"]+)" data-state="([a-z_]+)"', html))
    assert cells == {b["id"]: b["state"] for b in boards}
    assert html.count('data-testid="board-row"') == 4 and 'data-testid="nav-fleet"' in html
    for b in boards:
        assert f'<a class="s-{b["state"]}" href="/ui/boards/{b["id"]}"' in html
    assert "drained" in cells.values() and "rack r7" in html and "rack h1" in html  # h1 has no rack: its own
    assert re.search(r"4 boards · .*available</span></a> 3 · .*drained</span></a> 1", html)
    only = ui.client.get("/ui/fleet?state=drained", headers=ui.h(ui.user)).text
    assert re.findall(r'href="/ui/boards/([^"]+)" data-state', only) == ["h2-b1"]
    host = ui.client.get("/ui/fleet?host=h1", headers=ui.h(ui.user)).text
    assert sorted(re.findall(r'href="/ui/boards/([^"]+)" data-state', host)) == ["h1-b0", "h1-b1"]


def test_plotly_is_served_locally_and_no_page_loads_anything_from_the_network(ui: Fleet) -> None:
    js = ui.client.get("/ui/static/plotly.min.js")
    assert js.status_code == 200 and len(js.content) > 1_000_000 and b"plotly" in js.content[:2000].lower()
    assert js.headers["content-type"].startswith("application/javascript")
    for path in _pages(ui):
        html = ui.client.get(path, headers=ui.h(ui.user)).text
        assert "cdn" not in html.lower() and "https://" not in html and "http://" not in html, path
        srcs = re.findall(r'<script[^>]*src="([^"]+)"', html)
        assert all(s == "/ui/static/plotly.min.js" for s in srcs), (path, srcs)
        if path in CHART_PAGES:
            assert srcs == ["/ui/static/plotly.min.js"] and "Plotly.newPlot" in html, path
    board = ui.client.get("/ui/boards/h1-b0", headers=ui.h(ui.user)).text
    assert "temp_c" in board and "61.5" in board


def _csrf(page: str) -> str:
    [token] = set(re.findall(r'<input type="hidden" name="csrf" value="([0-9a-f]+)">', page))
    return token


def test_drain_form_drains_for_an_operator_and_is_refused_to_a_user(ui: Fleet) -> None:
    page = ui.client.get("/ui/boards/h1-b1", headers=ui.h(ui.operator)).text  # type: ignore[attr-defined]
    assert 'action="/ui/boards/h1-b1/drain"' in page and 'data-testid="drain-button"' in page
    assert 'data-testid="undrain-button"' not in page  # an available board: nothing to undrain
    form = {"reason": "fan noise <loud>", "csrf": _csrf(page)}
    assert ui.operator not in page  # type: ignore[attr-defined]  # the token itself never reaches the page
    for bad in ({"reason": "x"}, {"reason": "x", "csrf": "0" * 64}):  # no CSRF token, a forged one
        r = ui.client.post("/ui/boards/h1-b1/drain", data=bad, headers=ui.h(ui.operator), follow_redirects=False)  # type: ignore[attr-defined]
        assert r.status_code == 403 and "CSRF" in r.text
    assert ui.client.get("/v1/boards/h1-b1", headers=ui.h(ui.user)).json()["state"] == "available"
    assert 'action="/ui/boards/h1-b1/drain"' not in ui.client.get("/ui/boards/h1-b1", headers=ui.h(ui.user)).text
    refused = ui.client.post("/ui/boards/h1-b1/drain", data=form, headers=ui.h(ui.user), follow_redirects=False)
    assert refused.status_code == 403
    assert ui.client.get("/v1/boards/h1-b1", headers=ui.h(ui.user)).json()["state"] == "available"
    anon = ui.client.post("/ui/boards/h1-b1/drain", data=form, follow_redirects=False)
    assert anon.status_code == 303 and anon.headers["location"].startswith("/ui/login")
    r = ui.client.post(
        "/ui/boards/h1-b1/drain",
        data=form,
        headers=ui.h(ui.operator),  # type: ignore[attr-defined]
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/ui/boards/h1-b1"
    board = ui.client.get("/v1/boards/h1-b1", headers=ui.h(ui.user)).json()
    assert board["state"] == "drained" and board["drain_reason"] == "drained by olga: fan noise <loud>"
    [entry] = ui.client.get("/v1/audit?action=board.drain", headers=ui.h(ui.admin)).json()
    assert entry["actor"] == "olga" and entry["target"] == "h1-b1" and entry["reason"] == "fan noise <loud>"
    shown = ui.client.get("/ui/boards/h1-b1", headers=ui.h(ui.user)).text
    assert "fan noise &lt;loud&gt;" in shown and "<loud>" not in shown  # escaped
    assert 'available</span></td><td><span class="tag s-drained">drained' in shown  # the timeline
    assert 'data-testid="board-state" data-state="drained"' in shown and 'name="csrf"' not in shown


def test_undrain_button_returns_a_drained_board_through_the_api_s_service(ui: Fleet) -> None:
    op = ui.operator  # type: ignore[attr-defined]
    ui.client.post("/v1/boards/h2-b0/drain", json={"reason": "cable"}, headers=ui.h(ui.admin))
    page = ui.client.get("/ui/boards/h2-b0", headers=ui.h(op)).text
    assert 'action="/ui/boards/h2-b0/undrain"' in page and 'data-testid="undrain-button"' in page
    user_page = ui.client.get("/ui/boards/h2-b0", headers=ui.h(ui.user)).text
    assert 'data-testid="undrain-button"' not in user_page
    token = _csrf(page)
    refused = ui.client.post("/ui/boards/h2-b0/undrain", data={"reason": "fixed", "csrf": token},
                             headers=ui.h(ui.user), follow_redirects=False)  # fmt: skip
    assert refused.status_code == 403
    forged = ui.client.post("/ui/boards/h2-b0/undrain", data={"reason": "fixed", "csrf": "x"}, headers=ui.h(op),
                            follow_redirects=False)  # fmt: skip
    assert forged.status_code == 403
    assert ui.client.get("/v1/boards/h2-b0", headers=ui.h(ui.user)).json()["state"] == "drained"
    # The cookie login works the same: the token is derived from the cookie's secret.
    ui.client.cookies.set(COOKIE, op)
    r = ui.client.post("/ui/boards/h2-b0/undrain", data={"reason": "cable <swapped>", "csrf": token},
                       follow_redirects=False)  # fmt: skip
    ui.client.cookies.clear()
    assert r.status_code == 303 and r.headers["location"] == "/ui/boards/h2-b0"
    board = ui.client.get("/v1/boards/h2-b0", headers=ui.h(ui.user)).json()
    assert board["state"] == "available" and board["drain_reason"] is None
    [entry] = ui.client.get("/v1/audit?action=board.undrain", headers=ui.h(ui.admin)).json()
    assert entry["actor"] == "olga" and entry["target"] == "h2-b0" and entry["reason"] == "cable <swapped>"
    again = ui.client.post("/ui/boards/h2-b0/undrain", data={"reason": "again", "csrf": token}, headers=ui.h(op))
    assert again.status_code == 409 and "nothing to undrain" in again.text  # the service's own refusal


def test_pipeline_run_shows_its_stages_and_dag(ui: Fleet) -> None:
    runs = ui.client.get("/ui/pipelines", headers=ui.h(ui.user)).text
    assert f'href="/ui/pipelines/{ui.run_id}"' in runs and "tiny" in runs  # type: ignore[attr-defined]
    html = ui.client.get(f"/ui/pipelines/{ui.run_id}", headers=ui.h(ui.user)).text  # type: ignore[attr-defined]
    api = ui.client.get(f"/v1/pipelines/{ui.run_id}", headers=ui.h(ui.user)).json()  # type: ignore[attr-defined]
    assert {s["name"] for s in api["stages"]} == {"build", "test"}
    rows = re.findall(r"<tr><td>(\d)</td><td>([a-z]+)</td><td>([a-z, ]*)</td><td><span class=\"tag s-([a-z_]+)", html)
    states = {s["name"]: s["state"] for s in api["stages"]}
    assert rows == [("0", "build", "", states["build"]), ("1", "test", "build", states["test"])]
    assert "<svg" in html and html.count("<rect") == 2 and html.count("<line") == 1
    assert '<meta http-equiv="refresh"' in html  # still running


def test_job_page_shows_logs_state_and_why_pending(ui: Fleet) -> None:
    html = ui.client.get(f"/ui/jobs/{ui.job_id}", headers=ui.h(ui.user)).text  # type: ignore[attr-defined]
    assert "s-succeeded" in html and "rank 0" in html and '<meta http-equiv="refresh"' not in html
    queued = ui.submit(boards=2)  # not scheduled: it stays queued
    with ui.store.write() as conn:
        conn.execute(t.jobs.update().where(t.jobs.c.id == queued["id"]).values(pending_reason="needs 2 boards <x>"))
    page = ui.client.get(f"/ui/jobs/{queued['id']}", headers=ui.h(ui.user)).text
    assert "Why pending:</b> needs 2 boards &lt;x&gt;" in page and '<meta http-equiv="refresh"' in page
    listing = ui.client.get("/ui/jobs?state=queued", headers=ui.h(ui.user)).text
    assert 'data-testid="jobs-table"' in listing and listing.count('data-testid="job-row"') == 1
    assert f'href="/ui/jobs/{queued["id"]}"' in listing and "needs 2 boards &lt;x&gt;" in listing
    assert f'href="/ui/jobs/{ui.job_id}"' not in listing  # type: ignore[attr-defined]


def test_availability_page_charts_the_fleet_per_hour(ui: Fleet) -> None:
    with ui.store.write() as conn:
        n = conn.execute(sa.select(sa.func.count()).select_from(t.board_events)).scalar_one()
    assert n >= 4
    html = ui.client.get("/ui/availability?hours=3", headers=ui.h(ui.user)).text
    figures = re.findall(
        r'<tr data-testid="availability-row"><td>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d</td><td>([^<]*)</td>', html
    )
    assert len(figures) == 3 and figures[-1].endswith("%") and float(figures[-1][:-1]) > 50.0


def test_login_form_sets_an_httponly_cookie_that_then_works(ui: Fleet) -> None:
    assert ui.client.get("/ui/login?next=/ui/jobs").status_code == 200
    bad = ui.client.post("/ui/login", data={"token": "wrong", "next": "/ui/jobs"}, follow_redirects=False)
    assert bad.status_code == 401 and COOKIE not in bad.cookies
    r = ui.client.post("/ui/login", data={"token": ui.user, "next": "/ui/jobs"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/ui/jobs"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie and "Path=/ui" in cookie
    assert "samesite=strict" in cookie.lower()
    ui.client.cookies.set(COOKIE, ui.user)
    page = ui.client.get("/ui/fleet", follow_redirects=False)
    assert page.status_code == 200 and "alice (user)" in page.text
    elsewhere = ui.client.post("/ui/login", data={"token": ui.user, "next": "https://evil.example/"})
    assert elsewhere.url.path == "/ui/fleet"  # no open redirect
    ui.client.cookies.clear()
    assert ui.client.get("/ui/fleet", follow_redirects=False).status_code == 303


def test_rollouts_page_shows_each_rollout_with_its_waves_and_gate_figures(ui: Fleet) -> None:
    from tests.unit.test_rollout_shell import _push, _rollout

    _push(ui, "1.0")
    _push(ui, "2.0.0")
    started = _rollout(ui, canary=1, shares=[1.0])
    gate = {"check_failure_rate": {"wave": 0.0, "control": 0.0, "limit": 0.05}}
    with ui.store.write() as conn:
        row = conn.execute(sa.select(t.rollouts.c.waves).where(t.rollouts.c.id == started["id"])).scalar_one()
        row[0].update(verdict=True, figures={"checks": 1, "infra_errors": 0}, gate=gate, reasons=[])
        conn.execute(t.rollouts.update().where(t.rollouts.c.id == started["id"]).values(waves=row))
    api = ui.client.get(f"/v1/rollouts/{started['id']}", headers=ui.h(ui.user)).json()
    html = ui.client.get("/ui/firmware-rollouts", headers=ui.h(ui.user)).text
    assert f'id="rollout-{started["id"]}"' in html and "sim-g1 → 2.0.0" in html
    assert f"{api['wave'] + 1}/{api['waves']}" in html and f"s-{api['state']}" in html
    waves = re.findall(r"<tr><td>(\d+)</td><td>(\d+)</td>", html)
    assert waves == [(str(w["index"]), str(w["boards"])) for w in api["wave_records"]]
    assert "check_failure_rate" in html and "&quot;limit&quot;: 0.05" in html and "infra_errors" in html


def test_hourly_availability_is_what_uptime_gives_hour_by_hour() -> None:
    import random

    from fleetyard.domain.board import Actor, BoardState
    from fleetyard.policy.uptime import Transition, uptime
    from fleetyard.server.dashboard.fleet import hourly_availability

    rng = random.Random(7)
    gens = {f"b{i}": rng.choice(["g1", "g2", "g3"]) for i in range(30)}
    since, hours = 1_000_000.0, 5
    moves = [
        Transition(b, since + rng.uniform(-4000.0, hours * 3600.0 + 900.0), rng.choice(list(BoardState)),
                   rng.choice(list(Actor)))
        for b in gens
        for _ in range(rng.randint(0, 7))
    ]  # fmt: skip
    moves.append(Transition("b0", since + 10.0, BoardState.OFFLINE))  # two at one time: the later given wins
    moves.append(Transition("b0", since + 10.0, BoardState.AVAILABLE))
    rows = [(m.board, gens[m.board], m.at, str(m.to_state), str(m.actor)) for m in moves]
    fast = hourly_availability(rows, gens.values(), since=since, hours=hours)
    for h in range(hours):
        slow = uptime(moves, gens, since=since + h * 3600.0, until=since + (h + 1) * 3600.0)
        assert fast["fleet"][h] == pytest.approx(slow.availability, abs=1e-12)
        for g in ("g1", "g2", "g3"):
            assert fast[g][h] == pytest.approx(slow.by_generation.get(g, {}).get("availability"), abs=1e-12)


# ---- result pages: jobs that really ran (locally), their results stored through the agent API ----


def _register(ui: Fleet, data: bytes) -> str:
    import hashlib

    ui.app.state.max_blob_bytes = 1 << 22
    sha = hashlib.sha256(data).hexdigest()
    assert ui.client.put(f"/v1/blobs/{sha}", content=data, headers=ui.h(ui.user)).status_code == 201
    assert ui.client.post("/v1/artifacts", json={"sha256": sha}, headers=ui.h(ui.user)).status_code == 201
    return sha


def _store_blob(ui: Fleet, path: Path) -> str:
    import hashlib

    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    ui.app.state.blobs.put(sha, [data], max_bytes=1 << 24)
    return sha


def _ran(ui: Fleet, kind: str, params: dict, ranks: list[tuple[object, dict[str, Path]]]) -> int:
    """Submit a job of ``kind``, schedule it, and finish each rank with a real workload result
    (a WorkloadResult) and its output files, as an agent reports them."""
    job = ui.submit(kind=kind, params=params, boards=len(ranks))
    assert ui.rec.schedule(time.time()) == 1
    taken = sorted(ui.take("h1") + ui.take("h2"), key=lambda a: a["rank"])
    assert len(taken) == len(ranks)
    for a, (res, files) in zip(taken, ranks, strict=True):
        outputs = {name: _store_blob(ui, path) for name, path in files.items()}
        events = finish(a, outcome=str(res.outcome))  # type: ignore[attr-defined]
        events[-1].update(result=res.result, outputs=outputs)  # type: ignore[attr-defined]
        ui.events(a["board_id"].split("-")[0], events)
    assert ui.job(job["id"])["state"] in ("succeeded", "failed")
    return int(job["id"])


def _charted_locally(html: str) -> bool:
    """A chart page that loads plotly from this server and nothing from the network."""
    srcs = re.findall(r'<script[^>]*src="([^"]+)"', html)
    return srcs == ["/ui/static/plotly.min.js"] and "Plotly.newPlot" in html and "https://" not in html


def _testids(html: str, testid: str) -> list[str]:
    """The text of each element marked ``data-testid=testid`` (no nested tags)."""
    return re.findall(rf'data-testid="{re.escape(testid)}"[^>]*>([^<]*)<', html)


@pytest.fixture
def mlp_file(tmp_path: Path) -> Path:
    from tests.unit import models

    return models.save(models.mlp(batch="batch"), tmp_path / "mlp.onnx")


def test_validate_result_keeps_a_bounded_error_histogram_of_every_set(tmp_path: Path, mlp_file: Path) -> None:
    import numpy as np
    from tests.unit import models

    from fleetyard.workloads.validate import ERROR_EDGES, ValidateParams, execute

    seen: list[np.ndarray] = []

    def candidate(inputs: dict) -> dict:
        y = models.mlp_reference(inputs["x"]).astype(np.float32)
        noisy = y + np.float32(1e-4) * np.arange(y.size, dtype=np.float32).reshape(y.shape)
        seen.append(np.abs(noisy.astype(np.float64) - y.astype(np.float64)).reshape(-1))
        return {"y": noisy}

    params = ValidateParams(artifact="a" * 64, input_sets=4, dims={"batch": 50}, atol=["1e-3"], rtol=["0"])
    res = execute(params, artifact_path=mlp_file, inputs_path=None, expected_path=None, output_dir=tmp_path,
                  env={}, candidate=candidate)  # fmt: skip
    h = res.result["error_histograms"]["y"]
    errors = np.concatenate(seen)
    assert h["elements"] == errors.size == 4 * 50 * 3 and h["nonfinite"] == 0
    assert h["counts"] == np.bincount(np.searchsorted(ERROR_EDGES, errors, side="right"), minlength=17).tolist()
    assert len(h["counts"]) == len(h["edges"]) + 1 == 17 and h["zero"] == int((errors == 0).sum())
    assert h["tolerance"] == {"atol": 1e-3, "rtol": 0.0, "nan_equal": False, "inf_equal": True}


def test_validation_report_page_shows_each_output_s_errors_and_histogram(
    ui: Fleet, tmp_path: Path, mlp_file: Path
) -> None:
    import numpy as np
    from tests.unit import models

    from fleetyard.workloads.validate import ValidateParams, execute

    sha = _register(ui, mlp_file.read_bytes())

    def candidate(inputs: dict) -> dict:
        y = models.mlp_reference(inputs["x"]).astype(np.float32)
        return {"y": y + np.float32(0.01) * (y > 0.5)}  # a planted bug on the larger values

    spec = {"artifact": sha, "input_sets": 3, "atol": ["1e-3"]}
    res = execute(ValidateParams(**spec), artifact_path=mlp_file, inputs_path=None, expected_path=None,
                  output_dir=tmp_path, env={}, candidate=candidate)  # fmt: skip
    job_id = _ran(ui, "validate", spec, [(res, {})])
    html = ui.client.get(f"/ui/validations/{job_id}", headers=ui.h(ui.user)).text
    assert _charted_locally(html)
    [o] = res.result["comparison"]["outputs"]
    assert _testids(html, "output-name") == ["y"]
    assert 'data-testid="output-status" data-status="failed"' in html and not o["passed"]
    assert _testids(html, "max-abs") == [f"{o['max_abs']:.6g}"] and _testids(html, "mean-abs") == [
        f"{o['mean_abs']:.6g}"
    ]
    assert _testids(html, "max-rel") == [f"{o['max_rel']:.6g}"] and _testids(html, "atol") == ["0.001"]
    assert 'data-testid="validation-verdict" data-verdict="failed"' in html
    assert 'data-testid="error-histogram"' in html and "Plotly.newPlot" in html
    hist = res.result["error_histograms"]["y"]
    rows = re.findall(r'<tr data-testid="histogram-row"><td>[^<]*</td><td>(\d+)</td></tr>', html)
    assert [int(x) for x in rows[: len(hist["counts"])]] == hist["counts"] and sum(hist["counts"]) == o["elements"]
    listing = ui.client.get("/ui/validations", headers=ui.h(ui.user)).text
    assert f'href="/ui/validations/{job_id}"' in listing and f"{res.result['failing_sets']}/3" in listing
    job_page = ui.client.get(f"/ui/jobs/{job_id}", headers=ui.h(ui.user)).text
    assert f'href="/ui/validations/{job_id}" data-testid="job-results-link"' in job_page
    wrong = ui.client.get(f"/ui/benchmarks/{job_id}", headers=ui.h(ui.user))
    assert wrong.status_code == 404 and "not bench" in wrong.text


def test_benchmark_page_shows_percentiles_and_the_latency_histogram(ui: Fleet, tmp_path: Path, mlp_file: Path) -> None:
    from fleetyard.workloads.bench import BenchParams, bench_local

    sha = _register(ui, mlp_file.read_bytes())
    spec = {"artifact": sha, "warmup_s": 0, "min_duration_s": 0, "min_queries": 200}
    res = bench_local(BenchParams(**spec), artifact_path=mlp_file, inputs_path=None, output_dir=tmp_path)
    hist, lat = res.result["latency_histogram"], res.result["latency_ms"]
    assert sum(hist["counts"]) == res.result["queries"] >= 200 and len(hist["edges_ms"]) == len(hist["counts"]) + 1
    assert len(hist["counts"]) <= 80 and hist["counts"][0] > 0 and hist["counts"][-1] > 0
    assert hist["edges_ms"][0] <= lat["min"] and lat["max"] < hist["edges_ms"][-1]
    job_id = _ran(ui, "bench", spec, [(res, {})])
    html = ui.client.get(f"/ui/benchmarks/{job_id}", headers=ui.h(ui.user)).text
    assert _charted_locally(html)
    for p in ("p50", "p90", "p99", "mean", "min", "max"):
        assert _testids(html, f"percentile-{p}") == [f"{lat[p]:.6g}"], p
    assert 'data-testid="latency-chart"' in html and 'data-testid="bench-verdict" data-verdict="valid"' in html
    assert str(hist["counts"][0]) in html and 'data-testid="no-histogram"' not in html
    listing = ui.client.get("/ui/benchmarks", headers=ui.h(ui.user)).text
    assert f'href="/ui/benchmarks/{job_id}"' in listing and f"{lat['p90']:.6g}" in listing
    job_page = ui.client.get(f"/ui/jobs/{job_id}", headers=ui.h(ui.user)).text
    assert f'href="/ui/benchmarks/{job_id}" data-testid="job-results-link"' in job_page


def test_eval_comparison_shows_the_cli_s_deltas_and_significance(ui: Fleet, tmp_path: Path) -> None:
    import numpy as np
    from tests.unit import models

    from fleetyard.evaluation import compare_records
    from fleetyard.workloads.eval import SAMPLES_FILE, EvalParams, eval_local
    from fleetyard.workloads.tensors import save_arrays

    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (60, 4)).astype(np.float32)
    labels = models.mlp_reference(x).argmax(axis=1)  # version A (seed 0) is right on every sample
    targets = models.mlp_reference(x).astype(np.float32)
    data = save_arrays(tmp_path / "data.npz", {"x": x, "labels": labels, "targets": targets})
    other = save_arrays(tmp_path / "other.npz", {"x": x[:10], "labels": labels[:10]})
    data_sha, other_sha = _store_blob(ui, data), _store_blob(ui, other)
    a_path = models.save(models.mlp(batch="batch", seed=0), tmp_path / "a.onnx")
    b_path = models.save(models.mlp(batch="batch", seed=1), tmp_path / "b.onnx")
    a_sha, b_sha = _register(ui, a_path.read_bytes()), _register(ui, b_path.read_bytes())
    jobs, records = {}, {}
    for name, path, sha, d, d_sha in (("A", a_path, a_sha, data, data_sha), ("B", b_path, b_sha, data, data_sha),
                                      ("C", a_path, a_sha, other, other_sha)):  # fmt: skip
        spec = {"artifact": sha, "data": d_sha}
        ranks, recs = [], []
        for r in range(2):
            out = tmp_path / f"{name}{r}"
            res = eval_local(EvalParams(**spec), artifact_path=path, data_path=d, output_dir=out, rank=r, world_size=2)
            ranks.append((res, {SAMPLES_FILE: out / SAMPLES_FILE}))
            recs += [json.loads(line) for line in (out / SAMPLES_FILE).read_text().splitlines()]
        jobs[name] = _ran(ui, "eval", spec, ranks)
        records[name] = recs
    listing = ui.client.get(f"/ui/evals?a={jobs['A']}", headers=ui.h(ui.user)).text
    assert len(re.findall(r'data-testid="eval-row"', listing)) == 3 and f'value="{jobs["A"]}" checked' in listing
    page = ui.client.get(f"/ui/evals/compare?a={jobs['A']}&b={jobs['B']}&b={jobs['C']}", headers=ui.h(ui.user))
    html = page.text
    assert _charted_locally(html)
    assert page.status_code == 200, html[:500]
    cmp = compare_records(records["A"], records["B"])
    t, m = cmp["top1"], cmp["mse"]
    assert t["a"] == 1.0 and t["b"] < 1.0 and t["significant"]  # B is wrong on some samples: McNemar says so
    assert _testids(html, "metric-name") == ["top1", "mse"]
    assert _testids(html, "metric-delta") == [f"{t['delta']:+.4g}", f"{m['delta']:+.6g}"]
    lo, hi = m["ci95"]
    assert _testids(html, "metric-significance") == [
        f"p = {t['p_value']:.4g} (A only {t['a_only']}, B only {t['b_only']})",
        f"95% CI of the per-sample delta [{lo:.4g}, {hi:.4g}]",
    ]
    verdicts = re.findall(r'data-testid="metric-verdict" data-significant="(true|false)"', html)
    assert verdicts == [str(t["significant"]).lower(), str(m["significant"]).lower()]
    assert "significant at 0.05" in html and f"{cmp['paired']} paired samples" in html
    assert f'data-b="{jobs["C"]}"' in html and "evaluated different data sets" in html  # C: another data set
    assert 'data-testid="eval-metrics-chart"' in html
    job_page = ui.client.get(f"/ui/jobs/{jobs['B']}", headers=ui.h(ui.user)).text
    assert f'href="/ui/evals?a={jobs["B"]}" data-testid="job-results-link"' in job_page


def test_robotics_rollout_page_shows_both_arms_episodes_and_trajectories(ui: Fleet, tmp_path: Path) -> None:
    from fleetyard.workloads.policy_rollout import (
        EPISODES_FILE,
        TRAJECTORIES_FILE,
        RolloutParams,
        cartpole_policy,
        execute,
        wilson_interval,
    )

    policy = tmp_path / "cartpole.onnx"
    policy.write_bytes(cartpole_policy())
    sha = _register(ui, policy.read_bytes())
    spec = {"artifact": sha, "seeds": [3, 4, 5], "max_steps": 40, "success": "survived"}
    ranks = []
    for r in range(2):  # two boards: the seeds shard across them
        out = tmp_path / f"rank{r}"
        res = execute(RolloutParams(**spec), artifact_path=policy, output_dir=out, env={}, rank=r, world_size=2)
        ranks.append((res, {EPISODES_FILE: out / EPISODES_FILE, TRAJECTORIES_FILE: out / TRAJECTORIES_FILE}))
    job_id = _ran(ui, "rollout", spec, ranks)
    html = ui.client.get(f"/ui/robotics/{job_id}", headers=ui.h(ui.user)).text
    assert _charted_locally(html)
    k = sum(res.result["board"]["successes"] for res, _ in ranks)  # type: ignore[attr-defined]
    assert k == 3
    lo, hi = wilson_interval(k, 3)
    assert _testids(html, "arm-name") == ["board", "control"]
    assert _testids(html, "success-rate") == ["1.0000", "1.0000"]
    assert _testids(html, "success-ci") == [f"[{lo:.4f}, {hi:.4f}]"] * 2
    assert len(re.findall('data-testid="episode-row"', html)) == 3
    episodes = {e["seed"]: e for res, _ in ranks for e in res.result["episodes"]}  # type: ignore[attr-defined]
    assert _testids(html, "board-return") == [f"{episodes[s]['return']:.6g}" for s in (3, 4, 5)]
    assert _testids(html, "control-return") == _testids(html, "board-return")  # a sound board: identical
    assert _testids(html, "diverged-at") == ["", "", ""] and _testids(html, "rollout-verdict") == ["identical"] * 2
    assert re.findall(r'data-testid="trajectory-chart" data-seed="(\d+)"', html) == ["3", "5", "4"]  # per rank
    listing = ui.client.get("/ui/robotics", headers=ui.h(ui.user)).text
    assert f'href="/ui/robotics/{job_id}"' in listing and "3/3 (100.00%)" in listing
    job_page = ui.client.get(f"/ui/jobs/{job_id}", headers=ui.h(ui.user)).text
    assert f'href="/ui/robotics/{job_id}" data-testid="job-results-link"' in job_page


def test_result_pages_are_linked_from_the_navigation_and_answer_empty(ui: Fleet) -> None:
    html = ui.client.get("/ui/fleet", headers=ui.h(ui.user)).text
    for path, testid in (("/ui/validations", "nav-validation"), ("/ui/benchmarks", "nav-benchmarks"),
                         ("/ui/evals", "nav-evals"), ("/ui/robotics", "nav-robotics")):  # fmt: skip
        assert f'href="{path}" data-testid="{testid}"' in html
        r = ui.client.get(path, headers=ui.h(ui.user))
        assert r.status_code == 200 and "yet</p>" in r.text
        assert ui.client.get(path, follow_redirects=False).status_code == 303
    assert ui.client.get("/ui/validations/999999", headers=ui.h(ui.user)).status_code == 404
