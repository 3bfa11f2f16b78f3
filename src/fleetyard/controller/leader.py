"""One leader: a PostgreSQL advisory lock, or a file lock beside the SQLite database."""

from __future__ import annotations

import fcntl
import os
from typing import IO

import sqlalchemy as sa

from fleetyard.store.db import Store, sqlite_path

_PG_LEADER_LOCK = 0x466C656574_02


class Leadership:
    """Held while the process lives; the OS or PostgreSQL frees it when the process dies."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._file: IO[str] | None = None
        self._conn: sa.Connection | None = None

    def try_acquire(self) -> bool:
        if self.store.sqlite:
            # Beside the database file, so every controller of this database finds the same lock.
            f = open(f"{sqlite_path(self.store.url)}.controller.lock", "w")  # noqa: SIM115 - held while leading
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                return False
            f.write(str(os.getpid()))
            f.flush()
            self._file = f
            return True
        conn = self.store.engine.connect()
        got = bool(conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": _PG_LEADER_LOCK}).scalar())
        conn.commit()
        if not got:
            conn.close()
            return False
        self._conn = conn
        return True

    def still_held(self) -> bool:
        """False when the session holding a PostgreSQL lock was lost (then another may lead)."""
        if self._conn is None:
            return self._file is not None
        try:
            self._conn.execute(sa.text("SELECT 1"))
            self._conn.commit()
            return True
        except sa.exc.SQLAlchemyError:
            return False

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None
