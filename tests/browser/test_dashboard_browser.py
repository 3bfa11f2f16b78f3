"""The dashboard in a real browser: every page loads clean (no console or page errors, nothing
asked of any host but the server, charts drawn), what the pages show is what the API says, and a
drain clicked in the page reaches the board, on the record as the one who clicked.

Screenshots of the pages go to ``FLEETYARD_TEST_ARTIFACTS`` (default ``.artifacts/screenshots``).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.routing import APIRoute

from fleetyard.server.routers.dashboard import router
from tests.browser import locators as L
from tests.browser.conftest import Session, UiFleet
from tests.integration.harness import wait_for

# Not pages: the login page is seen in test_drain_through_the_ui, the rest are redirects or files.
NOT_PAGES = frozenset({"/ui", "/ui/", "/ui/login", "/ui/logout", "/ui/static/plotly.min.js"})
CHART_PAGES = frozenset({"/ui/availability", "/ui/boards/{board_id}"})  # at least one chart each
ROUTES = {r.path: r for r in router.routes if isinstance(r, APIRoute) and "GET" in (r.methods or ())}


def dashboard_pages() -> list[str]:
    """Every page of the dashboard's router (a new page is tested as soon as it is routed)."""
    return sorted(set(ROUTES) - NOT_PAGES)


def _shot_name(path: str) -> str:
    name = re.sub(r"\{[^}]+\}", "one", path.removeprefix("/ui/")).replace("/", "-")
    return name or "home"


def _needs_link(path: str) -> bool:
    """Whether the page needs something the setup does not name: a path parameter, a required query."""
    dependant = ROUTES[path].dependant
    return bool(dependant.path_params) or any(q.field_info.is_required() for q in dependant.query_params)


def _resolve(session: Session, ui: UiFleet, path: str) -> str | None:
    """A URL of the page ``path``: one the setup made, else the first link to such a page on the
    page above it (None when the setup made nothing of the kind)."""
    known = {
        "/ui/boards/{board_id}": f"/ui/boards/{ui.board}",
        "/ui/jobs/{job_id}": f"/ui/jobs/{ui.jobs[0]}",
        "/ui/pipelines/{run_id}": f"/ui/pipelines/{ui.pipeline_run}",
    }
    if path in known:
        return known[path]
    if not _needs_link(path):
        return path
    parent = path
    while parent.count("/") > 1 and (parent == path or parent not in ROUTES or _needs_link(parent)):
        parent = parent.rsplit("/", 1)[0]
    pattern = re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/?#]+", re.escape(path)) + r"(\?.*)?$")
    session.page.goto(session.url + parent)
    hrefs = session.page.locator("a[href]").evaluate_all("els => els.map(e => e.getAttribute('href'))")
    return next((h.split("#")[0] for h in hrefs if h and pattern.match(h.split("#")[0])), None)


@pytest.mark.parametrize("path", dashboard_pages())
def test_page_loads_clean_and_draws_its_charts(session: Session, ui_fleet: UiFleet, path: str) -> None:
    session.login_with_cookie(ui_fleet.stack.tokens["admin"])
    url = _resolve(session, ui_fleet, path)
    if url is None:
        pytest.skip(f"no page links a {path}: the test stack has nothing of that kind")
    page = session.page
    response = page.goto(session.url + url)
    assert response is not None and response.status == 200, (url, response and response.status)
    assert page.url.startswith(session.url + url.split("?")[0]), f"{url} went to {page.url}"
    assert page.locator(L.WHO).inner_text().startswith("admin (admin)")
    charts = page.locator(L.CHARTS)
    if path in CHART_PAGES:
        assert charts.count() >= 1, f"{url} drew no chart"
    for i in range(charts.count()):
        charts.nth(i).locator(L.DRAWN).first.wait_for(state="visible")
    session.screenshot(_shot_name(path))
    session.watch.assert_clean()


def _boards_by_api(ui: UiFleet, **params: Any) -> dict[str, str]:
    return {b["id"]: b["state"] for b in ui.stack.boards(**params)}


