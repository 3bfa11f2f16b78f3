"""A host's state, as the control plane sees it (its boards each have their own)."""

from __future__ import annotations

from enum import StrEnum


class HostState(StrEnum):
    ONLINE = "online"  # heartbeats arrive
    UNREACHABLE = "unreachable"  # a few heartbeats missed: no new work, nothing else changes
    OFFLINE = "offline"  # lost past the grace, or left: its boards are offline
