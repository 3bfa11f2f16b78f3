"""The web dashboard's routes (``/ui``): server-rendered pages behind the API's tokens.

A browser logs in once by pasting a token at ``/ui/login``; the server checks it as the API does
and keeps it in an HttpOnly, SameSite=Strict cookie. The ``Authorization: Bearer`` header works
too. Any role may read; draining or undraining a board needs an operator or admin token, as in
the API, and the form's CSRF token (:func:`csrf_token`, derived from the login token).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from fleetyard.domain.auth import Principal, Role
from fleetyard.errors import BadRequest, FleetyardError
from fleetyard.server.auth import TokenCache
from fleetyard.server.dashboard import fleet as fleet_pages
from fleetyard.server.dashboard import results as results_pages
from fleetyard.server.dashboard import work as work_pages
from fleetyard.server.dashboard.html import e, page
from fleetyard.server.routers.deps import MAX_ID, RowId
from fleetyard.server.services import boards as boards_svc
from fleetyard.store.db import Store, now

# The eval and robotics pages' module (fleetyard.server.dashboard.evals) is imported by their
# handlers, on first use: it brings numpy and the runtimes, which no other request needs, and
# every server start paid 0.3 s for them.

router = APIRouter(prefix="/ui", tags=["dashboard"], include_in_schema=False)

COOKIE = "fleetyard_token"
COOKIE_MAX_AGE_S = 7 * 86400
MAX_FORM_BYTES = 64 * 1024
DRAINERS = (Role.ADMIN, Role.OPERATOR)
CSRF_FIELD = "csrf"
CSRF_KEY = b"fleetyard-dashboard-csrf-v1"


def plotly_js_path() -> Path:
    """plotly's own bundled ``plotly.min.js`` (the pages load it from this server, never a CDN)."""
    return Path(str(resources.files("plotly") / "package_data" / "plotly.min.js"))


def _secret(request: Request) -> str | None:
    scheme, _, secret = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and secret.strip():
        return secret.strip()
    return request.cookies.get(COOKIE) or None


def _check(request: Request, secret: str) -> Principal | None:
    """The token's principal, as the API's check finds it (its cache, else the store)."""
    cache: TokenCache = request.app.state.tokens
    hit, principal = cache.cached(secret)
    if not hit:
        principal = cache.load(secret)
    return principal


def _who(request: Request) -> Principal | None:
    secret = _secret(request)
    return None if secret is None else _check(request, secret)


def _to_login(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/ui/login?next={quote(target, safe='')}", status_code=303)


def _html(
    title: str, body: str, who: Principal | None, *, status: int = 200, head: str = "", charts: bool = False
) -> HTMLResponse:
    return HTMLResponse(page(title, body, who=who, head=head, charts=charts), status_code=status)


def _error_page(exc: FleetyardError, who: Principal | None) -> HTMLResponse:
    return _html("Error", f'<p class="err">{e(exc.message)}</p>', who, status=exc.status)


def _render(
    request: Request, title: str, build: Callable[[Store, Principal], str], *, charts: bool = False
) -> Response:
    who = _who(request)
    if who is None:
        return _to_login(request)
    try:
        body = build(request.app.state.store, who)
    except FleetyardError as exc:
        return _error_page(exc, who)
    return _html(title, body, who, charts=charts)


async def _form(request: Request) -> dict[str, str]:
    """A url-encoded form's fields (first value of each), without needing python-multipart."""
    raw = await request.body()
    if len(raw) > MAX_FORM_BYTES:
        return {}
    return {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True).items()}


