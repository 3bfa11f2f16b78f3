"""Browser tests of the dashboard: Debian's Chromium, headless, driven by Playwright.

One stack of real processes on loopback (server, controller, two agents with simulated boards, on
SQLite), one browser and one page serve the whole session of each xdist worker that runs browser
tests (a page keeps plotly compiled: a chart page loads several times quicker in it than in a new
one). No request leaves the server: each one for elsewhere is recorded and aborted; so is every
console error and page error. Each test starts logged out, with nothing recorded.

The browser is the system's ``chromium`` package (``make test`` installs it with apt-get when it
runs as root); Playwright never downloads one. Without it the tests skip, except in CI (``CI`` set),
where its absence fails them.
"""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import numpy as np
import pytest

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # a venv made before playwright joined the dev extra: `make venv` brings it
    sync_playwright = None  # type: ignore[assignment]

from fleetyard.server.routers.dashboard import COOKIE
from fleetyard.workloads.policy_rollout import cartpole_policy
from tests.integration.harness import ROOT, Stack, running_stack, wait_for
from tests.unit import models

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, Route

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/lib/chromium/chromium", "/usr/bin/chromium-browser")

FAST_BENCH = {"warmup_s": 0.0, "min_duration_s": 0.2, "min_queries": 50}
PIPELINE = """
name: browser-smoke
stages:
  build:
    matrix: {n: [1, 2]}
    job: {kind: command, params: {command: "echo build ${{ matrix.n }}"}}
  test:
    needs: [build]
    job: {kind: command, params: {command: "echo test"}}
"""


def submit_result_jobs(stack: Stack) -> dict[str, int]:
    """Small jobs of the kinds whose results have pages: kind -> job id."""
    mlp = stack.push_artifact(models.mlp(batch="batch").SerializeToString(), "mlp")
    other = stack.push_artifact(models.mlp(batch="batch", seed=1).SerializeToString(), "mlp-seed1")
    x = np.random.default_rng(0).uniform(-1, 1, (16, 4)).astype(np.float32)
    buf = io.BytesIO()
    np.savez(buf, x=x, labels=models.mlp_reference(x).argmax(1), targets=models.mlp_reference(x).astype(np.float32))
    data = stack.put_blob(buf.getvalue())
    policy = stack.push_artifact(cartpole_policy(), "cartpole")
    validate = {"artifact": mlp, "input_sets": 2, "dims": {"batch": 4}}
    return {
        "validate": stack.submit(kind="validate", name="mlp-check", params=validate),
        "bench": stack.submit(kind="bench", name="mlp-speed", params={"artifact": mlp, **FAST_BENCH}),
        "eval": stack.submit(kind="eval", name="mlp-eval", params={"artifact": mlp, "data": data}),
        "eval-other": stack.submit(kind="eval", name="mlp-seed1-eval", params={"artifact": other, "data": data}),
        "rollout": stack.submit(kind="rollout", name="cartpole", params={"artifact": policy, "episodes": 2}),
    }


def chromium_path() -> str | None:
    """Debian's Chromium (or the browser ``FLEETYARD_CHROMIUM`` names), if this machine has it."""
    given = os.environ.get("FLEETYARD_CHROMIUM")
    for path in [given] if given else [*CHROMIUM_CANDIDATES, shutil.which("chromium")]:
        if path and os.access(path, os.X_OK):
            return path
    return None


def artifacts_dir() -> Path:
    """Where the screenshots go: ``FLEETYARD_TEST_ARTIFACTS``, else ``.artifacts/screenshots``."""
    given = os.environ.get("FLEETYARD_TEST_ARTIFACTS")
    out = Path(given) if given else ROOT / ".artifacts" / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    return out


@dataclass
class UiFleet:
    """The session's stack and what the setup ran on it."""

    stack: Stack
    jobs: list[int]  # finished command jobs: one succeeded, one failed
    results: dict[str, int]  # finished jobs whose results have pages: kind -> job id
    pipeline_run: int
    board: str  # the board whose page is shown (test_drain_through_the_ui drains another)

    @property
    def url(self) -> str:
        return self.stack.url

    def finished_run(self) -> dict[str, Any]:
        """The pipeline run, once it has finished (its last stage runs a few controller passes after
        the setup: the tests that only load its page do not wait for it)."""
        return dict(
            wait_for(
                lambda: (r := self.stack.ok("GET", f"/v1/pipelines/{self.pipeline_run}"))["state"] != "running" and r,
                timeout=60,
                what="the pipeline run to finish",
            )
        )


