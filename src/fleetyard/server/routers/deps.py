"""Request-scoped access to the process's store and settings."""

from __future__ import annotations

from fastapi import Request

from fleetyard.store.db import Store


def store(request: Request) -> Store:
    s: Store = request.app.state.store
    return s
