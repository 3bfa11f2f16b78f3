"""One leader: a PostgreSQL advisory lock, or a file lock beside the SQLite database.

On PostgreSQL the lock belongs to a database session, and a session can end under a live
controller (the database restarts, the connection is cut): another controller may then take the
lock while the first still runs. The leader therefore reaches the store through one connection
only, the session that took the lock, and every write transaction first checks, in that session,
that it still holds it (:meth:`Leadership.fence`). A session that ended takes its transactions
with it, and a fresh one holds no lock: no write of a controller that lost the lead commits, and
at most one controller leads at any moment.
"""

from __future__ import annotations

import fcntl
import os
from typing import IO

import sqlalchemy as sa

from fleetyard.store.db import Store, make_engine, sqlite_path

__all__ = ["Leadership", "LeadershipLost", "leader_store"]

_PG_LEADER_LOCK = 0x466C656574_02
# pg_locks shows a bigint advisory key as two 32-bit halves.
_KEY_HIGH, _KEY_LOW = _PG_LEADER_LOCK >> 32, _PG_LEADER_LOCK & 0xFFFFFFFF


class LeadershipLost(Exception):
    """This controller no longer holds the leader lock: it must stop acting as the leader."""


def leader_store(url: str) -> Store:
    """The controller's store: on PostgreSQL, one connection (the session that holds the lock)."""
    if url.startswith("sqlite"):
        return Store(url)
    return Store(url, engine=make_engine(url, pool_size=1, max_overflow=0))


class Leadership:
    """The leader lock of one controller process, over :func:`leader_store`'s store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._file: IO[str] | None = None
        self._held = False

    def try_acquire(self) -> bool:
        """Take the lock if no other controller holds it; True if this one now leads."""
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
        # The pool's one connection takes it, and goes back to the pool holding it (a pool only
        # rolls back what a connection leaves open): every later transaction runs in its session.
        with self.store.engine.connect() as conn:
            got = bool(conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": _PG_LEADER_LOCK}).scalar())
            conn.commit()
        self._held = got
        if got:
            self.store.before_write = self.fence
        return got

    def fence(self, conn: sa.Connection) -> None:
        """Raise :class:`LeadershipLost` unless ``conn``'s session holds the leader lock (the
        first statement of each of the leader's write transactions)."""
        if self.store.sqlite:
            return
        held = conn.execute(
            sa.text(
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND classid = :hi"
                " AND objid = :lo AND objsubid = 1 AND pid = pg_backend_pid() AND granted)"
            ),
            {"hi": _KEY_HIGH, "lo": _KEY_LOW},
        ).scalar()
        if not held:
            self._held = False
            raise LeadershipLost("the session that held the leader lock ended: another controller may lead")

    def still_held(self) -> bool:
        """Whether this controller still leads. A store that cannot tell now raises its error: a
        blip is ridden out like any other (the caller's backoff), not taken for a lost lead; a
        session that did end holds no lock, and the next check says so."""
        if self.store.sqlite:
            return self._file is not None
        if not self._held:
            return False
        try:
            with self.store.read() as conn:
                self.fence(conn)
            return True
        except LeadershipLost:
            return False

    def release(self) -> None:
        """Stop leading: the lock is freed (on PostgreSQL, with the session that held it)."""
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
        if not self.store.sqlite:
            self._held = False
            self.store.before_write = None
            self.store.engine.dispose()  # closes the session, and with it the lock
