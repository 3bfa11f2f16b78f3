"""The FastAPI application and ``serve()``, which ``fleetyard server`` runs.

    fleetyard server --data-dir .fleetyard --port 8600      # SQLite in the data dir
    fleetyard server --db postgresql://fleetyard@db/fleetyard

The server is stateless apart from the store and the blob dir: several replicas may serve one
PostgreSQL database (with a shared blob dir).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from fleetyard import __version__
from fleetyard.errors import FleetyardError, StoreUnavailable
from fleetyard.protocol.agent import EventBatch
from fleetyard.protocol.api import JobBatchIn
from fleetyard.server.auth import ANY, TokenCache
from fleetyard.server.big_body import document
from fleetyard.server.body_limit import DEFAULT_MAX_BODY_BYTES, BodyLimit
from fleetyard.server.feed import AssignmentFeed
from fleetyard.server.heartbeats import HeartbeatSink
from fleetyard.server.metrics import make_registry
from fleetyard.server.routers import agent, artifacts, audit, blobs, firmware, fleet, jobs, leases, queues, tokens
from fleetyard.server.routers import dashboard as dashboard_router
from fleetyard.server.routers import inventory as inventory_router
from fleetyard.server.routers import onboarding as onboarding_router
from fleetyard.server.routers import pipelines as pipelines_router
from fleetyard.server.routers import rollouts as rollouts_router
from fleetyard.server.services.jobs import FleetView
from fleetyard.store import migrate
from fleetyard.store.blobs import BlobStore
from fleetyard.store.db import Store, is_retryable, is_unavailable
from fleetyard.store.outage import DEFAULT_OUTAGE_S, Outage

log = logging.getLogger(__name__)

DEFAULT_MAX_BLOB_BYTES = 512 * 1024 * 1024
RETRY_AFTER_S = 2  # what a 503 asks a client to wait while the store is unavailable


def _error(status: int, code: str, message: str, detail: Any = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, "detail": detail}}, status_code=status)


# An invalid request's answer names its first few problems, not all (a list of a million bad
# items made a 17.8 MB answer), and quotes no value at length.
MAX_ERRORS = 10
MAX_QUOTE = 80


def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = exc.errors()
    errors = []
    for e in problems[:MAX_ERRORS]:
        loc = [str(p) for p in e.get("loc", ()) if p not in ("body",)]
        message = str(e.get("msg", ""))[:300]
        got = e.get("input")
        if isinstance(got, str | int | float):  # a scalar the client sent (bool is an int)
            message += f" (got {_quote(got)})"
        errors.append({"field": ".".join(loc), "message": message})
    first = errors[0] if errors else {"field": "", "message": "invalid request"}
    where = f"{first['field']}: " if first["field"] else ""
    more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
    return _error(422, "bad_request", f"invalid request: {where}{first['message']}{more}", errors)


def _quote(value: object) -> str:
    text = repr(value)
    return text if len(text) <= MAX_QUOTE else text[: MAX_QUOTE - 3] + "..."


def create_app(
    store: Store,
    *,
    blob_dir: Path,
    max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES,
    heartbeat_interval_s: float = 2.0,
    heartbeat_flush_s: float = 0.2,
    store_outage_s: float = DEFAULT_OUTAGE_S,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.feed.start()
        app.state.heartbeats.start()
        app.state.tokens.start()
        try:
            yield
        finally:
            app.state.tokens.stop()
            await app.state.feed.stop()
            app.state.heartbeats.stop()

    app = FastAPI(title="Fleetyard", version=__version__, lifespan=lifespan)
    app.add_middleware(BodyLimit, default=max_body_bytes)
    app.state.store = store
    app.state.tokens = TokenCache(store)
    app.state.fleet_view = FleetView()
    app.state.feed = AssignmentFeed(store)
    app.state.heartbeats = HeartbeatSink(store, flush_s=heartbeat_flush_s, outage_s=store_outage_s)
    app.state.blobs = BlobStore(blob_dir)
    app.state.max_blob_bytes = max_blob_bytes
    app.state.heartbeat_interval_s = heartbeat_interval_s

    @app.exception_handler(FleetyardError)
    def _fleetyard_error(_: Request, exc: FleetyardError) -> JSONResponse:
        if exc.status >= 500:
            log.error("internal error: %s", exc.message)
        return JSONResponse(exc.to_dict(), status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail))

    app.add_exception_handler(RequestValidationError, _validation_error)

    @app.exception_handler(sa.exc.SQLAlchemyError)
    def _store_error(request: Request, exc: sa.exc.SQLAlchemyError) -> JSONResponse:
        # The database is down, restarting or cut off (or aborted a race more often than we
        # retry): the request may succeed in a moment. Anything else is a bug: a 500.
        if not (is_unavailable(exc) or is_retryable(exc)):
            raise exc
        # Said in the log, for the operator (a race lost is not an outage): the first line only.
        cause = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:300]
        log.warning("%s %s: answered 503: %s: %s", request.method, request.url.path, type(exc).__name__, cause)
        answer = _error(503, StoreUnavailable.code, f"the store is unavailable ({type(exc).__name__}): try again")
        answer.headers["Retry-After"] = str(RETRY_AFTER_S)
        return answer

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/readyz", tags=["health"])
    def readyz() -> JSONResponse:
        if store.ping():
            return JSONResponse({"ok": True})
        answer = _error(503, StoreUnavailable.code, "the store does not answer")
        answer.headers["Retry-After"] = str(RETRY_AFTER_S)
        return answer

    registry = make_registry(store)
    registry.register(app.state.heartbeats.gaps)

    @app.get("/metrics", tags=["metrics"], dependencies=[Depends(ANY)])
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    for r in (fleet.router, jobs.router, queues.router, blobs.router, artifacts.router, tokens.router, agent.router):
        app.include_router(r)
    app.include_router(leases.router)
    app.include_router(audit.router)
    app.include_router(firmware.router)
    app.include_router(inventory_router.router)
    app.include_router(onboarding_router.router)
    app.include_router(pipelines_router.router)
    app.include_router(rollouts_router.router)
    app.include_router(dashboard_router.router)
    document(app, [JobBatchIn, EventBatch])  # the bodies those routes parse off the event loop
    return app


_SETTINGS_ENV = "FLEETYARD_SERVER_SETTINGS"


def app_from_env() -> FastAPI:
    """The app of one worker process of ``serve(workers=N)``, built from the settings it was given."""
    settings = json.loads(os.environ[_SETTINGS_ENV])
    return create_app(
        Store(settings["db_url"]),
        blob_dir=Path(settings["blob_dir"]),
        max_blob_bytes=settings["max_blob_bytes"],
        heartbeat_interval_s=settings["heartbeat_interval_s"],
        store_outage_s=settings["store_outage_s"],
    )


def serve(
    *,
    db_url: str,
    host: str = "127.0.0.1",
    port: int = 8600,
    blob_dir: Path,
    max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES,
    heartbeat_interval_s: float = 2.0,
    workers: int = 1,
    store_outage_s: float = DEFAULT_OUTAGE_S,
) -> None:
    """Run migrations, then serve the API until SIGINT/SIGTERM.

    ``workers`` > 1 runs that many server processes on one port: replicas, as on several
    machines, for a server that is busier than one core. While the store is unavailable, requests
    are answered 503 with Retry-After; after ``store_outage_s`` without it (at start too), the
    server gives up with exit code :data:`~fleetyard.store.outage.EXIT_STORE_UNAVAILABLE`.
    """
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    migrate.upgrade_when_available(db_url, Outage(store_outage_s))
    shown = sa.engine.make_url(db_url).render_as_string()
    log.info("fleetyard server on http://%s:%d, %d worker(s) (store %s)", host, port, workers, shown)
    # Long polls would hold a graceful shutdown for their whole wait; agents retry anyway.
    common: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": "warning",
        "access_log": False,
        "timeout_graceful_shutdown": 1,
    }
    if workers > 1:
        os.environ[_SETTINGS_ENV] = json.dumps(
            {
                "db_url": db_url,
                "blob_dir": str(blob_dir),
                "max_blob_bytes": max_blob_bytes,
                "heartbeat_interval_s": heartbeat_interval_s,
                "store_outage_s": store_outage_s,
            }
        )
        uvicorn.run("fleetyard.server.app:app_from_env", factory=True, workers=workers, **common)
        return
    store = Store(db_url)
    app = create_app(
        store,
        blob_dir=blob_dir,
        max_blob_bytes=max_blob_bytes,
        heartbeat_interval_s=heartbeat_interval_s,
        store_outage_s=store_outage_s,
    )
    uvicorn.run(app, **common)
