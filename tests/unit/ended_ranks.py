"""A job, its attempt and its ended ranks written straight to the store: what a shell under test
reads (rollout figures, settle's peer blame) without running the work."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from fleetyard.store import tables as t


def ended_ranks(
    conn: sa.Connection,
    kind: str,
    ranks: list[dict[str, Any]],
    *,
    job_state: str = "failed",
    attempt_state: str = "finished",
    spec: dict[str, Any] | None = None,
    at: float = 10.0,
) -> tuple[int, int]:
    """A job of ``kind`` with one attempt whose ranks (each: ``board_id`` and the assignment's
    columns, such as ``outcome``, ``cause``, ``result``, ``outputs``) have ended; (job, attempt)."""
    job_id = conn.execute(
        t.jobs.insert()
        .values(kind=kind, state=job_state, team="t", owner="o", priority=0, spec=spec or {}, submitted_at=at)
        .returning(t.jobs.c.id)
    ).scalar_one()
    attempt = conn.execute(
        t.attempts.insert()
        .values(job_id=job_id, number=1, state=attempt_state, created_at=at)
        .returning(t.attempts.c.id)
    ).scalar_one()
    conn.execute(
        t.assignments.insert(),
        [
            {"attempt_id": attempt, "job_id": job_id, "rank": i, "host_id": "h1", "state": "exited",
             "created_at": at, "result": {}, "outputs": {}, **r}
            for i, r in enumerate(ranks)
        ],
    )  # fmt: skip
    return int(job_id), int(attempt)
