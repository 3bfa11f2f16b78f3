"""The web dashboard (/ui): pages behind the tokens, what they show against the API, the drain
form, the login cookie, and plotly served from this server (no network)."""

from __future__ import annotations

import re
import time

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


def test_drain_form_drains_for_an_operator_and_is_refused_to_a_user(ui: Fleet) -> None:
    form = {"reason": "fan noise <loud>"}
    page = ui.client.get("/ui/boards/h1-b1", headers=ui.h(ui.operator)).text  # type: ignore[attr-defined]
    assert 'action="/ui/boards/h1-b1/drain"' in page
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
    assert f'href="/ui/jobs/{queued["id"]}"' in listing and "needs 2 boards &lt;x&gt;" in listing
    assert f'href="/ui/jobs/{ui.job_id}"' not in listing  # type: ignore[attr-defined]


def test_availability_page_charts_the_fleet_per_hour(ui: Fleet) -> None:
    with ui.store.write() as conn:
        n = conn.execute(sa.select(sa.func.count()).select_from(t.board_events)).scalar_one()
    assert n >= 4
    html = ui.client.get("/ui/availability?hours=3", headers=ui.h(ui.user)).text
    figures = re.findall(r"<tr><td>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d</td><td>([^<]*)</td>", html)
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
