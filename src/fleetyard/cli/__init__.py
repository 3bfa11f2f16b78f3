"""The ``fleetyard`` command line (Typer + Rich): :func:`entry_point` is its entry point."""

from __future__ import annotations

import sys


def entry_point() -> None:
    """The ``fleetyard`` command. A program (``server``, ``controller``, ``agent``, ``db``) starts
    with only its own imports; any other command loads the whole CLI (:data:`fleetyard.cli.main.app`)."""
    from fleetyard.cli.processes import PROGRAMS

    if len(sys.argv) > 1 and sys.argv[1] in PROGRAMS:
        from fleetyard.cli.processes import programs_app

        programs_app()(prog_name="fleetyard")
    else:
        from fleetyard.cli.main import app

        app(prog_name="fleetyard")
