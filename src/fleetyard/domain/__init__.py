"""Entities, enums and state machines of the fleet. Pure: no I/O, no clock."""
