"""procrastinate's tables, types and functions in a PostgreSQL state database: installed beside
the pipeline's own tables when missing (`pipeline db upgrade`, a new state made at head).

They are procrastinate's, not the state's: Alembic's comparison and `db copy` leave them out
(both only know the tables of `store/schema.py`). procrastinate itself is imported only when the
schema has to be installed: the check is one SELECT.
"""

from __future__ import annotations

from sqlalchemy import Connection, Engine, text

from pipeline.errors import StateError

# The advisory lock (PostgreSQL's two-int form: this namespace, then 1) two processes installing
# the schema at once take: the second waits, then finds it there.
LOCK_SPACE = 0x70717565


def has_queue(conn: Connection) -> bool:
    """Whether procrastinate's job table exists in the database of `conn`."""
    return conn.execute(text("SELECT to_regclass('procrastinate_jobs')")).scalar() is not None


def install_queue(conn: Connection) -> bool:
    """Install procrastinate's schema in the PostgreSQL database of `conn`, inside the caller's
    transaction, unless it is there; True if it was installed now."""
    conn.execute(text("SELECT pg_advisory_xact_lock(:space, 1)"), {"space": LOCK_SPACE})
    if has_queue(conn):
        return False
    from procrastinate.schema import SchemaManager

    # On the driver's cursor without parameters: the script holds `%` signs that a
    # parameterized statement would take for placeholders.
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(SchemaManager.get_schema())
    finally:
        cursor.close()
    return True


def require_queue(engine: Engine) -> None:
    """Raise StateError (one line, with the fix) when the state database has no job queue: a
    PostgreSQL state made by a version without workers, not upgraded since."""
    with engine.connect() as conn:
        if has_queue(conn):
            return
    where = engine.url.render_as_string(hide_password=True)
    raise StateError(f"state database {where} has no job queue (procrastinate's tables) for "
                     "`execution: workers`; run `pipeline db upgrade`")
