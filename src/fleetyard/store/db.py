"""Engines and transactions for SQLite (embedded default, WAL) and PostgreSQL (production)."""

from __future__ import annotations

import logging
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from operator import itemgetter
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from fleetyard.errors import BadRequest

log = logging.getLogger(__name__)
T = TypeVar("T")

# PostgreSQL aborts one of two transactions that wait on each other (deadlock_detected), and one
# whose reads a concurrent commit invalidated (serialization_failure): both succeed run again.
RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})
WRITE_RETRIES = 6


def is_retryable(exc: BaseException) -> bool:
    """Whether the store aborted a transaction for a race that running it again resolves."""
    return getattr(getattr(exc, "orig", None), "sqlstate", None) in RETRYABLE_SQLSTATES


def is_unavailable(exc: BaseException) -> bool:
    """Whether the store could not be reached or did not answer (down, restarting, cut off, or
    still locked after the wait): worth waiting for, unlike a bug or a bad query."""
    return isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError | sa.exc.TimeoutError) or (
        isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated
    )


def resolve_db_url(db: str | None, data_dir: Path) -> str:
    """``--db`` wins; otherwise SQLite in the data folder."""
    if db:
        if db.startswith("postgresql://") or db.startswith("postgres://"):
            return "postgresql+psycopg://" + db.split("://", 1)[1]
        if db.startswith(("postgresql+psycopg://", "sqlite://")):
            return db
        raise BadRequest(
            f"unsupported database URL {db!r}: use postgresql://USER@HOST/DB or sqlite:///PATH",
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(data_dir / 'fleetyard.db').resolve()}"


def is_sqlite(url_or_engine: str | Engine) -> bool:
    url = url_or_engine if isinstance(url_or_engine, str) else str(url_or_engine.url)
    return url.startswith("sqlite")


def sqlite_path(url: str) -> Path | None:
    if not is_sqlite(url):
        return None
    return Path(sa.engine.make_url(url).database or "")


def make_engine(url: str, **kwargs: Any) -> Engine:
    if is_sqlite(url):
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, pool_size=20, **kwargs)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # We issue BEGIN ourselves (below) so that writers can take the lock up front.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            # NORMAL is durable across a crash of any process; only a power loss may drop the
            # last transactions.
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            # A deferred transaction that later writes can fail with SQLITE_BUSY at once when
            # another process wrote in between; IMMEDIATE takes the write lock up front.
            if conn.get_execution_options().get("sqlite_write"):
                _begin_immediate(conn.connection.dbapi_connection)
            else:
                conn.exec_driver_sql("BEGIN DEFERRED")

        return engine
    return sa.create_engine(url, **{"pool_size": 20, "max_overflow": 20, "pool_pre_ping": True, **kwargs})


# SQLite's own busy handler sleeps up to 100 ms between tries for a lock another process holds,
# which is most of a job's dispatch latency under load; ours polls every millisecond or two.
_LOCK_WAIT_S = 30.0


def _begin_immediate(dbapi_conn: Any) -> None:
    deadline = time.monotonic() + _LOCK_WAIT_S
    pause = 0.0005
    dbapi_conn.execute("PRAGMA busy_timeout=0")
    try:
        while True:
            try:
                dbapi_conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() > deadline:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 0.002)
    finally:
        dbapi_conn.execute("PRAGMA busy_timeout=30000")