@pytest.fixture(scope="session")
def chromium() -> str:
    """The browser's path; without one (or without playwright) the tests skip, and fail in CI."""
    path = chromium_path()
    if sync_playwright is not None and path is not None:
        return path
    if sync_playwright is None:
        why = "no playwright in this venv: `make venv` installs the dev extra"
    else:
        why = (
            "no chromium: the browser tests need Debian's chromium (make test installs it when run as root;"
            " else: sudo apt-get install --no-install-recommends chromium)"
        )
    if os.environ.get("CI"):
        pytest.fail(f"{why}; CI must have it")
    pytest.skip(why)


@pytest.fixture(scope="session")
def ui_fleet(tmp_path_factory: pytest.TempPathFactory, chromium: str) -> Iterator[UiFleet]:
    """Two hosts (4 sim-g1 boards, 2 sim-g2), two finished command jobs, finished jobs of the kinds
    with result pages, and a pipeline run."""
    tmp = tmp_path_factory.mktemp("browser-stack")
    with running_stack(f"sqlite:///{tmp / 'fleetyard.db'}", tmp) as stack:
        stack.setup()
        stack.start_server()
        stack.start_controller()
        stack.start_agent("h1", "sim:4:sim-g1", wait=False)
        stack.start_agent("h2", "sim:2:sim-g2", wait=False)
        wait_for(lambda: len(stack.boards(state="available")) >= 6, what="both agents' boards available")
        ok = stack.submit(name="hello", params={"command": "echo hello from the browser tests"})
        bad = stack.submit(name="broken", params={"command": "echo broken >&2; exit 3"})
        run = int(stack.ok("POST", "/v1/pipelines", as_="alice", json={"text": PIPELINE})["id"])
        results = submit_result_jobs(stack)
        for job_id in (ok, bad, *results.values()):
            stack.wait_job(job_id, timeout=60)
        assert all(stack.job(j)["state"] == "succeeded" for j in results.values()), stack.logs()
        board = sorted(stack.boards(host="h1"), key=lambda b: b["slot"])[0]["id"]
        yield UiFleet(stack, [ok, bad], results, run, board)


@pytest.fixture(autouse=True)
def _logs_on_failure(request: pytest.FixtureRequest, ui_fleet: UiFleet) -> Iterator[None]:
    """The processes' own account, shown with a test that failed."""
    failed = request.session.testsfailed
    yield
    if request.session.testsfailed > failed:
        print(ui_fleet.stack.logs())


@pytest.fixture(scope="session")
def browser(chromium: str) -> Iterator[Browser]:
    assert sync_playwright is not None
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium, headless=True)
        yield b
        b.close()


@dataclass
class Watch:
    """What a context's pages said and asked for beyond the server."""

    origin: str
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    off_host: list[str] = field(default_factory=list)

    def on_console(self, msg: ConsoleMessage) -> None:
        if msg.type == "error":
            self.console_errors.append(f"{msg.text} at {msg.location.get('url')}")

    def elsewhere(self, url: str) -> bool:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.netloc}" != self.origin

    def on_route(self, route: Route) -> None:
        """Only requests :meth:`elsewhere` come here: none goes out."""
        self.off_host.append(route.request.url)
        route.abort("blockedbyclient")

    def watch(self, page: Page) -> Page:
        page.on("console", self.on_console)
        page.on("pageerror", lambda exc: self.page_errors.append(str(exc)))
        return page

    def assert_clean(self) -> None:
        assert not self.console_errors, f"console errors: {self.console_errors}"
        assert not self.page_errors, f"page errors: {self.page_errors}"
        assert not self.off_host, f"requests off the server: {self.off_host}"


@dataclass
class Session:
    """The session's one browser context and page on the stack, with its :class:`Watch`. One page
    for every test: its renderer keeps plotly compiled, which makes a chart page several times
    quicker than in a fresh page on this 2-core machine."""

    context: BrowserContext
    page: Page
    watch: Watch
    url: str
    shots: Path

    def login_with_cookie(self, token: str) -> None:
        """Logged in as the login form would leave it (the form itself: test_drain_through_the_ui)."""
        self.context.add_cookies(
            [{"name": COOKIE, "value": token, "url": f"{self.url}/ui", "httpOnly": True, "sameSite": "Strict"}]
        )

    def screenshot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture(scope="session")
def browser_session(browser: Browser, ui_fleet: UiFleet) -> Iterator[Session]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    watch = Watch(origin=ui_fleet.url)
    context.route(watch.elsewhere, watch.on_route)
    page = watch.watch(context.new_page())
    page.set_default_timeout(10_000)
    yield Session(context, page, watch, ui_fleet.url, artifacts_dir())
    context.close()


@pytest.fixture
def session(browser_session: Session) -> Session:
    """The session's page, logged out, with nothing yet seen."""
    s = browser_session
    s.page.goto("about:blank")
    s.context.clear_cookies()
    s.watch.console_errors.clear()
    s.watch.page_errors.clear()
    s.watch.off_host.clear()
    return s
