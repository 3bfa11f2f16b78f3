"""Team queues and priority classes: what each team holds, borrows and waits for; configuration."""

from __future__ import annotations

from collections import defaultdict

import sqlalchemy as sa
from pydantic import ValidationError

from fleetyard.domain.auth import Principal
from fleetyard.domain.job import JobState
from fleetyard.domain.queue_config import QueueConfig, QueueEntry, QueueQuota
from fleetyard.errors import BadRequest, NotFound
from fleetyard.policy.queues import UNLIMITED, QueueSpec, QuotaLedger
from fleetyard.protocol.api import PriorityClassOut, QueueGenerationOut, QueueOut
from fleetyard.server.services.audit import note
from fleetyard.store import queues as q
from fleetyard.store import tables as t
from fleetyard.store.db import Store


def _or_none(n: int) -> int | None:
    return None if n >= UNLIMITED else n


def _snapshot(conn: sa.Connection, only: str | None = None) -> list[QueueOut]:
    """Every queue, configured or only implied by a team's jobs (those are unlimited)."""
    rows = q.read_queue_rows(conn)
    specs = q.read_queues(conn)
    usage = q.read_usage(conn)
    in_use: dict[str, dict[str, int]] = defaultdict(dict, q.boards_held(conn))
    # Per team: (generations named, boards) of each queued job; only the two fields, not whole specs.
    pending: dict[str, list[tuple[frozenset[str], int]]] = defaultdict(list)
    waiting = sa.select(
        t.jobs.c.team, t.jobs.c.spec["boards"].as_integer().label("boards"), t.jobs.c.spec["generations"].label("gens")
    ).where(t.jobs.c.state == str(JobState.QUEUED))
    for r in conn.execute(waiting):
        pending[r.team].append((frozenset(r.gens or ()), int(r.boards or 1)))
    teams = set(specs) | set(usage) | set(conn.execute(sa.select(t.jobs.c.team).distinct()).scalars())
    if only is not None:
        teams &= {only}
    ledger = QuotaLedger(specs, in_use)
    out = []
    for team in sorted(teams):
        spec = ledger.spec(team)
        jobs = pending.get(team, [])
        gens = set(spec.nominal or ()) | set(spec.borrowing_limit) | set(in_use.get(team, ()))
        gens |= {g for named, _ in jobs for g in named}
        per_gen = []
        for gen in sorted(gens):
            fits = [boards for named, boards in jobs if not named or gen in named]
            per_gen.append(
                QueueGenerationOut(
                    generation=gen,
                    nominal=_or_none(spec.nominal_of(gen)),
                    borrowing_limit=spec.borrowing_limit.get(gen),
                    in_use=ledger.usage(team, gen),
                    borrowed=ledger.borrowing(team, gen),
                    headroom=_or_none(ledger.headroom(team, gen)),
                    pending_jobs=len(fits),
                    pending_boards=sum(fits),
                )
            )
        row = rows.get(team)
        out.append(
            QueueOut(
                name=team,
                configured=row is not None,
                cohort=spec.cohort,
                nominal=None if spec.nominal is None else dict(spec.nominal),
                borrowing_limit=dict(spec.borrowing_limit),
                usage=usage.get(team, 0.0),
                pending_jobs=len(jobs),
                pending_boards=sum(b for _, b in jobs),
                generations=per_gen,
                updated_at=row.updated_at if row is not None else None,
                updated_by=row.updated_by if row is not None else None,
            )
        )
    return out


def list_queues(store: Store) -> list[QueueOut]:
    with store.read() as conn:
        return _snapshot(conn)


def get_queue(store: Store, *, name: str) -> QueueOut:
    with store.read() as conn:
        found = _snapshot(conn, only=name)
    if not found:
        raise NotFound(f"no queue {name!r}: no such queue is configured and team {name!r} has no jobs")
    return found[0]


def _entry(name: str, quota: QueueQuota) -> QueueSpec:
    try:
        entry = QueueEntry.model_validate({"name": name, **quota.model_dump(exclude_unset=True)})
    except ValidationError as exc:
        msg = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise BadRequest(f"queue {name!r}: {msg}", detail={"field": "name"}) from None
    return entry.to_spec(name)


def put_queue(store: Store, *, name: str, quota: QueueQuota, principal: Principal, at: float) -> QueueOut:
    spec = _entry(name, quota)
    with store.write() as conn:
        q.put_queue(conn, spec, by=principal.name, at=at)
        note(conn, principal, "queue.put", name, at=at, detail=quota.model_dump(mode="json", exclude_unset=True))
    return get_queue(store, name=name)


def delete_queue(store: Store, *, name: str, principal: Principal, at: float) -> None:
    with store.write() as conn:
        q.delete_queue(conn, name)
        note(conn, principal, "queue.delete", name, at=at)


def apply_config(store: Store, *, config: QueueConfig, principal: Principal, at: float) -> list[QueueOut]:
    """Replace every queue and priority class at once."""
    with store.write() as conn:
        q.apply_config(conn, config, by=principal.name, at=at)
        # No one target: the whole configuration was replaced; the detail holds it.
        note(conn, principal, "queues.apply", None, at=at, detail=config.model_dump(mode="json", exclude_unset=True))
    return list_queues(store)


def priority_classes(store: Store) -> list[PriorityClassOut]:
    with store.read() as conn:
        classes = q.read_priority_classes(conn)
    return [
        PriorityClassOut(
            name=c.name,
            value=c.value,
            default=c.default,
            teams=None if c.teams is None else list(c.teams),
            max_lost_s=c.max_lost_s,
        )
        for c in classes
    ]
