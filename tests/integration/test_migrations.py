"""Migrations: upgrade, no drift from the tables in code, downgrade, on both stores."""

from __future__ import annotations

import sqlalchemy as sa

from fleetyard.store import migrate


def test_upgrade_check_downgrade(db_url: str) -> None:
    migrate.upgrade(db_url)
    migrate.upgrade(db_url)  # idempotent
    migrate.check(db_url)
    engine = sa.create_engine(db_url)
    with engine.connect() as c:
        assert "board_events" in sa.inspect(c).get_table_names()
    migrate.downgrade(db_url, "base")
    with engine.connect() as c:
        assert "board_events" not in sa.inspect(c).get_table_names()
    engine.dispose()
    migrate.upgrade(db_url)
