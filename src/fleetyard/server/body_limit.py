"""A cap on every request body, per route, enforced before the body is parsed.

A JSON body is read and validated in the server's event loop: an unbounded one (a list of a million
generations) holds the loop for seconds, and with it every heartbeat and ``/healthz``. A body
declared larger than its route's cap is refused (413) before a byte is read; one sent without a
length is read here as it arrives and refused once past the cap. Blob uploads stream to disk under
their own cap (``--max-blob-mb``) and are not counted here.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fleetyard.errors import PayloadTooLarge

__all__ = ["DEFAULT_MAX_BODY_BYTES", "ROUTE_LIMITS", "BodyLimit"]

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
# (path prefix, cap in bytes or None for a route that streams under its own). First match wins.
ROUTE_LIMITS: tuple[tuple[str, int | None], ...] = (
    ("/v1/blobs/", None),
    ("/v1/jobs/batch", 8 * 1024 * 1024),  # up to 1000 specs (the client sends larger submits in batches)
    ("/v1/agent/", 16 * 1024 * 1024),  # an agent's catch-up after an outage (its outbox sends at most 8 MiB)
)


class BodyLimit:
    """ASGI middleware: refuse a body over its route's cap with 413 ``payload_too_large``."""

    def __init__(
        self,
        app: ASGIApp,
        default: int = DEFAULT_MAX_BODY_BYTES,
        limits: Sequence[tuple[str, int | None]] = ROUTE_LIMITS,
    ) -> None:
        self.app = app
        self.default = default
        self.limits = tuple(limits)

    def limit_for(self, path: str) -> int | None:
        for prefix, limit in self.limits:
            if path.startswith(prefix):
                return limit
        return self.default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        if limit is None:
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None:
            if declared > limit:
                await _too_large(scope, limit)(scope, receive, send)
                return
            await self.app(scope, receive, send)  # the server reads no more than it declared
            return
        # No length declared (chunked): read it here, up to the cap, and hand the app the whole.
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _too_large(scope, limit)(scope, receive, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        whole: list[Message] = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replay() -> Message:
            return whole.pop() if whole else await receive()

        await self.app(scope, replay, send)


def _too_large(scope: Scope, limit: int) -> JSONResponse:
    error = PayloadTooLarge(
        f"the request body is over {limit:,} bytes, the cap of {scope['method']} {scope['path']}: "
        "send less (split a batch; put large data in a blob and name its sha256)",
        detail={"max_bytes": limit},
    )
    return JSONResponse(error.to_dict(), status_code=413)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
