"""Alembic's environment, configured by `pipeline/store/migrate.py` (no alembic.ini): it runs the
revisions on the connection the caller passes in `config.attributes["connection"]`."""

from __future__ import annotations

from alembic import context

from pipeline.store.migrate import include_name
from pipeline.store.schema import metadata


def run() -> None:
    """Run the pending revisions in the caller's connection, SQLite's ALTERs in batch mode."""
    connection = context.config.attributes["connection"]
    context.configure(connection=connection, target_metadata=metadata, include_name=include_name,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


run()
