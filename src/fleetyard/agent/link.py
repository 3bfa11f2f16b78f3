"""The agent's HTTP link to the server: auth, error mapping, failover and backoff.

An agent may know several server replicas (``--server URL1,URL2``): a request that one cannot
answer (unreachable, 5xx, 429) goes to the next at once, and the link stays with the one that
answered. Only when none answers does a request raise :class:`Unreachable`: try again later.
Any other error answer raises the :class:`~fleetyard.errors.FleetyardError` it names
(``StaleSession`` for a replaced session). Every agent write is idempotent, so a request
repeated on another replica changes nothing twice.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Sequence
from typing import IO, Any

import httpx

from fleetyard import __version__
from fleetyard.errors import FleetyardError, error_from_response
from fleetyard.tls import tls_for

__all__ = ["Backoff", "Revival", "ServerLink", "Unreachable", "describe", "server_urls"]

log = logging.getLogger("fleetyard.agent")


def server_urls(servers: str | Sequence[str]) -> list[str]:
    """The server URLs of ``--server``: one, or several separated by commas (replicas)."""
    parts = [servers] if isinstance(servers, str) else list(servers)
    urls = [u.strip().rstrip("/") for p in parts for u in p.split(",") if u.strip()]
    if not urls:
        raise ValueError("no server URL given")
    return urls


class Unreachable(Exception):
    """The server did not answer usefully now; the same request may succeed later."""


class Revival:
    """Wakes every backing-off thread as soon as one of them reaches the server again."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._gen = 0

    def revived(self) -> None:
        with self._cond:
            self._gen += 1
            self._cond.notify_all()

    def sleep(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if :meth:`revived` is called meanwhile."""
        with self._cond:
            gen = self._gen
            self._cond.wait_for(lambda: self._gen != gen, timeout=seconds)


class Backoff:
    """Exponential backoff with jitter: 0.2 s doubling up to 5 s, each delay drawn from [d/2, d]."""

    def __init__(self, base_s: float = 0.2, cap_s: float = 5.0, revival: Revival | None = None) -> None:
        self.base_s = base_s
        self.cap_s = cap_s
        self.failures = 0
        self.revival = revival
        self._rng = random.Random()

    def next(self) -> float:
        d = min(self.cap_s, self.base_s * 2**self.failures)
        self.failures = min(self.failures + 1, 30)
        return self._rng.uniform(d / 2, d)

    def wait(self) -> None:
        """Sleep the next delay (cut short when another thread finds the server back)."""
        delay = self.next()
        if self.revival is not None:
            self.revival.sleep(delay)
        else:
            time.sleep(delay)

    def succeeded(self) -> bool:
        """Record a success; True if it ends a run of failures (the others are woken then)."""
        was_down = self.failures > 0
        self.failures = 0
        if was_down and self.revival is not None:
            self.revival.revived()
        return was_down


class ServerLink:
    """One HTTP connection pool to the servers (use one per thread)."""

    def __init__(self, server: str | Sequence[str], token: str, *, timeout_s: float = 30.0) -> None:
        self.servers = server_urls(server)
        self._at = 0  # the replica that answered last
        self.client = httpx.Client(
            headers={"Authorization": f"Bearer {token}", "User-Agent": f"fleetyard-agent/{__version__}"},
            timeout=httpx.Timeout(timeout_s, connect=5.0),
            verify=tls_for(self.servers),
        )

    @property
    def server(self) -> str:
        """The replica this link talks to now."""
        return self.servers[self._at]

    def url(self, path: str) -> str:
        """``path`` on the replica this link talks to now."""
        return f"{self.server}{path}"

    def fail_over(self) -> None:
        """Talk to the next replica from now on (this one did not answer)."""
        if len(self.servers) > 1:
            self._at = (self._at + 1) % len(self.servers)
            log.info("trying server %s", self.server)

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | IO[bytes] | None = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> httpx.Response:
        kwargs: dict[str, Any] = {}
        if timeout_s is not None:
            kwargs["timeout"] = httpx.Timeout(timeout_s, connect=5.0)
        failed: list[str] = []
        for _ in range(len(self.servers)):
            if failed:  # the next replica, at once: a replica's death costs a reconnect, not a wait
                self.fail_over()
                if hasattr(content, "seek"):
                    content.seek(0)  # type: ignore[union-attr]
            url = self.url(path)
            try:
                r = self.client.request(
                    method, url, json=json, content=content, params=params, headers=headers, **kwargs
                )
            except httpx.HTTPError as exc:  # transport errors, and a client closed under us at shutdown
                failed.append(f"{self.server}: {type(exc).__name__}: {exc}")
                continue
            except RuntimeError as exc:
                raise Unreachable(f"{method} {path}: {exc}") from exc
            if r.status_code >= 500 or r.status_code == 429:
                failed.append(f"{self.server}: HTTP {r.status_code}: {r.text[:200]}")
                continue
            if r.status_code >= 400:
                try:
                    body = r.json()
                except ValueError:  # HEAD answers, proxies: no error body
                    body = None
                raise error_from_response(r.status_code, body, context=f"{method} {path}")
            return r
        raise Unreachable(f"{method} {path}: " + "; ".join(failed))

    def post_model(self, path: str, body: Any, *, timeout_s: float | None = None) -> Any:
        """POST a pydantic model as JSON and return the decoded answer."""
        r = self.request(
            "POST",
            path,
            content=body.model_dump_json().encode(),
            headers={"Content-Type": "application/json"},
            timeout_s=timeout_s,
        )
        return r.json()

    def close(self) -> None:
        self.client.close()


def describe(exc: BaseException) -> str:
    """A one-line account of an error for the agent's log."""
    if isinstance(exc, FleetyardError):
        return f"{exc.code}: {exc.message}"
    return str(exc)
