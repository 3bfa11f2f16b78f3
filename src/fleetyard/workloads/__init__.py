"""Job kinds. See :mod:`fleetyard.workloads.base` for the plugin interface."""
