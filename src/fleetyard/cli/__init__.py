"""The ``fleetyard`` command line (Typer + Rich); the entry point is :data:`fleetyard.cli.main.app`."""
