"""Alembic's environment and the schema revisions of the state database (`pipeline db upgrade`)."""
