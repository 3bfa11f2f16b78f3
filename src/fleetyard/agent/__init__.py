"""The host agent: registers a host's boards, runs their assignments in per-board worker processes.

:func:`fleetyard.agent.daemon.run_agent` is the entry point; :mod:`fleetyard.agent.worker` is the
worker process and the agent's handle on it.
"""
