"""The store: SQLAlchemy tables, Alembic migrations, and the blob store."""
