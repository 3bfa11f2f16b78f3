"""Integration fixtures: every test runs once on SQLite and once on a throwaway PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import PostgresCluster, Stack, running_stack


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
