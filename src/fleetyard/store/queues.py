"""Queues, priority classes and fair-share usage as rows: read them for the policy, write configs.

Writers take the caller's write transaction (``with store.write() as conn``), so that replacing
the whole configuration is one atomic change that a scheduling pass sees entirely or not at all.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from fleetyard.domain.board import BoardState
from fleetyard.domain.queue_config import QueueConfig
from fleetyard.errors import NotFound
from fleetyard.policy.queues import DEFAULT_PRIORITY_CLASSES, PriorityClass, QueueSpec
from fleetyard.store import tables as t
from fleetyard.store.db import insert_ignore

# Held by apply_config (exclusive) and by put_queue and delete_queue (shared): "Fleet", as
# store.inventory's, store.migrate's and controller.leader's keys, with a number of its own.
_PG_CONFIG_LOCK = 0x466C656574_11


def _lock_config(conn: sa.Connection, *, shared: bool) -> None:
    """Hold the queue configuration until this transaction ends: an apply alone (exclusive), or
    any number of single-queue writes (shared). SQLite has one writer at a time: nothing to take."""
    if conn.dialect.name == "postgresql":
        fn = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
        conn.execute(sa.text(f"SELECT {fn}(:k)"), {"k": _PG_CONFIG_LOCK})


def _spec(row: sa.Row[Any]) -> QueueSpec:
    m = row._mapping
    nominal = m["nominal"]
    return QueueSpec(
        name=m["name"],
        nominal=None if nominal is None else {str(k): int(v) for k, v in nominal.items()},
        cohort=m["cohort"],
        borrowing_limit={str(k): int(v) for k, v in (m["borrowing_limit"] or {}).items()},
    )


def read_queues(conn: sa.Connection) -> dict[str, QueueSpec]:
    """Every configured queue by name; a team not here is an unlimited queue of its own."""
    rows = conn.execute(sa.select(t.queues).order_by(t.queues.c.name)).all()
    return {r.name: _spec(r) for r in rows}


def read_queue_rows(conn: sa.Connection) -> dict[str, sa.Row[Any]]:
    """The rows themselves (with ``updated_at``/``updated_by``), for views."""
    return {r.name: r for r in conn.execute(sa.select(t.queues).order_by(t.queues.c.name)).all()}


def read_priority_classes(conn: sa.Connection) -> tuple[PriorityClass, ...]:
    """The configured classes, highest first; the defaults while none are configured."""
    rows = conn.execute(
        sa.select(t.priority_classes).order_by(t.priority_classes.c.value.desc(), t.priority_classes.c.name)
    ).all()
    if not rows:
        return DEFAULT_PRIORITY_CLASSES
    return tuple(
        PriorityClass(r.name, r.value, bool(r.is_default), None if r.teams is None else tuple(r.teams), r.max_lost_s)
        for r in rows
    )


def read_usage(conn: sa.Connection) -> dict[str, float]:
    """Decayed board-seconds per queue (fair share), as the controller last advanced them."""
    return {r.queue: float(r.usage) for r in conn.execute(sa.select(t.queue_usage.c.queue, t.queue_usage.c.usage))}


def _row(spec: QueueSpec, *, by: str, at: float) -> dict[str, object]:
    return {
        "name": spec.name,
        "cohort": spec.cohort,
        # SQL NULL, not JSON null: "unlimited" is the absence of a quota.
        "nominal": sa.null() if spec.nominal is None else dict(spec.nominal),
        "borrowing_limit": dict(spec.borrowing_limit),
        "updated_at": at,
        "updated_by": by,
    }


def apply_config(conn: sa.Connection, config: QueueConfig, *, by: str, at: float) -> None:
    """Replace every queue and priority class with ``config``'s (classes absent: the defaults).

    Two applies at once take turns (on PostgreSQL the second would not see the rows the first
    inserted: it would fail on their names, or leave the union of both), and a put or delete of
    one queue waits for an apply or goes before it: the result is always one whole config."""
    _lock_config(conn, shared=False)
    conn.execute(t.queues.delete())
    for spec in config.specs().values():
        conn.execute(t.queues.insert().values(**_row(spec, by=by, at=at)))
    conn.execute(t.priority_classes.delete())
    if config.priority_classes is not None:
        conn.execute(
            t.priority_classes.insert(),
            [
                {
                    "name": c.name,
                    "value": c.value,
                    "is_default": c.default,
                    "teams": c.teams,
                    "max_lost_s": c.max_lost_s,
                }
                for c in config.priority_classes
            ],
        )


def put_queue(conn: sa.Connection, spec: QueueSpec, *, by: str, at: float) -> bool:
    """Create or replace one queue; True when it was new. Two operators racing both succeed, the
    later write wins; an apply of a whole config goes before or after, never in between."""
    _lock_config(conn, shared=True)
    row = _row(spec, by=by, at=at)
    new = insert_ignore(conn, t.queues, [{**row, "nominal": {}}]) > 0
    conn.execute(t.queues.update().where(t.queues.c.name == spec.name).values(**row))
    return new


def delete_queue(conn: sa.Connection, name: str) -> None:
    """Remove a queue: its team becomes unlimited again."""
    _lock_config(conn, shared=True)
    if conn.execute(t.queues.delete().where(t.queues.c.name == name)).rowcount == 0:
        raise NotFound(f"no queue {name!r} is configured (fleetyard queues ls lists them)")


def boards_held(conn: sa.Connection) -> dict[str, dict[str, int]]:
    """Allocated boards per team (queue) and generation: what each queue uses of its quota now."""
    held: dict[str, dict[str, int]] = {}
    rows = conn.execute(
        sa.select(t.jobs.c.team, t.boards.c.generation, sa.func.count().label("n"))
        .select_from(t.boards.join(t.jobs, t.boards.c.job_id == t.jobs.c.id))
        .where(t.boards.c.state == str(BoardState.ALLOCATED))
        .group_by(t.jobs.c.team, t.boards.c.generation)
    )
    for r in rows:
        held.setdefault(r.team, {})[r.generation] = int(r.n)
    return held