def test_fleet_page_shows_the_apis_boards_and_states_and_filters_them(session: Session, ui_fleet: UiFleet) -> None:
    session.login_with_cookie(ui_fleet.stack.tokens["alice"])
    page = session.page

    def same() -> bool:
        page.goto(f"{session.url}/ui/fleet")
        return L.board_cells(page) == _boards_by_api(ui_fleet)

    # A board's state can change between the two reads (a health check): look again until they agree.
    wait_for(same, timeout=60, what="the fleet page to show the API's boards")
    shown = L.board_cells(page)
    assert len(shown) == 6
    hosts = {h.split(" ")[0] for h in page.locator(".host > span").all_inner_texts()}
    assert hosts == {b["host_id"] for b in ui_fleet.stack.boards()} == {"h1", "h2"}
    assert page.get_by_text(f"{len(shown)} boards").count() == 1
    # The filter form, as a person uses it.
    page.select_option('select[name="generation"]', "sim-g2")
    page.locator('form[action="/ui/fleet"] button').click()
    page.wait_for_url(re.compile(r"generation=sim-g2"))
    assert L.board_cells(page) == _boards_by_api(ui_fleet, generation="sim-g2") and len(L.board_cells(page)) == 2
    session.watch.assert_clean()


def test_jobs_and_pipeline_pages_show_what_the_api_says(session: Session, ui_fleet: UiFleet) -> None:
    stack = ui_fleet.stack
    run = ui_fleet.finished_run()  # no job of it changes state between the page and the API
    session.login_with_cookie(stack.tokens["alice"])
    page = session.page

    def shown() -> dict[str, tuple[str, str, str]]:
        page.goto(f"{session.url}/ui/jobs")
        return {r["id"]: (r["state"], r["name"], r["kind"]) for r in L.table_rows(page.locator(L.JOBS_TABLE))}

    def by_api() -> dict[str, tuple[str, str, str]]:
        return {str(j["id"]): (j["state"], j["name"] or "", j["kind"]) for j in stack.ok("GET", "/v1/jobs")}

    # Nothing should be running now, but should the controller start a job (a health check), look again.
    wait_for(lambda: shown() == by_api(), timeout=60, what="the jobs page to show the API's jobs")
    rows = L.table_rows(page.locator(L.JOBS_TABLE))
    assert len(rows) == len(by_api()) >= 10
    ok, bad = ui_fleet.jobs
    assert {r["id"]: r["state"] for r in rows}[str(ok)] == "succeeded"
    assert {r["id"]: r["state"] for r in rows}[str(bad)] == "failed"

    # A job's page: its state and its logs, as the API has them.
    page.locator(f'a[href="/ui/jobs/{ok}"]').first.click()
    page.wait_for_url(f"**/ui/jobs/{ok}")
    assert page.locator(L.JOB_STATE).first.inner_text().strip() == stack.job(ok)["state"]
    assert stack.logs_of(ok).strip() in page.locator("#logs").inner_text()

    # The pipeline run: each stage instance's state, and a box in the DAG for each stage.
    page.goto(f"{session.url}/ui/pipelines")
    page.locator(f'a[href="/ui/pipelines/{ui_fleet.pipeline_run}"]').click()
    page.wait_for_url(f"**/ui/pipelines/{ui_fleet.pipeline_run}")
    stages = L.table_rows(page.locator("table:has(th:text-is('stage instance'))"))
    assert {s["stage instance"]: s["state"].split(" ")[0] for s in stages} == {
        s["name"]: s["state"] for s in run["stages"]
    }
    assert page.locator(L.DAG).locator("rect").count() == len(run["needs"])
    session.watch.assert_clean()


