"""Firmware image files: what the registry can read from one before it accepts it.

Vendors' images are opaque to Fleetyard: the operator says which generation and version an
image is, and the board's driver checks it when it flashes. Images for the simulated boards
(``sim`` driver) carry a header that names both, so a sim image pushed for the wrong generation,
or under the wrong version, is refused at push rather than bricking a board at flash time:

    FLEETYARD-SIM-FIRMWARE {"generation": "sim-g2", "version": "2.2.0"}\\n<payload>

:func:`sim_image` writes one (``fleetyard firmware make-sim-image``); :func:`read_header` reads
it back (None for any other file).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["MAGIC", "read_header", "sim_image"]

MAGIC = b"FLEETYARD-SIM-FIRMWARE "
_MAX_HEADER = 4096


def sim_image(generation: str, version: str, *, payload: bytes = b"", **extra: Any) -> bytes:
    """The bytes of a sim firmware image for ``generation`` at ``version``."""
    header = json.dumps({"generation": generation, "version": version, **extra}, sort_keys=True)
    return MAGIC + header.encode() + b"\n" + (payload or f"sim firmware {generation} {version}\n".encode() * 64)


def read_header(path: Path) -> dict[str, Any] | None:
    """The header of a sim image (its generation, version, …); None when the file is not one."""
    with open(path, "rb") as f:
        head = f.read(_MAX_HEADER)
    if not head.startswith(MAGIC):
        return None
    line = head[len(MAGIC) :].split(b"\n", 1)[0]
    try:
        header = json.loads(line)
    except ValueError:
        return None
    return header if isinstance(header, dict) and {"generation", "version"} <= set(header) else None