def _safe_next(target: str | None) -> str:
    """Only a page of this dashboard: never an open redirect elsewhere."""
    if target and target.startswith("/ui/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/ui/fleet"


@router.get("", include_in_schema=False)
@router.get("/", include_in_schema=False)
def home() -> RedirectResponse:
    return RedirectResponse("/ui/fleet", status_code=303)


@router.get("/static/plotly.min.js")
def plotly_js() -> FileResponse:
    return FileResponse(
        plotly_js_path(), media_type="application/javascript", headers={"Cache-Control": "public, max-age=86400"}
    )


def _login_form(next_: str, message: str = "") -> str:
    err = f'<p class="err">{e(message)}</p>' if message else ""
    return (
        f"{err}<p>Paste a Fleetyard token (<code>fleetyard token create</code> makes one). "
        "It is kept in an HttpOnly cookie of this site.</p>"
        f'<form method="post" action="/ui/login"><input type="hidden" name="next" value="{e(next_)}">'
        '<input type="password" name="token" size="50" autofocus required data-testid="login-token"> '
        '<button data-testid="login-button">log in</button></form>'
    )


@router.get("/login")
def login_page(next: str | None = None) -> HTMLResponse:
    return _html("Log in", _login_form(_safe_next(next)), None)


@router.post("/login")
async def login(request: Request) -> Response:
    form = await _form(request)
    secret = form.get("token", "").strip()
    target = _safe_next(form.get("next"))
    principal = await run_in_threadpool(_check, request, secret) if secret else None
    if principal is None:
        return _html("Log in", _login_form(target, "unknown or revoked token"), None, status=401)
    resp = RedirectResponse(target, status_code=303)
    resp.set_cookie(
        COOKIE,
        secret,
        max_age=COOKIE_MAX_AGE_S,
        path="/ui",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return resp


@router.get("/logout")
def logout() -> RedirectResponse:
    resp = RedirectResponse("/ui/login", status_code=303)
    resp.delete_cookie(COOKIE, path="/ui")
    return resp


@router.get("/fleet")
def fleet_page(
    request: Request, state: str | None = None, generation: str | None = None, host: str | None = None
) -> Response:
    return _render(
        request,
        "Fleet",
        lambda s, _who: fleet_pages.fleet_body(
            s, state=state or None, generation=generation or None, host=host or None
        ),
    )


@router.get("/boards/{board_id}")
def board_page(request: Request, board_id: str) -> Response:
    who = _who(request)
    can_drain = who is not None and who.role in DRAINERS
    secret = _secret(request)
    csrf = csrf_token(secret) if can_drain and secret else ""
    return _render(
        request,
        f"Board {board_id}",
        lambda s, _who: fleet_pages.board_body(s, board_id=board_id, can_drain=can_drain, csrf=csrf),
        charts=True,
    )


def csrf_token(secret: str) -> str:
    """The token a form of this session carries: derived from the login token (so a page of
    another site, which cannot read it, cannot forge a post), never the token itself."""
    return hmac.new(CSRF_KEY, secret.encode(), hashlib.sha256).hexdigest()


async def _board_action(request: Request, board_id: str, *, undrain: bool) -> Response:
    """Drain or undrain from the board page's form: an operator or admin, the form's CSRF token,
    a reason; then the same service function as the API's."""
    secret = _secret(request)
    who = None if secret is None else await run_in_threadpool(_check, request, secret)
    if who is None or secret is None:
        return _to_login(request)
    verb = "undraining" if undrain else "draining"
    if who.role not in DRAINERS:
        return _html("Forbidden", f'<p class="err">{verb} needs an operator or admin token; {e(who.name)} is '
                     f"{e(who.role)}</p>", who, status=403)  # fmt: skip
    form = await _form(request)
    if not hmac.compare_digest(form.get(CSRF_FIELD, ""), csrf_token(secret)):
        return _html("Forbidden", '<p class="err">the form\'s CSRF token is missing or wrong: reload the board '
                     "page and send it again</p>", who, status=403)  # fmt: skip
    reason = form.get("reason", "").strip()
    if not reason:
        return _html("Undrain" if undrain else "Drain", f'<p class="err">{verb} needs a reason</p>', who, status=422)
    store: Store = request.app.state.store
    action = boards_svc.undrain if undrain else boards_svc.drain
    try:
        await run_in_threadpool(lambda: action(store, board_id=board_id, reason=reason[:1000], principal=who, at=now()))
    except FleetyardError as exc:
        return _error_page(exc, who)
    return RedirectResponse(f"/ui/boards/{quote(board_id, safe='')}", status_code=303)


@router.post("/boards/{board_id}/drain")
async def drain_board(request: Request, board_id: str) -> Response:
    return await _board_action(request, board_id, undrain=False)


@router.post("/boards/{board_id}/undrain")
async def undrain_board(request: Request, board_id: str) -> Response:
    return await _board_action(request, board_id, undrain=True)


@router.get("/availability")
def availability(request: Request, hours: int = Query(24, ge=1, le=168)) -> Response:
    return _render(
        request,
        "Fleet availability",
        lambda s, _who: fleet_pages.availability_body(s, until=now(), hours=hours),
        charts=True,
    )


@router.get("/jobs")
def jobs_page(
    request: Request,
    state: str | None = None,
    team: str | None = None,
    kind: str | None = None,
    limit: int = Query(200, ge=1, le=2000),
) -> Response:
    return _render(
        request,
        "Queues and jobs",
        lambda s, who: work_pages.jobs_body(
            s, state=state or None, team=team or None, kind=kind or None, limit=limit, reader=who
        ),
    )


def _live_page(
    request: Request, build: Callable[[Store, Principal], tuple[str, str, bool]], *, charts: bool = False
) -> Response:
    """A page that reloads itself while what it shows is still going."""
    who = _who(request)
    if who is None:
        return _to_login(request)
    try:
        title, body, going = build(request.app.state.store, who)
    except FleetyardError as exc:
        return _error_page(exc, who)
    head = f'<meta http-equiv="refresh" content="{work_pages.LOG_REFRESH_S}">' if going else ""
    return _html(title, body, who, head=head, charts=charts)


def _result_page(request: Request, build: Callable[[Store, Principal], tuple[str, str]]) -> Response:
    """A finished job's result page (titled by its builder), with charts."""
    return _live_page(request, lambda s, who: (*build(s, who), False), charts=True)


@router.get("/jobs/{job_id}")
def job_page(request: Request, job_id: RowId) -> Response:
    return _live_page(request, lambda s, who: work_pages.job_page(s, job_id=job_id, reader=who))


@router.get("/pipelines")
def pipelines_page(request: Request, state: str | None = None) -> Response:
    return _render(
        request, "Pipeline runs", lambda s, who: work_pages.pipelines_body(s, state=state or None, reader=who)
    )


@router.get("/pipelines/{run_id}")
def pipeline_page(request: Request, run_id: RowId) -> Response:
    return _live_page(request, lambda s, who: work_pages.pipeline_page(s, run_id=run_id, reader=who))


@router.get("/firmware-rollouts")
def rollouts_page(request: Request) -> Response:
    return _render(request, "Firmware rollouts", lambda s, _who: work_pages.rollouts_body(s))


@router.get("/validations")
def validations_page(request: Request) -> Response:
    return _render(request, "Validation reports", lambda s, who: results_pages.validations_body(s, reader=who))


@router.get("/validations/{job_id}")
def validation_page(request: Request, job_id: RowId) -> Response:
    return _result_page(request, lambda s, who: results_pages.validation_page(s, job_id=job_id, reader=who))


@router.get("/benchmarks")
def benchmarks_page(request: Request) -> Response:
    return _render(request, "Benchmarks", lambda s, who: results_pages.benchmarks_body(s, reader=who))


@router.get("/benchmarks/{job_id}")
def benchmark_page(request: Request, job_id: RowId) -> Response:
    return _result_page(request, lambda s, who: results_pages.benchmark_page(s, job_id=job_id, reader=who))


@router.get("/evals")
def evals_page(request: Request, a: int | None = Query(None, ge=0, le=MAX_ID)) -> Response:
    from fleetyard.server.dashboard import evals as eval_pages

    return _render(request, "Evals", lambda s, who: eval_pages.evals_body(s, a=a, reader=who))


@router.get("/evals/compare")
def evals_compare(
    request: Request, a: int = Query(ge=0, le=MAX_ID), b: list[int] = Query([], max_length=20)
) -> Response:
    if any(not 0 <= x <= MAX_ID for x in b):
        raise BadRequest(f"b: job ids are 0..{MAX_ID}", detail={"b": [x for x in b if not 0 <= x <= MAX_ID][:5]})
    from fleetyard.server.dashboard import evals as eval_pages

    blobs = request.app.state.blobs
    return _render(
        request,
        f"Eval comparison: against job {a}",
        lambda s, who: eval_pages.compare_page(s, blobs, a=a, b=b, reader=who),
        charts=True,
    )


@router.get("/robotics")
def robotics_page(request: Request) -> Response:
    from fleetyard.server.dashboard import evals as eval_pages

    return _render(request, "Robotics rollouts", lambda s, who: eval_pages.rollouts_body(s, reader=who))


@router.get("/robotics/{job_id}")
def robotics_rollout(request: Request, job_id: RowId) -> Response:
    from fleetyard.server.dashboard import evals as eval_pages

    blobs = request.app.state.blobs
    return _result_page(request, lambda s, who: eval_pages.rollout_page(s, blobs, job_id=job_id, reader=who))
