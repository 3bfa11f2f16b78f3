"""Request-scoped access to the process's store and settings."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Request

from fleetyard.store.db import Store

# The store's ids are 64-bit: a larger number names nothing, and is refused (422) before it reaches
# the database, whose driver would overflow.
MAX_ID = 2**63 - 1
RowId = Annotated[int, Path(ge=0, le=MAX_ID)]


def store(request: Request) -> Store:
    s: Store = request.app.state.store
    return s
