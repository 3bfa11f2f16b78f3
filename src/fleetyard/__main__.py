"""``python -m fleetyard``: the same as the ``fleetyard`` command."""

from fleetyard.cli import entry_point

if __name__ == "__main__":
    entry_point()
