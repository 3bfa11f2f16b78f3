"""Long scenarios run bounded in `make test` and in full in `make test-long`
(``FLEETYARD_TEST_LONG=1``). A test that uses :func:`bounded` carries the ``long`` marker, so that
``pytest -m long`` selects them: the suite on this 2-core machine must stay within its budget."""

from __future__ import annotations

import os
from typing import TypeVar

T = TypeVar("T")

FULL = os.environ.get("FLEETYARD_TEST_LONG") == "1"


def bounded(full: T, short: T) -> T:
    """``full`` in a long run, else ``short``."""
    return full if FULL else short
