"""Bearer-token authentication and role checks.

Both run in the event loop: a cached token costs a dict lookup, and only a miss goes to the
store (in a thread). Handing every request's checks to the thread pool would cost more than the
checks themselves.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Awaitable, Callable

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from fleetyard.domain.auth import Principal, Role
from fleetyard.errors import Forbidden, Unauthenticated
from fleetyard.store import tokens
from fleetyard.store.db import Store

# A token is looked up in the store at most this often; a revocation anywhere empties the cache
# sooner (REVOCATIONS_EVERY_S).
CACHE_TTL_S = 30.0
UNKNOWN_TTL_S = 2.0
# How often each server process reads the store's revocation mark: a token revoked through any
# worker of any replica stops working everywhere within about this long.
REVOCATIONS_EVERY_S = 0.5

log = logging.getLogger("fleetyard.server.auth")


class TokenCache:
    """Principals by secret, for :data:`CACHE_TTL_S`; emptied when the store's revocation mark
    moves (:meth:`start` watches it)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._cache: dict[str, tuple[Principal | None, float]] = {}
        self._mark: tuple[int, float | None] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._watch, name="revocation-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def check_revocations(self) -> bool:
        """Read the store's revocation mark; empty the cache if it moved. True if it did."""
        with self.store.read() as conn:
            mark = tokens.revocation_mark(conn)
        moved = self._mark is not None and mark != self._mark
        self._mark = mark
        if moved:
            self.forget()
        return moved

    def _watch(self) -> None:
        while not self._stop.wait(REVOCATIONS_EVERY_S):
            try:
                self.check_revocations()
            except Exception as exc:  # a store blip: cached tokens keep their TTL, and we look again
                log.warning("cannot read token revocations: %s", exc)

    def cached(self, secret: str) -> tuple[bool, Principal | None]:
        hit = self._cache.get(secret)
        if hit is not None and hit[1] > time.monotonic():
            return True, hit[0]
        return False, None

    def load(self, secret: str) -> Principal | None:
        with self.store.read() as conn:
            found = tokens.lookup(conn, secret)
        if len(self._cache) > 100_000:
            self._cache.clear()
        # An unknown token is remembered briefly only: it may have just been made in the store.
        self._cache[secret] = (found, time.monotonic() + (CACHE_TTL_S if found else UNKNOWN_TTL_S))
        return found

    def forget(self) -> None:
        self._cache.clear()


async def authenticate(request: Request) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret:
        raise Unauthenticated(
            "missing bearer token: send 'Authorization: Bearer <token>' (fleetyard token create makes one)"
        )
    cache: TokenCache = request.app.state.tokens
    hit, principal = cache.cached(secret)
    if not hit:
        principal = await run_in_threadpool(cache.load, secret)
    if principal is None:
        raise Unauthenticated("unknown or revoked token")
    return principal


def allow(*roles: Role) -> Callable[..., Awaitable[Principal]]:
    """A dependency that admits only the given roles."""

    async def check(principal: Principal = Depends(authenticate)) -> Principal:
        if principal.role not in roles:
            need = " or ".join(str(r) for r in roles)
            raise Forbidden(f"this needs a token with role {need}; {principal.name!r} is {principal.role}")
        return principal

    return check


ANY = allow(Role.ADMIN, Role.OPERATOR, Role.USER, Role.AGENT)
PEOPLE = allow(Role.ADMIN, Role.OPERATOR, Role.USER)
STAFF = allow(Role.ADMIN, Role.OPERATOR)
ADMIN = allow(Role.ADMIN)
AGENT = allow(Role.AGENT)
