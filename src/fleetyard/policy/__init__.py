"""Decisions as pure functions over snapshots and an explicit time. No I/O, no clock."""
