"""Blobs: content-addressed uploads and downloads."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from fleetyard.domain.auth import Principal, Role
from fleetyard.errors import NotFound, PayloadTooLarge
from fleetyard.protocol.api import BlobOut
from fleetyard.server.auth import ANY
from fleetyard.server.routers.deps import store
from fleetyard.store import blob_readers
from fleetyard.store import tables as t
from fleetyard.store.blobs import BlobStore, check_digest
from fleetyard.store.db import Store, insert_ignore, now

router = APIRouter(prefix="/v1/blobs", tags=["blobs"])


def _blobs(request: Request) -> BlobStore:
    b: BlobStore = request.app.state.blobs
    return b


@router.put("/{sha256}", response_model=BlobOut, status_code=201)
async def upload(
    sha256: str,
    request: Request,
    p: Principal = Depends(ANY),
    s: Store = Depends(store),
    blobs: BlobStore = Depends(_blobs),
) -> BlobOut:
    check_digest(sha256)
    limit: int = request.app.state.max_blob_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(
            f"blob of {declared} bytes is over the server's limit of {limit} bytes",
            detail={"limit_bytes": limit},
        )
    up = blobs.upload(sha256, max_bytes=limit)
    try:
        async for chunk in request.stream():
            up.write(chunk)  # local disk: small blocking writes, cheaper than a thread hop each
        size = up.commit()
    finally:
        up.abort()
    at = now()

    def record() -> None:
        with s.write() as conn:
            insert_ignore(conn, t.blobs, [{"sha256": sha256, "size": size, "created_at": at}])
            if p.role is Role.USER and p.team is not None:
                # Whoever sends the bytes has them: their team reads the blob from now on.
                blob_readers.grant(conn, [sha256], p.team)

    await run_in_threadpool(record)
    return BlobOut(sha256=sha256, size=size, created_at=at)


def _check_reader(s: Store, p: Principal, sha256: str) -> None:
    """A user reads only the blobs their team may (see :mod:`fleetyard.store.blob_readers`); to
    anyone else the blob does not exist, whether it does or not."""
    if p.role is not Role.USER:
        return
    with s.read() as conn:
        if blob_readers.readable(conn, sha256, p.team):
            return
    raise NotFound(
        f"no blob {sha256} that team {p.team} may read: a team reads the blobs it uploaded, its jobs'"
        f" outputs and registered artifacts (upload it: PUT /v1/blobs/{sha256})",
        detail={"sha256": sha256},
    )


@router.head("/{sha256}")
def has(
    sha256: str, p: Principal = Depends(ANY), s: Store = Depends(store), blobs: BlobStore = Depends(_blobs)
) -> Response:
    check_digest(sha256)
    _check_reader(s, p, sha256)  # so a client uploads what its team may not read yet
    if not blobs.has(sha256):
        raise NotFound(f"no blob {sha256}")
    return Response(status_code=200)


@router.get("/{sha256}")
def download(
    sha256: str, p: Principal = Depends(ANY), s: Store = Depends(store), blobs: BlobStore = Depends(_blobs)
) -> FileResponse:
    check_digest(sha256)
    _check_reader(s, p, sha256)
    if not blobs.has(sha256):
        with s.read() as conn:
            known = conn.execute(sa.select(t.blobs.c.sha256).where(t.blobs.c.sha256 == sha256)).first()
        raise NotFound(
            f"no blob {sha256}" + (" (recorded, but its file is missing from this server's blob dir)" if known else "")
        )
    return FileResponse(blobs.path(sha256), media_type="application/octet-stream")
