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


def test_head_names_the_newest_migration_and_a_store_at_it_is_upgraded_without_alembic(db_url: str) -> None:
    from alembic.script import ScriptDirectory

    assert ScriptDirectory.from_config(migrate.alembic_config(db_url)).get_current_head() == migrate.HEAD
    migrate.upgrade(db_url)
    engine = sa.create_engine(db_url)
    with engine.begin() as c:  # as if the store were one migration behind: upgrade must run Alembic
        c.execute(sa.text("UPDATE alembic_version SET version_num = '0014'"))
        c.execute(sa.text("ALTER TABLE priority_classes DROP COLUMN max_lost_s"))
    migrate.upgrade(db_url)
    with engine.connect() as c:
        assert "max_lost_s" in {col["name"] for col in sa.inspect(c).get_columns("priority_classes")}
        assert c.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == migrate.HEAD
    engine.dispose()
