"""Tokens through the API (admins only)."""

from __future__ import annotations

import sqlalchemy as sa

from fleetyard.domain.auth import Principal
from fleetyard.protocol.api import TokenIn, TokenOut
from fleetyard.server.services.audit import note
from fleetyard.store import tables as t
from fleetyard.store import tokens as store_tokens
from fleetyard.store.db import Store


def create(store: Store, *, req: TokenIn, principal: Principal, at: float) -> TokenOut:
    with store.write() as conn:
        secret, row = store_tokens.insert_token(conn, name=req.name, role=req.role, team=req.team, host=req.host)
        # The request, never the secret made for it.
        detail = {"role": str(req.role), "team": req.team, "host": req.host}
        note(conn, principal, "token.create", req.name, at=at, detail=detail)
    return TokenOut(
        name=row["name"],
        role=req.role,
        team=req.team,
        host=req.host,
        created_at=row["created_at"],
        token=secret,
    )


def list_tokens(store: Store) -> list[TokenOut]:
    with store.read() as conn:
        rows = conn.execute(sa.select(t.tokens).where(t.tokens.c.revoked_at.is_(None)).order_by(t.tokens.c.name))
        return [TokenOut(name=r.name, role=r.role, team=r.team, host=r.host, created_at=r.created_at) for r in rows]


def revoke(store: Store, *, name: str, principal: Principal, at: float) -> None:
    with store.write() as conn:
        store_tokens.revoke(conn, name)
        note(conn, principal, "token.revoke", name, at=at)