class Store:
    """An engine with read and write transactions that fit both databases."""

    def __init__(self, url: str, engine: Engine | None = None) -> None:
        self.url = url
        self.engine = engine or make_engine(url)
        self.sqlite = is_sqlite(url)
        # SQLite has one writer at a time: this process's threads queue here, where a waiter
        # wakes the moment the lock is free, rather than polling SQLite's lock.
        self._write_lock = threading.Lock() if self.sqlite else None
        # Run first in every write transaction (the controller's leader fence: see controller.leader).
        self.before_write: Callable[[Connection], None] | None = None
        # Transactions this process ran again after a deadlock or serialization failure (a metric).
        self.races_retried = 0

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def write(self) -> Iterator[Connection]:
        if self._write_lock is None:
            with self.engine.connect() as conn, conn.begin():
                if self.before_write is not None:
                    self.before_write(conn)
                yield conn
            return
        with self._write_lock, self.engine.connect() as conn:
            conn.execution_options(sqlite_write=True)
            with conn.begin():
                if self.before_write is not None:
                    self.before_write(conn)
                yield conn

    def transact(self, fn: Callable[[Connection], T], *, retries: int = WRITE_RETRIES) -> T:
        """``fn`` in a write transaction; run again, after a short random pause, when PostgreSQL
        aborted it for a deadlock or a serialization failure, so that a race never loses what
        the caller writes. ``fn`` must do nothing outside the transaction it is given."""
        for attempt in range(1, retries + 1):
            try:
                with self.write() as conn:
                    return fn(conn)
            except sa.exc.DBAPIError as exc:
                if attempt == retries or not is_retryable(exc):
                    raise
                self.races_retried += 1
                log.info("transaction aborted (%s); running it again", exc.orig.__class__.__name__)
                time.sleep(random.uniform(0.5, 1.5) * 0.005 * 2**attempt)
        raise AssertionError("unreachable")

    def ping(self) -> bool:
        try:
            with self.read() as conn:
                conn.execute(sa.text("SELECT 1"))
            return True
        except sa.exc.SQLAlchemyError:
            return False

    def dispose(self) -> None:
        self.engine.dispose()


def now() -> float:
    """The shell's clock. Policy code never calls this; it is given the time."""
    return time.time()


def lock_rows(conn: Connection, table: sa.Table, ids: Iterable[Any]) -> None:
    """Hold these rows of ``table`` (by its ``id``) until the transaction ends, taken in id order.

    Every transaction that writes several rows of one table takes them in one order, so that two
    of them never wait on each other in a cycle (PostgreSQL would abort one: a deadlock). They are
    held FOR NO KEY UPDATE, as every row lock here is (no writer changes a key): a foreign-key
    check of a row that references them (FOR KEY SHARE) does not wait for it. FOR UPDATE made a
    cycle of a heartbeat flush holding a host and waiting for its board with a transaction that
    wrote that board twice (its second write checks the host's key). SQLite has one writer at a
    time: nothing to take there."""
    if conn.dialect.name != "postgresql":
        return
    want = sorted(set(ids))
    key = table.c.id
    for part in (want[i : i + 5000] for i in range(0, len(want), 5000)):
        conn.execute(sa.select(key).where(key.in_(part)).order_by(key).with_for_update(key_share=True))


def insert_ignore(conn: Connection, table: sa.Table, rows: list[dict[str, Any]]) -> int:
    """Insert rows, skipping any whose key exists already (idempotent writes). Returns rows added."""
    if not rows:
        return 0
    from sqlalchemy.dialects import postgresql, sqlite

    if conn.dialect.name == "postgresql":
        # psycopg's rowcount is -1 here (SQLAlchemy's insertmanyvalues): the inserted keys count.
        stmt = postgresql.insert(table).on_conflict_do_nothing().returning(*table.primary_key.columns)
        return len(conn.execute(stmt, rows).all())
    return max(0, conn.execute(sqlite.insert(table).on_conflict_do_nothing(), rows).rowcount)


def insert_many(conn: Connection, stmt: sa.Insert, rows: list[dict[str, Any]]) -> None:
    """``stmt`` for many rows through the driver's executemany, past SQLAlchemy's per-row
    parameter processing (half the cost of 10,000 rows here): for rows of plain ints, floats and
    strings only, all with the same keys; ``stmt``'s own ``values()`` are the constants."""
    if not rows:
        return
    keys = list(rows[0])
    compiled = stmt.compile(dialect=conn.dialect, column_keys=keys)
    constants = {n: v for n, v in compiled.params.items() if n not in rows[0]}
    if not compiled.positional:
        conn.exec_driver_sql(compiled.string, [{**constants, **r} for r in rows])
        return
    # Each row's values, then the constants, put in the statement's order (C-level, per row).
    names = list(compiled.positiontup or ())
    where = {n: i for i, n in enumerate([*keys, *constants])}
    tail = tuple(constants.values())
    at = [where[n] for n in names]
    order = itemgetter(*at) if len(at) > 1 else (lambda v: (v[at[0]],))
    conn.exec_driver_sql(compiled.string, [order(tuple(map(r.__getitem__, keys)) + tail) for r in rows])
