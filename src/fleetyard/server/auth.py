"""Bearer-token authentication and role checks."""

from __future__ import annotations

import time
from collections.abc import Callable

from fastapi import Depends, Request

from fleetyard.domain.auth import Principal, Role
from fleetyard.errors import Forbidden, Unauthenticated
from fleetyard.store import tokens
from fleetyard.store.db import Store

# Tokens are looked up at most this often: revocation takes effect within this many seconds.
CACHE_TTL_S = 5.0


class TokenCache:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._cache: dict[str, tuple[Principal | None, float]] = {}

    def principal(self, secret: str) -> Principal | None:
        hit = self._cache.get(secret)
        now = time.monotonic()
        if hit is not None and hit[1] > now:
            return hit[0]
        with self.store.read() as conn:
            found = tokens.lookup(conn, secret)
        if len(self._cache) > 100_000:
            self._cache.clear()
        self._cache[secret] = (found, now + CACHE_TTL_S)
        return found


def authenticate(request: Request) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret:
        raise Unauthenticated(
            "missing bearer token: send 'Authorization: Bearer <token>' (fleetyard token create makes one)"
        )
    principal: Principal | None = request.app.state.tokens.principal(secret.strip())
    if principal is None:
        raise Unauthenticated("unknown or revoked token")
    return principal


def allow(*roles: Role) -> Callable[..., Principal]:
    """A dependency that admits only the given roles."""

    def check(principal: Principal = Depends(authenticate)) -> Principal:
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
