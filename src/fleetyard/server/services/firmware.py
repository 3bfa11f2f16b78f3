"""The firmware registry: images per generation, each a blob, one of them the generation's standard.

An image is registered once per (generation, version); pushing the same bytes again changes
nothing, other bytes under a registered version are refused. A sim image's header must agree
with the generation and version it is pushed for (:mod:`fleetyard.domain.firmware_image`).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from packaging.version import Version

from fleetyard.domain.auth import Principal
from fleetyard.domain.firmware import parse_version
from fleetyard.domain.firmware_image import read_header
from fleetyard.errors import BadRequest, Conflict, NotFound
from fleetyard.protocol.api import FirmwareIn, FirmwareOut
from fleetyard.server.services.audit import note
from fleetyard.store import tables as t
from fleetyard.store.blobs import BlobStore, check_digest
from fleetyard.store.db import Store, insert_ignore

F = t.firmware_images


def _out(r: Any) -> FirmwareOut:
    return FirmwareOut(
        generation=r.generation,
        version=r.version,
        sha256=r.sha256,
        size=r.size,
        notes=r.notes,
        hardware_revisions=list(r.hardware_revisions or []),
        standard=r.standard,
        uploaded_by=r.uploaded_by,
        uploaded_at=r.uploaded_at,
    )


def push(store: Store, blobs: BlobStore, *, principal: Principal, req: FirmwareIn, at: float) -> FirmwareOut:
    """Register an uploaded image for a generation (idempotent for the same bytes)."""
    sha = check_digest(req.sha256)
    if parse_version(req.version) is None:
        raise BadRequest(
            f"firmware version {req.version!r} is not a PEP 440 version (e.g. 2.2.0): rollouts and "
            "firmware selectors order versions",
            detail={"version": req.version},
        )
    if not blobs.has(sha):
        raise NotFound(f"no blob {sha}: upload the image first (PUT /v1/blobs/{sha})", detail={"sha256": sha})
    header = read_header(blobs.path(sha))
    if header is not None and header["generation"] != req.generation:
        raise BadRequest(
            f"this image is for generation {header['generation']}, not {req.generation}: push it for "
            f"{header['generation']}, or push the {req.generation} image",
            detail={"image_generation": header["generation"], "generation": req.generation},
        )
    if header is not None and header["version"] != req.version:
        raise BadRequest(
            f"this image is version {header['version']}, not {req.version}: push it as {header['version']}",
            detail={"image_version": header["version"], "version": req.version},
        )
    this = sa.select(F).where(F.c.generation == req.generation, F.c.version == req.version)
    with store.write() as conn:
        found = conn.execute(this).first()
        if found is None:
            row = {
                "generation": req.generation,
                "version": req.version,
                "sha256": sha,
                "size": blobs.path(sha).stat().st_size,
                "notes": req.notes,
                "hardware_revisions": req.hardware_revisions,
                "uploaded_by": principal.name,
                "uploaded_at": at,
            }
            # (generation, version) is unique: a push racing another of the same version waits
            # for it, then finds the version registered, as a push after it would.
            if insert_ignore(conn, F, [row]):
                note(
                    conn,
                    principal,
                    "firmware.push",
                    f"{req.generation}/{req.version}",
                    at=at,
                    detail={"sha256": sha, "notes": req.notes, "hardware_revisions": req.hardware_revisions},
                )
                return _out(conn.execute(this).one())
            found = conn.execute(this).one()  # it committed while this insert waited for it
        if found.sha256 != sha:
            raise Conflict(
                f"{req.generation} firmware {req.version} is registered already with other bytes "
                f"(sha256 {found.sha256}); a version names one image: push this one as a new version",
                detail={"sha256": found.sha256},
            )
        return _out(found)


def list_images(store: Store, *, generation: str | None = None) -> list[FirmwareOut]:
    """The registered images, by generation, newest version first."""
    q = sa.select(F)
    if generation:
        q = q.where(F.c.generation == generation)
    with store.read() as conn:
        rows = [_out(r) for r in conn.execute(q)]
    rows.sort(key=lambda f: parse_version(f.version) or Version("0"), reverse=True)
    return sorted(rows, key=lambda f: f.generation)  # stable: the newest version first in each generation


def get(store: Store, *, generation: str, version: str) -> FirmwareOut:
    with store.read() as conn:
        r = conn.execute(sa.select(F).where(F.c.generation == generation, F.c.version == version)).first()
    if r is None:
        raise NotFound(f"no {generation} firmware {version} (fleetyard firmware ls --gen {generation})")
    return _out(r)


def set_standard(store: Store, *, generation: str, version: str, principal: Principal, at: float) -> FirmwareOut:
    """Make a registered image its generation's standard (the one onboarding flashes)."""
    get(store, generation=generation, version=version)
    with store.write() as conn:
        conn.execute(F.update().where(F.c.generation == generation).values(standard=F.c.version == version))
        note(conn, principal, "firmware.standard", f"{generation}/{version}", at=at)
    return get(store, generation=generation, version=version)
