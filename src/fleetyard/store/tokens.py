"""Bearer tokens: only their sha256 is stored; the secret is shown once."""

from __future__ import annotations

import hashlib
import re
import secrets
from typing import Any

import sqlalchemy as sa

from fleetyard.domain.auth import Principal, Role
from fleetyard.errors import BadRequest, Conflict, NotFound
from fleetyard.store import tables as t
from fleetyard.store.db import Store, insert_ignore, now


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _check_binding(role: Role, team: str | None, host: str | None) -> None:
    if role is Role.USER and not team:
        raise BadRequest("a user token belongs to a team: pass --team", detail={"field": "team"})
    if role is Role.AGENT and not host:
        raise BadRequest("an agent token is bound to one host: pass --host", detail={"field": "host"})
    if role is not Role.AGENT and host:
        raise BadRequest("only agent tokens are bound to a host", detail={"field": "host"})


TOKEN_NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")


def check_name(name: str) -> None:
    """A token's name goes in URLs (``DELETE /v1/tokens/NAME``): letters, digits, ``.``, ``_``
    and ``-``, at most 100, and not ``.`` or ``..``, which a URL cannot name."""
    if not TOKEN_NAME.fullmatch(name) or name in (".", ".."):
        raise BadRequest(
            f"token name {name[:120]!r} is not allowed: use 1-100 of letters, digits, '.', '_' and '-'"
            " (not '.' or '..')"
        )


def insert_token(
    conn: sa.Connection, *, name: str, role: Role, team: str | None = None, host: str | None = None
) -> tuple[str, dict[str, Any]]:
    check_name(name)
    _check_binding(role, team, host)
    secret = "fy_" + secrets.token_urlsafe(32)
    row = {
        "name": name,
        "secret_sha256": hash_secret(secret),
        "role": str(role),
        "team": team,
        "host": host,
        "created_at": now(),
        "revoked_at": None,
    }
    # The name is the key (a revoked token keeps its name): a create racing another of the same
    # name waits for it, then finds the name taken, and answers 409 as a create after it would.
    if not insert_ignore(conn, t.tokens, [row]):
        raise Conflict(f"a token named {name!r} exists already; revoke it or pick another name")
    return secret, row


def create_token(db_url: str, *, name: str, role: Role, team: str | None = None, host: str | None = None) -> str:
    """Create a token straight in the store (bootstrap, before any server runs)."""
    store = Store(db_url)
    try:
        with store.write() as conn:
            secret, _ = insert_token(conn, name=name, role=role, team=team, host=host)
        return secret
    finally:
        store.dispose()


def revoke(conn: sa.Connection, name: str) -> None:
    res = conn.execute(
        t.tokens.update().where(t.tokens.c.name == name, t.tokens.c.revoked_at.is_(None)).values(revoked_at=now())
    )
    if res.rowcount == 0:
        raise NotFound(f"no live token named {name!r}")


def revocation_mark(conn: sa.Connection) -> tuple[int, float | None]:
    """What moves whenever a token is revoked: how many are, and the last time one was."""
    row = conn.execute(sa.select(sa.func.count(t.tokens.c.revoked_at), sa.func.max(t.tokens.c.revoked_at))).one()
    return int(row[0]), row[1]


def lookup(conn: sa.Connection, secret: str) -> Principal | None:
    row = conn.execute(
        sa.select(t.tokens).where(t.tokens.c.secret_sha256 == hash_secret(secret), t.tokens.c.revoked_at.is_(None))
    ).first()
    if row is None:
        return None
    return Principal(name=row.name, role=Role(row.role), team=row.team, host=row.host)
