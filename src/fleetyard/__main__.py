"""``python -m fleetyard``: the same as the ``fleetyard`` command."""

from fleetyard.cli.main import app

if __name__ == "__main__":
    app(prog_name="fleetyard")
