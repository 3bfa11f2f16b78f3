"""Artifacts: a pushed blob is inspected once, so a corrupt or unsupported one is refused at push,
not as a worker's crash later."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from fleetyard.domain.auth import Principal, Role
from fleetyard.errors import FleetyardError, NotFound
from fleetyard.protocol.api import ArtifactIn, ArtifactOut
from fleetyard.store import blob_readers
from fleetyard.store import tables as t
from fleetyard.store.blobs import BlobStore, check_digest
from fleetyard.store.db import Store, insert_ignore


def _out(r: Any) -> ArtifactOut:
    return ArtifactOut(
        sha256=r.sha256,
        name=r.name,
        format=r.format,
        runtime=r.runtime,
        size=r.size,
        info=r.info,
        created_at=r.created_at,
        created_by=r.created_by,
    )


def _may_publish(store: Store, principal: Principal, sha: str) -> bool:
    if principal.role is not Role.USER:
        return True
    with store.read() as conn:
        return blob_readers.readable(conn, sha, principal.team)


def push(store: Store, blobs: BlobStore, *, principal: Principal, req: ArtifactIn, at: float) -> ArtifactOut:
    """Register an uploaded blob as an artifact (idempotent: the same bytes give the same artifact)."""
    sha = check_digest(req.sha256)
    existing = _find(store, sha)
    if existing is not None:
        return existing
    if not blobs.has(sha) or not _may_publish(store, principal, sha):
        # The same answer for another team's blob: a registered artifact is every team's to read.
        raise NotFound(f"no blob {sha}: upload the artifact first (PUT /v1/blobs/{sha})", detail={"sha256": sha})
    from fleetyard import runtimes  # onnx and the runtimes load only on the first push

    try:
        info = runtimes.inspect(blobs.path(sha), sha256=sha)  # raises, naming what is wrong with it
    except FleetyardError as exc:
        if isinstance(exc.detail, dict):  # the server's own file paths stay on the server
            exc.detail = {k: v for k, v in exc.detail.items() if k != "path"}
        raise
    row = {
        "sha256": sha,
        "name": req.name or sha[:12],
        "format": info.format.value,
        "runtime": info.runtime,
        "size": info.size,
        "info": info.to_dict(),
        "created_at": at,
        "created_by": principal.name,
    }
    with store.write() as conn:
        insert_ignore(conn, t.artifacts, [row])
    found = _find(store, sha)
    assert found is not None
    return found


def _find(store: Store, sha256: str) -> ArtifactOut | None:
    with store.read() as conn:
        r = conn.execute(sa.select(t.artifacts).where(t.artifacts.c.sha256 == sha256)).first()
    return None if r is None else _out(r)


def get(store: Store, *, sha256: str) -> ArtifactOut:
    found = _find(store, check_digest(sha256))
    if found is None:
        raise NotFound(f"no artifact {sha256} (fleetyard artifacts push FILE registers one)")
    return found


def list_artifacts(store: Store, *, name: str | None = None, limit: int = 100) -> list[ArtifactOut]:
    q = sa.select(t.artifacts).order_by(t.artifacts.c.created_at.desc()).limit(limit)
    if name:
        q = q.where(t.artifacts.c.name == name)
    with store.read() as conn:
        return [_out(r) for r in conn.execute(q)]
