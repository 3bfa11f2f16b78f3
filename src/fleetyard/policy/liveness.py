"""Host liveness: a silent host is first unreachable, only later lost; since when silence means
anything; and where a board goes when its lost host comes back.

Two thresholds, as Slurm and Kubernetes have them, because a busy machine, a long garbage
collection or a network blip silences a healthy host for seconds:

- **unreachable** after a few missed heartbeats: the host gets no new work, and nothing else
  changes: no board changes state, no rank is ended, its events are accepted when it answers;
- **lost** after a grace (default 60 s): its boards go offline and its work runs elsewhere.

Heartbeats are timed by the server's receive time, and silence counts only while the controller
watched: a controller that fell behind (its own passes late) does not judge hosts until it has
caught up, and neither does one that saw no server alive.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fleetyard.domain.board import BoardState
from fleetyard.domain.host import HostState

__all__ = [
    "HOST_BACK_CHECK",
    "HOST_TIMEOUT_S",
    "UNREACHABLE_AFTER_S",
    "HostJudgement",
    "HostView",
    "Liveness",
    "back_from_offline",
    "judge_hosts",
    "watching_since",
]

# A few missed heartbeats (the server's default interval: 2 s) and the second the server's
# write-behind may hold the last one: no new work for the host, nothing else.
UNREACHABLE_AFTER_S = 3 * 2.0 + 1.0
# Lost: its boards go offline and its work runs elsewhere. Minutes in Slurm (SlurmdTimeout) and
# Kubernetes (the node eviction timeout); a minute here, since boards are cheaper to re-check.
HOST_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Liveness:
    """The thresholds, from the controller's configuration."""

    unreachable_after_s: float = UNREACHABLE_AFTER_S
    lost_after_s: float = HOST_TIMEOUT_S

    def __post_init__(self) -> None:
        if self.unreachable_after_s <= 0 or self.lost_after_s <= 0:
            raise ValueError("host liveness thresholds must be positive")
        if self.lost_after_s < self.unreachable_after_s:
            raise ValueError(
                f"a host is lost ({self.lost_after_s:g} s) no sooner than it is unreachable"
                f" ({self.unreachable_after_s:g} s): raise --host-timeout or lower --host-unreachable"
            )

    @property
    def late_pass_s(self) -> float:
        """A liveness pass this long after the previous one means the controller fell behind."""
        return max(3.0, self.unreachable_after_s / 2)


@dataclass(frozen=True)
class HostView:
    id: str
    state: HostState
    last_heartbeat_at: float | None
    registered_at: float


@dataclass(frozen=True)
class HostJudgement:
    unreachable: list[str]  # online hosts gone silent: no new work
    reachable: list[str]  # unreachable hosts heard from again
    lost: list[str]  # silent past the grace: offline, their work elsewhere


def judge_hosts(hosts: Sequence[HostView], *, now: float, liveness: Liveness, watching_since: float) -> HostJudgement:
    """Which hosts change state. Silence counts from the later of a host's last heartbeat and
    ``watching_since``, so a restarted or late controller does not blame hosts for its own absence.

    When most of a larger fleet goes silent at once, the fault is far likelier on our side
    (server, store, network) than in every host, so none is declared lost: a brake against mass
    eviction. Such hosts are still shown unreachable.
    """

    def silent_for(h: HostView) -> float:
        return now - max(h.last_heartbeat_at or h.registered_at, watching_since)

    live = [h for h in hosts if h.state is not HostState.OFFLINE]
    unreachable = sorted(
        h.id for h in live if h.state is HostState.ONLINE and silent_for(h) > liveness.unreachable_after_s
    )
    reachable = sorted(
        h.id for h in live if h.state is HostState.UNREACHABLE and silent_for(h) <= liveness.unreachable_after_s
    )
    lost = [h.id for h in live if silent_for(h) > liveness.lost_after_s]
    if len(live) >= 4 and len(lost) > len(live) / 2:
        lost = []
    return HostJudgement(unreachable, reachable, sorted(lost))


def watching_since(
    previous: float, *, newest_server_seen: float | None, now: float, last_pass: float | None, liveness: Liveness
) -> float:
    """Since when heartbeats could reach the store, and the controller could read them, without
    interruption.

    While no server has marked itself alive for half the unreachable threshold, silence proves
    nothing about hosts; nor does it while the controller's own passes are late (it, and likely
    the machine or the store, fell behind). Once both are back, hosts get a whole threshold
    again to be heard from.
    """
    if newest_server_seen is None or now - newest_server_seen > liveness.unreachable_after_s / 2:
        return now
    if last_pass is not None and now - last_pass > liveness.late_pass_s:
        return now
    return previous


def back_from_offline(before: BoardState | None, serial: str) -> tuple[BoardState, str]:
    """Where a board goes when its host is back (or an agent finds it again), from the state it
    left for offline: only a board that was in service (or on its way back to it) must pass a
    check first; a board never approved waits for approval again, one cut short in onboarding
    starts its onboarding over, and a drained board stays drained (an operator took it out)."""
    if before is BoardState.DISCOVERED:
        return BoardState.DISCOVERED, f"host back; still not approved: fleetyard boards approve {serial}"
    if before is BoardState.ONBOARDING:
        return BoardState.ONBOARDING, "host back: its onboarding starts over"
    if before is BoardState.DRAINED:
        return BoardState.DRAINED, "host back: still drained"
    return BoardState.SUSPECT, HOST_BACK_CHECK


# The reason of a board back in suspect: its remediation case starts with an L1 check.
HOST_BACK_CHECK = "host back: must pass a check before service"
