"""Host liveness: which hosts are lost, and since when silence means anything."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# A host is lost after 3 missed heartbeats (the server's default interval: 2 s), and the second
# the server's write-behind may hold its last one.
HOST_TIMEOUT_S = 3 * 2.0 + 1.0


@dataclass(frozen=True)
class HostView:
    id: str
    online: bool
    last_heartbeat_at: float | None
    registered_at: float


def lost_hosts(hosts: Sequence[HostView], *, now: float, timeout_s: float, watching_since: float) -> list[str]:
    """Online hosts whose heartbeats stopped for longer than ``timeout_s``.

    Nothing is declared lost until the controller has itself watched for a whole timeout (a
    restarted controller must not blame hosts for its own absence). When most of a larger
    fleet goes silent at once, the fault is far likelier on our side (server, store,
    network) than in every host, so no host is declared lost: a brake against mass eviction.
    """
    if now - watching_since < timeout_s:
        return []
    online = [h for h in hosts if h.online]
    stale = [h.id for h in online if now - (h.last_heartbeat_at or h.registered_at) > timeout_s]
    if len(online) >= 4 and len(stale) > len(online) / 2:
        return []
    return sorted(stale)


def watching_since(previous: float, *, newest_server_seen: float | None, now: float, timeout_s: float) -> float:
    """Since when heartbeats could reach the store without interruption.

    While no server has marked itself alive for half a timeout, silence proves nothing about
    hosts; once servers are back, hosts get a whole timeout to be heard from again.
    """
    if newest_server_seen is None or now - newest_server_seen > timeout_s / 2:
        return now
    return previous
