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

**The control plane's brake.** Many hosts falling silent together is a network or control-plane
fault, not a hardware one: when more than a share of the hosts (:class:`HostBrake`, default
10 %) went silent within one window, no host is lost (nothing re-queued, no board offline) and,
through the ``control-plane`` breaker (:data:`~fleetyard.policy.brakes.CONTROL_PLANE`), no board is
taken out automatically, until the hosts are heard from again or an operator resets the breaker.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from fleetyard.domain.board import BoardState
from fleetyard.domain.host import HostState

__all__ = [
    "HOST_BACK_CHECK",
    "HOST_BACK_RESUME",
    "HOST_TIMEOUT_S",
    "UNREACHABLE_AFTER_S",
    "HostBrake",
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
class HostBrake:
    """When host silence is the control plane's trouble: more than ``share`` of the live hosts
    (below ``min_fleet`` hosts: more than half, from 4) silent, their silence begun within ``window_s``."""

    share: float = 0.10
    window_s: float = 60.0
    min_fleet: int = 10

    def __post_init__(self) -> None:
        if not 0 < self.share < 1 or self.window_s <= 0:
            raise ValueError("the host brake's share is between 0 and 1, its window positive")

    def limit(self, live: int) -> int | None:
        """How many hosts may go silent together before it trips (None: never, too few hosts)."""
        if live < 4:
            return None
        return max(1, math.floor(self.share * live)) if live >= self.min_fleet else live // 2


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
    lost: list[str]  # silent past the grace: offline, their work elsewhere (none while braked)
    # Why the silence is the control plane's trouble (the brake holds), and since when; None: it is not.
    trouble: str | None = None
    trouble_since: float | None = None
    would_lose: tuple[str, ...] = ()  # the hosts lost but for the brake


def judge_hosts(
    hosts: Sequence[HostView],
    *,
    now: float,
    liveness: Liveness,
    watching_since: float,
    brake: HostBrake = HostBrake(),
    overridden_at: float | None = None,
) -> HostJudgement:
    """Which hosts change state. Silence counts from the later of a host's last heartbeat and
    ``watching_since``, so a restarted or late controller does not blame hosts for its own absence.

    Too many hosts silent together (:class:`HostBrake`) is the control plane's trouble: none is
    lost, though each is shown unreachable; unless an operator overrode the brake
    (``overridden_at``: when they last reset the control-plane breaker) after the trouble began.
    """

    def silent_since(h: HostView) -> float:
        return max(h.last_heartbeat_at or h.registered_at, watching_since)

    live = [h for h in hosts if h.state is not HostState.OFFLINE]
    silent = [h for h in live if now - silent_since(h) > liveness.unreachable_after_s]
    unreachable = sorted(h.id for h in silent if h.state is HostState.ONLINE)
    reachable = sorted(
        h.id for h in live if h.state is HostState.UNREACHABLE and now - silent_since(h) <= liveness.unreachable_after_s
    )
    lost = sorted(h.id for h in silent if now - silent_since(h) > liveness.lost_after_s)
    limit = brake.limit(len(live))
    # Together by when each was last heard from, not by when the controller began to watch: after
    # a restart every silence would seem to begin at once.
    together, since = _silent_together(sorted(h.last_heartbeat_at or h.registered_at for h in silent), brake.window_s)
    if limit is None or together <= limit or (overridden_at is not None and overridden_at >= since):
        return HostJudgement(unreachable, reachable, lost)
    trouble = (
        f"{together} of {len(live)} hosts went silent within {brake.window_s:g} s (more than {limit}): a network or"
        " control-plane fault, not the hosts'; no host is lost and no board taken out automatically until they"
        " are heard from again or an operator resets the control-plane breaker"
    )
    return HostJudgement(unreachable, reachable, [], trouble, since, tuple(lost))


def _silent_together(starts: Sequence[float], window_s: float) -> tuple[int, float]:
    """The most silences (sorted start times) begun within one window, and the first's start."""
    best, since, j = 0, 0.0, 0
    for i, start in enumerate(starts):
        while start - starts[j] > window_s:
            j += 1
        if i - j + 1 > best:
            best, since = i - j + 1, starts[j]
    return best, since


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


def back_from_offline(before: BoardState | None, serial: str, *, in_case: bool = False) -> tuple[BoardState, str]:
    """Where a board goes when its host is back (or an agent finds it again), from the state it
    left for offline: only a board that was in service must pass a check first; a board never
    approved waits for approval again, one cut short in onboarding starts its onboarding over, a
    drained board stays drained (an operator took it out), and one whose remediation case is
    still open (``in_case``) goes back to the ladder where it was
    (:func:`~fleetyard.policy.remediation.resume`)."""
    if in_case and before in (BoardState.SUSPECT, BoardState.REMEDIATING):
        return before, HOST_BACK_RESUME
    if before is BoardState.DISCOVERED:
        return BoardState.DISCOVERED, f"host back; still not approved: fleetyard boards approve {serial}"
    if before is BoardState.ONBOARDING:
        return BoardState.ONBOARDING, "host back: its onboarding starts over"
    if before is BoardState.DRAINED:
        return BoardState.DRAINED, "host back: still drained"
    return BoardState.SUSPECT, HOST_BACK_CHECK


# The reason of a board back in suspect: its remediation case starts with an L1 check.
HOST_BACK_CHECK = "host back: must pass a check before service"
# The reason of a board back on the ladder: its open case goes on (policy.remediation.resume).
HOST_BACK_RESUME = "host back: its remediation case resumes"
