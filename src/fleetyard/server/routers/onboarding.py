"""Onboarding progress: per batch, and per board of a batch."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from fleetyard.domain.auth import Principal
from fleetyard.errors import NotFound
from fleetyard.protocol.api import OnboardingBatchOut, OnboardingBoardOut
from fleetyard.server.auth import ANY
from fleetyard.server.routers.deps import store
from fleetyard.store import onboarding
from fleetyard.store.db import Store

router = APIRouter(prefix="/v1/onboarding", tags=["onboarding"])


@router.get("", response_model=list[OnboardingBatchOut])
def batches(_: Principal = Depends(ANY), s: Store = Depends(store)) -> list[OnboardingBatchOut]:
    """Each batch, newest first: boards per step, first queued, last finished, done and failed."""
    with s.read() as conn:
        return [OnboardingBatchOut.model_validate(b) for b in onboarding.batches(conn)]


# A batch name may hold slashes ("sjc1/r01"): the rest of the path is the batch.
@router.get("/{batch:path}", response_model=list[OnboardingBoardOut])
def batch(batch: str, _: Principal = Depends(ANY), s: Store = Depends(store)) -> list[OnboardingBoardOut]:
    """Each board of a batch: its step, since when, its evidence and outcome."""
    with s.read() as conn:
        rows = onboarding.batch_boards(conn, batch)
    if rows is None:
        raise NotFound(f"no onboarding batch {batch!r} (fleetyard onboarding status lists them)")
    return [OnboardingBoardOut.model_validate(r) for r in rows]