def test_evals_compare_through_the_form(session: Session, ui_fleet: UiFleet) -> None:
    """Pick a baseline and a version on the evals page, as a person does, and compare them."""
    a, b = ui_fleet.results["eval"], ui_fleet.results["eval-other"]
    session.login_with_cookie(ui_fleet.stack.tokens["alice"])
    page = session.page
    page.goto(f"{session.url}/ui/evals")
    page.locator(L.EVAL_PICK_A).and_(page.locator(f'[value="{a}"]')).check()
    page.locator(L.EVAL_PICK_B).and_(page.locator(f'[value="{b}"]')).check()
    page.locator(L.EVAL_COMPARE).click()
    page.wait_for_url("**/ui/evals/compare?*")
    assert parse_qs(urlsplit(page.url).query) == {"a": [str(a)], "b": [str(b)]}
    assert page.locator(L.COMPARE_ERROR).count() == 0
    [comparison] = page.locator(L.EVAL_COMPARISON).all()
    assert comparison.get_attribute("data-a") == str(a) and comparison.get_attribute("data-b") == str(b)
    page.locator(L.CHARTS).locator(L.DRAWN).first.wait_for(state="visible")
    session.screenshot("evals-compared")
    session.watch.assert_clean()


def test_drain_through_the_ui_reaches_the_board_and_names_who_did_it(session: Session, ui_fleet: UiFleet) -> None:
    stack = ui_fleet.stack
    board = next(b["id"] for b in stack.boards(host="h1", state="available") if b["id"] != ui_fleet.board)
    page = session.page
    # Not logged in: the board's page sends the browser to the login form, and back after it.
    page.goto(f"{session.url}/ui/boards/{board}")
    page.wait_for_url("**/ui/login?next=*")
    session.screenshot("login")
    page.locator(L.LOGIN_TOKEN).fill(stack.tokens["ops"])
    page.locator(L.LOGIN_BUTTON).click()
    page.wait_for_url(f"**/ui/boards/{board}")
    assert page.locator(L.WHO).inner_text().startswith("ops (operator)")
    [cookie] = session.context.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["value"] == stack.tokens["ops"]
    assert page.evaluate("document.cookie") == ""  # no script of the page can read the token

    page.locator(L.DRAIN_REASON).fill("fan noise, seen in the browser test")
    with page.expect_navigation():
        page.locator(L.DRAIN_BUTTON).click()
    # An available board drains at once (a busy one would finish its job first): poll all the same.
    drained = wait_for(
        lambda: (b := stack.ok("GET", f"/v1/boards/{board}"))["state"] == "drained" and b,
        timeout=60,
        what=f"{board} drained",
    )
    assert drained["drain_reason"] == "drained by ops: fan noise, seen in the browser test"
    [entry] = stack.ok("GET", "/v1/audit", params={"action": "board.drain", "target": board})
    assert entry["actor"] == "ops" and entry["role"] == "operator" and entry["reason"].startswith("fan noise")
    last = stack.ok("GET", f"/v1/boards/{board}/history")[0]
    assert last["to_state"] == "drained" and last["actor"] == "operator" and "drained by ops" in last["reason"]
    # The page the browser came back to shows it too.
    assert page.url.endswith(f"/ui/boards/{board}")
    assert page.locator(L.BOARD_STATE).first.inner_text() == "drained"
    session.screenshot("board-drained")
    session.watch.assert_clean()

    # Undrain it the same way: back in service, on the record too.
    page.locator(L.UNDRAIN_REASON).fill("fan replaced")
    with page.expect_navigation():
        page.locator(L.UNDRAIN_BUTTON).click()
    wait_for(lambda: stack.ok("GET", f"/v1/boards/{board}")["state"] == "available", timeout=60, what="undrained")
    [entry] = stack.ok("GET", "/v1/audit", params={"action": "board.undrain", "target": board})
    assert entry["actor"] == "ops" and entry["reason"] == "fan replaced"
    session.watch.assert_clean()

    # A user's token reads the page but gets no drain button.
    session.context.clear_cookies()
    session.login_with_cookie(stack.tokens["alice"])
    page.goto(f"{session.url}/ui/boards/{board}")
    assert page.locator(L.WHO).inner_text().startswith("alice (user)")
    assert page.locator(L.DRAIN_BUTTON).count() == 0 and page.locator(L.UNDRAIN_BUTTON).count() == 0
