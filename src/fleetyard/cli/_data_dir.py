"""One fleet per data dir.

``fleetyard up`` holds its data dir alone: a second ``up`` there would share its SQLite store and
start a second controller and agents for the same hosts (boards taken out, a cpu board
quarantined for good). A server or controller on a data dir's SQLite store shares it with the
fleet's other programs (a standby controller is welcome), but neither starts beside a running
``up``, nor ``up`` beside them. The programs ``up`` starts are its own: they hold nothing.

The lock is an ``flock`` on ``fleet.lock``, released by the kernel when its holder dies (no stale
lock after a crash); each holder leaves a note under ``holders/`` so a refusal can name it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path

from fleetyard.config import write_private_text
from fleetyard.errors import FleetyardError

LOCK_FILE = "fleet.lock"
HOLDERS = "holders"
# Set by ``up`` for the programs it starts (its pid): they run inside its hold.
ENV_FLEET_PID = "FLEETYARD_FLEET_PID"


@contextlib.contextmanager
def holding(data_dir: Path, *, what: str, port: int | None = None, alone: bool = False) -> Iterator[None]:
    """Hold ``data_dir`` while the block runs: ``alone`` (``up``) or shared with other servers and
    controllers; raise :class:`FleetyardError` naming the holders when it is taken."""
    if not alone and os.environ.get(ENV_FLEET_PID) == str(os.getppid()):
        yield  # started by `up`, which holds the dir for its whole fleet
        return
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if alone else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _in_use(data_dir, what) from None
        note = data_dir / HOLDERS / f"{os.getpid()}.{what.replace(' ', '-')}.json"
        note.parent.mkdir(mode=0o700, exist_ok=True)
        write_private_text(note, json.dumps({"pid": os.getpid(), "what": what, "port": port}) + "\n")
        try:
            yield
        finally:
            note.unlink(missing_ok=True)
    finally:
        os.close(fd)


def _in_use(data_dir: Path, what: str) -> FleetyardError:
    holders = _holders(data_dir)
    names = ", ".join(
        f"{h['what']} (pid {h['pid']}" + (f", port {h['port']})" if h.get("port") else ")") for h in holders
    )
    return FleetyardError(
        f"the data dir {data_dir} is in use by {names or 'another fleetyard program'}: a {what} beside it would"
        " share its store and act on the same hosts twice. Stop it first (Ctrl-C where it runs, or"
        f" kill {holders[0]['pid'] if holders else 'PID'}), or give this one another --data-dir",
        detail={"data_dir": str(data_dir), "holders": holders},
    )


def _holders(data_dir: Path) -> list[dict[str, object]]:
    """The holders' notes whose process still runs (a killed one leaves its note behind)."""
    found = []
    for p in sorted((data_dir / HOLDERS).glob("*.json")):
        try:
            h = json.loads(p.read_text())
            os.kill(int(h["pid"]), 0)
        except PermissionError:
            pass  # another user's process: alive
        except (OSError, ValueError, KeyError, TypeError):
            continue
        found.append(h)
    return found
