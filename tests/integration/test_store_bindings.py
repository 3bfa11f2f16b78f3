"""The scheduler's bulk writes, on both stores: attempts, ranks, board states and their events,
written set-based (store.attempts.bind_many, store.db.insert_many)."""

from __future__ import annotations

import sqlalchemy as sa

from fleetyard.store import migrate
from fleetyard.store import tables as t
from fleetyard.store.attempts import NewAttempt, bind_many
from fleetyard.store.db import Store, insert_many


def _fleet(store: Store, hosts: int = 2, per_host: int = 3, jobs: int = 3) -> None:
    with store.write() as conn:
        conn.execute(
            t.hosts.insert(),
            [
                {"id": f"h{h}", "state": "online", "driver": "sim", "labels": {}, "registered_at": 0.0}
                for h in range(hosts)
            ],
        )
        conn.execute(
            t.boards.insert(),
            [
                {
                    "id": f"h{h}-{s}",
                    "host_id": f"h{h}",
                    "slot": s,
                    "generation": "g1",
                    "firmware": "1.0",
                    "device": f"sim:{s}",
                    "labels": {},
                    "state": "available",
                    "state_changed_at": 0.0,
                    "telemetry": {},
                }
                for h in range(hosts)
                for s in range(per_host)
            ],
        )
        conn.execute(
            t.jobs.insert(),
            [
                {
                    "id": j,
                    "kind": "command",
                    "state": "queued",
                    "team": "t",
                    "owner": "o",
                    "priority": 0,
                    "spec": {},
                    "submitted_at": 0.0,
                    "attempts": 1 if j == 2 else 0,
                }
                for j in range(1, jobs + 1)
            ],
        )


def test_bind_many_starts_attempts_allocates_boards_and_records_their_history(db_url: str) -> None:
    migrate.upgrade(db_url)
    store = Store(db_url)
    try:
        _fleet(store)
        new = [
            NewAttempt(1, 1, (("h0-0", "h0"), ("h0-1", "h0"), ("h1-0", "h1"))),
            NewAttempt(2, 2, (("h1-2", "h1"),)),  # its second attempt
        ]
        with store.write() as conn:
            ids = bind_many(conn, new, at=5.0)
        assert len(ids) == 2 and len(set(ids)) == 2
        with store.read() as conn:
            attempts = {r.job_id: r for r in conn.execute(sa.select(t.attempts))}
            assert {j: (a.id, a.number, a.state, a.created_at) for j, a in attempts.items()} == {
                1: (ids[0], 1, "running", 5.0),
                2: (ids[1], 2, "running", 5.0),
            }
            ranks = conn.execute(sa.select(t.assignments).order_by(t.assignments.c.id)).all()
            assert [(r.attempt_id, r.job_id, r.rank, r.board_id, r.host_id, r.state) for r in ranks] == [
                (ids[0], 1, 0, "h0-0", "h0", "pending"),
                (ids[0], 1, 1, "h0-1", "h0", "pending"),
                (ids[0], 1, 2, "h1-0", "h1", "pending"),
                (ids[1], 2, 0, "h1-2", "h1", "pending"),
            ]
            assert all(r.result == {} and r.outputs == {} and r.created_at == 5.0 for r in ranks)
            boards = {r.id: r for r in conn.execute(sa.select(t.boards))}
            allocated = {i: (b.state, b.job_id, b.attempt_id, b.state_reason) for i, b in boards.items()}
            assert allocated == {
                "h0-0": ("allocated", 1, ids[0], "job 1 attempt 1"),
                "h0-1": ("allocated", 1, ids[0], "job 1 attempt 1"),
                "h1-0": ("allocated", 1, ids[0], "job 1 attempt 1"),
                "h1-2": ("allocated", 2, ids[1], "job 2 attempt 2"),
                "h0-2": ("available", None, None, None),
                "h1-1": ("available", None, None, None),
            }
            events = conn.execute(sa.select(t.board_events).order_by(t.board_events.c.id)).all()
            assert [(e.board_id, e.from_state, e.to_state, e.actor, e.job_id, e.attempt_id, e.at) for e in events] == [
                ("h0-0", "available", "allocated", "policy", 1, ids[0], 5.0),
                ("h0-1", "available", "allocated", "policy", 1, ids[0], 5.0),
                ("h1-0", "available", "allocated", "policy", 1, ids[0], 5.0),
                ("h1-2", "available", "allocated", "policy", 2, ids[1], 5.0),
            ]
            assert events[3].reason == "job 2 attempt 2"
            jobs = {r.id: (r.state, r.attempts) for r in conn.execute(sa.select(t.jobs))}
            assert jobs == {1: ("running", 1), 2: ("running", 2), 3: ("queued", 0)}
    finally:
        store.dispose()


def test_insert_many_puts_row_values_and_constants_in_their_columns(db_url: str) -> None:
    migrate.upgrade(db_url)
    store = Store(db_url)
    try:
        _fleet(store, jobs=3)
        stmt = t.attempts.insert().values(state="running", created_at=7.5)
        with store.write() as conn:
            # Keys in another order than the table's columns; one row's values, one constant.
            insert_many(conn, stmt, [{"number": 1, "job_id": 1}, {"number": 4, "job_id": 3}])
            insert_many(conn, t.attempts.insert().values(number=9, state="x", created_at=1.0), [{"job_id": 2}])
            insert_many(conn, stmt, [])
        with store.read() as conn:
            got = {(r.job_id, r.number, r.state, r.created_at) for r in conn.execute(sa.select(t.attempts))}
        assert got == {(1, 1, "running", 7.5), (3, 4, "running", 7.5), (2, 9, "x", 1.0)}
    finally:
        store.dispose()
