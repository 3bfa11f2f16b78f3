"""The one error tree of Fleetyard.

    FleetyardError                 500  internal
    ├── BadRequest                 422  a request or spec that is malformed or can never run
    │   ├── UnschedulableJob       422  no set of boards can ever satisfy the job's constraints
    │   └── DigestMismatch         422  an uploaded blob's sha256 differs from the one it was named by
    ├── Unauthenticated            401  no token, or an unknown or revoked one
    ├── Forbidden                  403  a valid token whose role or team may not do this
    ├── NotFound                   404  an unknown board, host, job, blob or token
    ├── Conflict                   409  the target's state does not allow it (e.g. an illegal transition)
    │   └── StaleSession           409  an agent's session was replaced; it must register again
    ├── PayloadTooLarge            413  a blob over the server's size limit
    └── StoreUnavailable           503  the database does not answer (down, restarting): try again

The server maps each class to its status code and answers
``{"error": {"code", "message", "detail"}}``; the SDK raises the same class back from that shape.
"""

from __future__ import annotations

from typing import Any, ClassVar


class FleetyardError(Exception):
    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal"

    def __init__(self, message: str, *, detail: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail

    def to_dict(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "detail": self.detail}}


class BadRequest(FleetyardError):
    status = 422
    code = "bad_request"


class UnschedulableJob(BadRequest):
    code = "unschedulable"


class DigestMismatch(BadRequest):
    code = "digest_mismatch"


class Unauthenticated(FleetyardError):
    status = 401
    code = "unauthenticated"


class Forbidden(FleetyardError):
    status = 403
    code = "forbidden"


class NotFound(FleetyardError):
    status = 404
    code = "not_found"


class Conflict(FleetyardError):
    status = 409
    code = "conflict"


class StaleSession(Conflict):
    code = "stale_session"


class PayloadTooLarge(FleetyardError):
    status = 413
    code = "payload_too_large"


class StoreUnavailable(FleetyardError):
    status = 503
    code = "store_unavailable"


_BY_CODE: dict[str, type[FleetyardError]] = {
    cls.code: cls
    for cls in (
        FleetyardError,
        BadRequest,
        UnschedulableJob,
        DigestMismatch,
        Unauthenticated,
        Forbidden,
        NotFound,
        Conflict,
        StaleSession,
        PayloadTooLarge,
        StoreUnavailable,
    )
}


# For answers without the error shape (a proxy, a HEAD answer): go by the status alone.
_BY_STATUS: dict[int, type[FleetyardError]] = {
    cls.status: cls for cls in (Unauthenticated, Forbidden, NotFound, Conflict, PayloadTooLarge, BadRequest)
}


def error_from_response(status: int, body: Any, *, context: str = "") -> FleetyardError:
    """Rebuild the error a server answered with (used by the SDK and the agent)."""
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        cls = _BY_STATUS.get(status, FleetyardError)
        detail = body.get("detail") if isinstance(body, dict) else (body or None)
        return cls(f"{context}{': ' if context else ''}HTTP {status}", detail=detail)
    # A code this client does not know (a newer server, a plugin's error) still keeps its status's class.
    cls = _BY_CODE.get(str(err.get("code"))) or _BY_STATUS.get(status, FleetyardError)
    return cls(str(err.get("message", "")), detail=err.get("detail"))
