"""Which schema revision a state database is at, read without Alembic.

Every command opens the state database, so the check it makes must cost one SELECT: the revision
Alembic recorded in `alembic_version`, compared with the ids of the revisions this version ships
(`REVISIONS`, oldest first, kept equal to `pipeline/store/migrations/versions/` by a test).
Alembic itself is imported only by the `pipeline db` commands (`pipeline/store/migrate.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    inspect,
    select,
)

from pipeline.errors import StateError

# Oldest first; the last is the head. A new revision file in migrations/versions/ adds its id here.
REVISIONS: tuple[str, ...] = ("0001_baseline", "0002_deliveries_key_collation", "0003_rate_limits")
HEAD = REVISIONS[-1]

# Alembic's own table, declared as Alembic creates it, so that a new database can be stamped at
# head without importing Alembic. On a MetaData of its own: it is not part of the schema.
version_table = Table(
    "alembic_version", MetaData(),
    Column("version_num", String(32), nullable=False),
    PrimaryKeyConstraint("version_num", name="alembic_version_pkc"),
)


@dataclass(frozen=True, kw_only=True)
class RevisionStatus:
    """A database's revision against this version's. `current` is None for a database made before
    revisions were recorded (or one with no tables yet)."""

    current: str | None
    head: str = HEAD

    @property
    def ok(self) -> bool:
        """The database is at this version's head: every command may use it."""
        return self.current == self.head

    @property
    def too_new(self) -> bool:
        """The database is at a revision this version does not know: a newer pipeline upgraded it."""
        return self.current is not None and self.current not in REVISIONS

    @property
    def needs_upgrade(self) -> bool:
        """The database is at an older revision (or none): `pipeline db upgrade` brings it to head."""
        return not self.ok and not self.too_new

    @property
    def pending(self) -> tuple[str, ...]:
        """The revisions `pipeline db upgrade` would apply, oldest first."""
        if self.too_new:
            return ()
        done = REVISIONS.index(self.current) + 1 if self.current is not None else 0
        return REVISIONS[done:]


def current_revision(conn: Connection) -> str | None:
    """The revision recorded in the database, or None where there is no `alembic_version` row."""
    if not inspect(conn).has_table(version_table.name):
        return None
    rows = conn.execute(select(version_table.c.version_num)).scalars().all()
    # Alembic keeps one row per branch head; our history is one line, so there is one row.
    return ",".join(sorted(rows)) or None


def status(engine: Engine) -> RevisionStatus:
    """The state database's revision against this version's head (one cheap query)."""
    with engine.connect() as conn:
        return RevisionStatus(current=current_revision(conn))


def refusal(state: RevisionStatus, where: str) -> StateError | None:
    """The one-line error that stops a command on a database at another revision, else None."""
    if state.ok:
        return None
    if state.too_new:
        return StateError(f"state database {where} is at revision {state.current}, newer than this version "
                          f"knows (its newest is {state.head}): upgrade the pipeline to the version "
                          "that wrote it")
    at = state.current or "none (made before revisions were recorded)"
    return StateError(f"state database {where} is at revision {at}, this version needs {state.head}: "
                      "run `pipeline db upgrade`")


def stamp(conn: Connection, revision: str = HEAD) -> None:
    """Record `revision` as the database's, as `alembic stamp` does (in the caller's transaction)."""
    version_table.create(conn, checkfirst=True)
    conn.execute(version_table.delete())
    conn.execute(version_table.insert().values(version_num=revision))
