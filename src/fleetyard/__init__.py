"""Fleetyard: run AI inference work on a fleet of accelerator boards."""

__version__ = "0.1.0"
