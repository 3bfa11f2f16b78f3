"""Integration fixtures: every test runs once on SQLite and once on a throwaway PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import PostgresCluster, Stack, running_stack
from tests.long import FULL


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster()
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fleetyard.db'}"
    cluster: PostgresCluster = request.getfixturevalue("pg_cluster")
    return cluster.new_database()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Bounded runs take a ``one_store`` test on its one store (see tests/long.py)."""
    if FULL:
        return
    keep, drop = [], []
    for item in items:
        marker = item.get_closest_marker("one_store")
        callspec = getattr(item, "callspec", None)
        store = callspec.params.get("db_url") if callspec is not None else None
        (drop if marker is not None and store is not None and store != marker.args[0] else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def stack(request: pytest.FixtureRequest, db_url: str, tmp_path: Path) -> Iterator[Stack]:
    with running_stack(db_url, tmp_path) as s:
        yield s
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            print(s.logs())  # the processes' own account, shown with the failure


@pytest.fixture
def sqlite_stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    """A stack on SQLite only: for a slow test whose store-specific paths another test already
    runs on both stores (the suite's time is budgeted on two cores)."""
    with running_stack(f"sqlite:///{tmp_path / 'fleetyard.db'}", tmp_path) as s:
        yield s
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            print(s.logs())
