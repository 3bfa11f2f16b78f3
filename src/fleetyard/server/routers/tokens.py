"""Tokens (admins only)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from fleetyard.domain.auth import Principal
from fleetyard.protocol.api import TokenIn, TokenOut
from fleetyard.server.auth import ADMIN
from fleetyard.server.routers.deps import store
from fleetyard.server.services import tokens as svc
from fleetyard.store.db import Store, now

router = APIRouter(prefix="/v1/tokens", tags=["tokens"])


@router.post("", response_model=TokenOut, status_code=201)
def create(body: TokenIn, p: Principal = Depends(ADMIN), s: Store = Depends(store)) -> TokenOut:
    return svc.create(s, req=body, principal=p, at=now())


@router.get("", response_model=list[TokenOut])
def list_tokens(_: Principal = Depends(ADMIN), s: Store = Depends(store)) -> list[TokenOut]:
    return svc.list_tokens(s)


@router.delete("/{name}", status_code=204)
def revoke(name: str, request: Request, p: Principal = Depends(ADMIN), s: Store = Depends(store)) -> Response:
    svc.revoke(s, name=name, principal=p, at=now())
    request.app.state.tokens.forget()
    return Response(status_code=204)
