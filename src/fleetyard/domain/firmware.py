"""Firmware versions and selectors: which boards a job (or a rollout wave) may use by firmware.

A selector is ``==V``, ``!=V``, ``>=V``, ``>V``, ``<=V``, ``<V``, or ``in V1,V2,…``. Versions
compare as PEP 440 versions (``1.10.0`` > ``1.9.2``); a board whose firmware does not parse as one
matches only ``==``/``!=``/``in`` by exact text, never an ordering.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from packaging.version import InvalidVersion, Version

__all__ = ["FirmwareSelector", "parse_version"]

_SELECTOR = re.compile(r"^\s*(==|!=|>=|<=|>|<|in\s)\s*(.+?)\s*$")


@functools.lru_cache(maxsize=4096)
def parse_version(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None


@dataclass(frozen=True)
class FirmwareSelector:
    op: str  # "==", "!=", ">=", ">", "<=", "<", "in"
    versions: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> FirmwareSelector:
        """``">=2.1"`` -> FirmwareSelector(">=", ("2.1",)); ValueError naming the forms otherwise."""
        m = _SELECTOR.match(text)
        if m is None:
            raise ValueError(
                f"bad firmware selector {text!r}; use ==V, !=V, >=V, >V, <=V, <V or 'in V1,V2' (e.g. '>=2.1.0')"
            )
        op, rest = m.group(1).strip(), m.group(2)
        versions = tuple(v.strip() for v in rest.split(",") if v.strip()) if op == "in" else (rest,)
        if not versions:
            raise ValueError(f"bad firmware selector {text!r}: 'in' needs at least one version")
        if op not in ("==", "!=", "in") and parse_version(versions[0]) is None:
            raise ValueError(f"bad firmware selector {text!r}: {versions[0]!r} is not a version to compare with")
        return cls(op, versions)

    def matches(self, firmware: str) -> bool:
        if self.op == "in":
            return firmware in self.versions or any(_same(firmware, v) for v in self.versions)
        if self.op == "==":
            return _same(firmware, self.versions[0])
        if self.op == "!=":
            return not _same(firmware, self.versions[0])
        have, want = parse_version(firmware), parse_version(self.versions[0])
        if have is None or want is None:
            return False
        return {">=": have >= want, ">": have > want, "<=": have <= want, "<": have < want}[self.op]

    def __str__(self) -> str:
        return f"in {','.join(self.versions)}" if self.op == "in" else f"{self.op}{self.versions[0]}"


def _same(a: str, b: str) -> bool:
    if a == b:
        return True
    va, vb = parse_version(a), parse_version(b)
    return va is not None and va == vb
