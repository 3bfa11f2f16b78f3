"""The HTTP plumbing under :class:`~fleetyard.client.Client`: requests, and errors back into the tree."""

from __future__ import annotations

from typing import Any

import httpx

from fleetyard.errors import FleetyardError, error_from_response


def raise_for_answer(response: httpx.Response) -> None:
    """Raise the error class the server meant, if the answer is not a success."""
    if response.is_success:
        return
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text[:500]
    raise error_from_response(response.status_code, body, context=f"{response.request.method} {response.request.url}")


def unreachable(server: str, exc: httpx.TransportError) -> FleetyardError:
    """The error for a server that did not answer at all, saying how to point elsewhere."""
    if isinstance(exc, httpx.TimeoutException):
        what = f"the Fleetyard server at {server} did not answer in time ({type(exc).__name__})"
    else:
        what = f"cannot reach the Fleetyard server at {server} ({exc or type(exc).__name__})"
    return FleetyardError(
        f"{what}. Point at another server with FLEETYARD_SERVER=URL (or --server URL), "
        "or start a local fleet with `fleetyard up`."
    )
