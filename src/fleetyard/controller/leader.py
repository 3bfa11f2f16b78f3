"""One leader: a PostgreSQL advisory lock, or a file lock beside the SQLite database."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

import sqlalchemy as sa

from fleetyard.store.db import Store

_PG_LEADER_LOCK = 0x466C656574_02


class Leadership:
    """Held while the process lives; the OS or PostgreSQL frees it when the process dies."""

    def __init__(self, store: Store, lock_dir: Path | None) -> None:
        self.store = store
        self.lock_dir = lock_dir
        self._file: IO[str] | None = None
        self._conn: sa.Connection | None = None

    def try_acquire(self) -> bool:
        if self.store.sqlite:
            assert self.lock_dir is not None
            self.lock_dir.mkdir(parents=True, exist_ok=True)
            f = open(self.lock_dir / "controller.lock", "w")  # noqa: SIM115 - held for the process's life
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
