"""When a lease (a job of kind ``lease``) ends on its own: its TTL runs out.

A lease's TTL clock starts when its boards are granted, not when it was taken: a lease still
waiting in the queue never expires. Renewing moves ``lease_expires_at``; the effective end is
the later of that and ``started_at + ttl_s``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class LeaseView:
    job_id: int
    lease_expires_at: float | None  # now + ttl at take, moved by each renew
    started_at: float | None  # when its first rank started: None while it waits for boards
    ttl_s: float


def expires_at(lease: LeaseView) -> float | None:
    """When the lease ends unless renewed; None while it waits for its boards."""
    if lease.started_at is None:
        return None
    granted = lease.started_at + lease.ttl_s
    return granted if lease.lease_expires_at is None else max(lease.lease_expires_at, granted)


def expired(leases: Sequence[LeaseView], now: float) -> list[int]:
    """The job ids of the leases whose time is up at ``now``, in id order."""
    out = []
    for lease in leases:
        end = expires_at(lease)
        if end is not None and end <= now:
            out.append(lease.job_id)
    return sorted(out)
