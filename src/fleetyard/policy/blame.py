"""Blame (pure): a board on which a job fails while the same job passes on other boards.

"The same job" is its kind and parameters (its :func:`fingerprint`): the validation of one
artifact on the same inputs that CI runs again and again, a benchmark, a rollout. When such a job
ends with a user error or a timeout on a board, while it passed on other boards within the window
(and never on that one), the board is likelier at fault than the job: it becomes suspect and must
pass a check before it serves again. When the job fails on as many boards as it passes on, or
more, the job is at fault, not the boards, and nothing is blamed.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["BLAME_WINDOW_S", "RankEnd", "blame", "fingerprint"]

BLAME_WINDOW_S = 6 * 3600.0


def fingerprint(kind: str, params: Mapping[str, Any]) -> str:
    """What makes two jobs the same job: their kind and parameters (not their boards or name)."""
    text = json.dumps([kind, params], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class RankEnd:
    fingerprint: str
    board: str
    passed: bool  # success; else a user error or a timeout (infra errors blame their board already)
    at: float
    job_id: int
    outcome: str = ""


def blame(ends: Iterable[RankEnd], *, now: float, window_s: float = BLAME_WINDOW_S) -> dict[str, str]:
    """Board -> why it is suspect, from the rank ends of the window."""
    by_job: dict[str, list[RankEnd]] = defaultdict(list)
    for e in ends:
        if now - window_s <= e.at <= now:
            by_job[e.fingerprint].append(e)
    out: dict[str, str] = {}
    for ends_of in by_job.values():
        passed = {e.board for e in ends_of if e.passed}
        failed = {e.board: e for e in sorted(ends_of, key=lambda e: e.at) if not e.passed and e.board not in passed}
        if not passed or not failed or len(failed) >= len(passed):
            continue
        others = ", ".join(sorted(passed)[:3]) + (f" and {len(passed) - 3} more" if len(passed) > 3 else "")
        for board, e in failed.items():
            out.setdefault(
                board,
                f"job {e.job_id} failed here ({e.outcome or 'failed'}) while the same job passed on {others}",
            )
    return out
