"""A health configuration for tests: the default's rules and ladder, with checks and steps that
take a test's seconds rather than a fleet's minutes (their deadlines stay generous: two cores
shared by three stacks slow a check down by seconds)."""

from __future__ import annotations

from fleetyard.domain.health_config import HealthConfig, parse_health_config

FAST_HEALTH_YAML = """
generations:
  default:
    l1: {every_s: 86400, every_jobs: 1000, repeat: 1, timeout_s: 90}
    l2: {duration_s: 0.2, timeout_s: 90}
    l3: {duration_s: 0.5, timeout_s: 90}
    ladder:
      - {step: soft_reset, timeout_s: 60}
      - {step: reflash, timeout_s: 60}
      - {step: host_reboot, timeout_s: 90}
"""

FAST_HEALTH: HealthConfig = parse_health_config(FAST_HEALTH_YAML, source="tests/fast_health.py")
