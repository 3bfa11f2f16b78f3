"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.unit.test_api_flow import Fleet


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    """The server app, a reconciler and a store on SQLite, in this process (:class:`Fleet`)."""
    f = Fleet(tmp_path)
    with f.client:
        yield f
    f.store.dispose()
