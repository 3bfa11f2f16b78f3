"""Alembic environment: always given a connection by fleetyard.store.migrate."""

from __future__ import annotations

from alembic import context

from fleetyard.store.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through fleetyard.store.migrate (or `fleetyard db upgrade`)")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
