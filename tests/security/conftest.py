"""Attacks on the fleet by the work it runs, as a hostile user's job would try them, on real
processes (the integration harness's server, controller and agents)."""

from tests.integration.conftest import (  # noqa: F401 - fixtures and the hook that shows logs on failure
    db_url,
    pg_cluster,
    pytest_runtest_makereport,
    sqlite_stack,
)
