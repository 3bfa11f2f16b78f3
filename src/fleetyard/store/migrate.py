"""Alembic migrations, run from code: on start of the server and controller, or `fleetyard db upgrade`."""

from __future__ import annotations

import fcntl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from fleetyard.store.db import is_unavailable, make_engine, sqlite_path
from fleetyard.store.outage import Outage

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
# The newest migration's revision (tests/integration/test_migrations.py checks it against the
# scripts). A store already at it needs no Alembic: each server and controller start, and each
# test's, skips importing it (0.2 s).
HEAD = "0015"
# Any fixed 64-bit number: serialises concurrent upgrades on one PostgreSQL database.
_PG_MIGRATION_LOCK = 0x466C656574_01


def alembic_config(url: str) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


@contextmanager
def _migration_lock(url: str, engine: sa.Engine) -> Iterator[sa.Connection]:
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(f"{path}.migrate.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            with engine.connect() as conn:
                yield conn
        return
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
        conn.commit()
        try:
            yield conn
        finally:
            conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_MIGRATION_LOCK})
            conn.commit()


def _run(url: str, fn: str, revision: str) -> None:
    engine = make_engine(url)
    try:
        if fn == "upgrade" and revision == "head" and _at(engine) == HEAD:
            return
        from alembic import command

        with _migration_lock(url, engine):
            cfg = alembic_config(url)
            with engine.connect() as conn:
                cfg.attributes["connection"] = conn
                getattr(command, fn)(cfg, revision)
                conn.commit()
    finally:
        engine.dispose()


def _at(engine: sa.Engine) -> str | None:
    """The store's revision (None: a new store, or one Alembic never ran on)."""
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database to ``revision`` (creating it on first use)."""
    _run(url, "upgrade", revision)


def upgrade_when_available(url: str, outage: Outage) -> None:
    """:func:`upgrade`, waiting for a store that is down (as a process starting beside a database
    that restarts does), until ``outage`` gives up (:class:`~fleetyard.errors.StoreUnavailable`)."""
    while True:
        try:
            upgrade(url)
        except sa.exc.SQLAlchemyError as exc:
            if not is_unavailable(exc):
                raise
            time.sleep(outage.failed(exc))
            continue
        outage.ok()
        return


def downgrade(url: str, revision: str) -> None:
    _run(url, "downgrade", revision)


def check(url: str) -> None:
    """Raise if the tables in code differ from what the migrations build (alembic check)."""
    from alembic import command

    engine = make_engine(url)
    try:
        cfg = alembic_config(url)
        with engine.connect() as conn:
            cfg.attributes["connection"] = conn
            command.check(cfg)
    finally:
        engine.dispose()
