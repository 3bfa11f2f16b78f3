"""Prometheus metrics for ``GET /metrics``, read from the store at each scrape.

The collector holds no counts of its own: every scrape runs a few aggregate queries (GROUP BY) in
one read transaction, so that every replica of the server answers the same numbers and a restart
loses nothing. It is registered on a registry of its app's own, not on prometheus_client's global
one, so that several apps in one process (tests) do not collide.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import sqlalchemy as sa
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from fleetyard.domain.board import BoardState
from fleetyard.store import tables as t
from fleetyard.store.attempts import SWEPT_KEY
from fleetyard.store.db import Store
from fleetyard.store.settings import get_setting


class StoreCollector:
    """Yields the fleet's boards, hosts, jobs, queue usage and history as metric families."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        boards = GaugeMetricFamily(
            "fleetyard_boards", "Boards by state and generation.", labels=["state", "generation"]
        )
        hosts = GaugeMetricFamily("fleetyard_hosts", "Hosts by state.", labels=["state"])
        jobs = GaugeMetricFamily("fleetyard_jobs", "Jobs by state and queue (team).", labels=["state", "queue"])
        in_use = GaugeMetricFamily(
            "fleetyard_queue_boards_in_use",
            "Boards allocated to a queue's (team's) jobs, by generation.",
            labels=["queue", "generation"],
        )
        nominal = GaugeMetricFamily(
            "fleetyard_queue_nominal_boards",
            "A configured queue's nominal quota of boards, by generation (absent: unlimited).",
            labels=["queue", "generation"],
        )
        attempts = CounterMetricFamily("fleetyard_attempts", "Finished attempts by outcome.", labels=["outcome"])
        transitions = CounterMetricFamily(
            "fleetyard_board_transitions", "Board state changes by the state entered.", labels=["to_state"]
        )
        breakers = GaugeMetricFamily(
            "fleetyard_breaker_tripped",
            "1 while a generation's circuit breaker is tripped (automatic remediation stopped).",
            labels=["generation"],
        )
        with self.store.read() as conn:
            for gen in conn.execute(
                sa.select(t.breakers.c.generation).where(t.breakers.c.reset_at.is_(None)).distinct()
            ).scalars():
                breakers.add_metric([gen], 1.0)
            b = t.boards.c
            for r in conn.execute(
                sa.select(b.state, b.generation, sa.func.count()).group_by(b.state, b.generation)
            ).all():
                boards.add_metric([r[0], r[1]], int(r[2]))
            h = t.hosts.c
            for r in conn.execute(sa.select(h.state, sa.func.count()).group_by(h.state)).all():
                hosts.add_metric([r[0]], int(r[1]))
            j = t.jobs.c
            for r in conn.execute(sa.select(j.state, j.team, sa.func.count()).group_by(j.state, j.team)).all():
                jobs.add_metric([r[0], r[1]], int(r[2]))
            held = (
                sa.select(j.team, b.generation, sa.func.count())
                .select_from(t.boards.join(t.jobs, b.job_id == j.id))
                .where(b.state == str(BoardState.ALLOCATED))
                .group_by(j.team, b.generation)
            )
            for r in conn.execute(held).all():
                in_use.add_metric([r[0], r[1]], int(r[2]))
            # One row per configured queue: a handful, read whole.
            q = t.queues.c
            for r in conn.execute(sa.select(q.name, q.nominal).where(q.nominal.is_not(None)).order_by(q.name)).all():
                for gen, n in sorted((r[1] or {}).items()):
                    nominal.add_metric([r[0], str(gen)], int(n))
            a = t.attempts.c
            for r in conn.execute(
                sa.select(a.outcome, sa.func.count()).where(a.outcome.is_not(None)).group_by(a.outcome)
            ).all():
                attempts.add_metric([r[0]], int(r[1]))
            e = t.board_events.c
            for r in conn.execute(sa.select(e.to_state, sa.func.count()).group_by(e.to_state)).all():
                transitions.add_metric([r[0]], int(r[1]))
            swept = CounterMetricFamily(
                "fleetyard_attempts_swept",
                "Attempts whose ranks had all ended that only the controller's sweeper settled (a bug if it grows).",
                value=int(get_setting(conn, SWEPT_KEY, 0)),
            )
        yield from (boards, hosts, jobs, in_use, nominal, attempts, transitions, breakers, swept)
        yield CounterMetricFamily(
            "fleetyard_store_races_retried",
            "Write transactions this server process ran again after the store aborted them for a deadlock"
            " or a serialization failure.",
            value=self.store.races_retried,
        )
        yield GaugeMetricFamily(
            "fleetyard_scrape_seconds",
            "Seconds this scrape spent reading the store.",
            value=time.perf_counter() - started,
        )


def make_registry(store: Store) -> CollectorRegistry:
    """A fresh registry holding only this store's collector (nothing is read until a scrape)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store))
    return registry
