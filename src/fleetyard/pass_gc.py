"""The cyclic garbage collector kept out of scheduling passes.

A snapshot of a big queue is millions of long-lived objects; a full cyclic collection over them in
the middle of a pass costs ~0.6 s (measured: ``bench/scheduler.py``). Before each pass everything
the process holds is frozen out of the collector (reference counting still frees it); what cyclic
garbage froze with it is collected every ``every_s``, between passes. For a process that plans and
little else (the controller program, the simulator when it measures passes): it freezes all it holds.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass

__all__ = ["COLLECT_EVERY_S", "PassCollector"]

COLLECT_EVERY_S = 600.0


@dataclass
class PassCollector:
    every_s: float = COLLECT_EVERY_S
    _at: float | None = None

    def before_pass(self, now: float) -> None:
        """Collect if ``every_s`` passed since the last collection (or none was made), then freeze."""
        if self._at is None or now - self._at >= self.every_s:
            self._at = now
            gc.unfreeze()
            gc.collect()
        gc.freeze()
