"""`pipeline db upgrade` and `pipeline db status`: the state database's schema revisions.

The only module that imports Alembic (the revision check every command makes is
`store/revision.py`, one SELECT). Alembic is configured here in code, its scripts found in the
`pipeline.store.migrations` package, so no alembic.ini is needed and the revisions ship in the
wheel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, event

from pipeline.errors import StateError
from pipeline.store import revision
from pipeline.store.engine import create_at_head, needs_creating, open_engine, where
from pipeline.store.schema import metadata

SCRIPTS = "pipeline.store:migrations"


@dataclass(frozen=True, kw_only=True)
class DatabaseStatus:
    """What `pipeline db status` shows: the database (password hidden) and its revision."""

    database: str
    # False: no database yet (a SQLite file that is not there, a server database with none of our tables)
    exists: bool
    revision: revision.RevisionStatus

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (`db status --json`)."""
        state = self.revision
        return {"database": self.database, "exists": self.exists, "current": state.current,
                "head": state.head, "pending": list(state.pending),
                "state": "ok" if state.ok else "too_new" if state.too_new else "needs_upgrade"}


@dataclass(frozen=True, kw_only=True)
class Upgrade:
    """What `pipeline db upgrade` did: the revision before (None: none recorded, or a new
    database), the one after, the revisions applied, whether the schema was made from nothing."""

    database: str
    before: str | None
    after: str
    applied: tuple[str, ...]
    created: bool


def alembic_config(conn: Connection | None = None) -> AlembicConfig:
    """Alembic's configuration, made in code; `env.py` runs the revisions on `conn`."""
    config = AlembicConfig()
    config.set_main_option("script_location", SCRIPTS)
    config.attributes["connection"] = conn
    return config


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Alembic's filter: only our tables. APScheduler's job store, a task queue's tables or another
    application's in the same database are none of the revisions' business."""
    return type_ != "table" or name in metadata.tables


def script_revisions() -> tuple[str, ...]:
    """The ids of the revision scripts in `migrations/versions/`, oldest first (one line of history)."""
    scripts = ScriptDirectory.from_config(alembic_config())
    return tuple(reversed([s.revision for s in scripts.walk_revisions()]))


def database_status(url: str) -> DatabaseStatus:
    """The revision of the database at `url`, without changing it (a database not made yet is
    reported as such, not created)."""
    engine, new = open_engine(url)
    try:
        current = None if new else revision.status(engine).current
        exists = not new and (current is not None or not needs_creating(engine))
        return DatabaseStatus(database=where(engine), exists=exists,
                              revision=revision.RevisionStatus(current=current))
    finally:
        engine.dispose()


def upgrade(url: str) -> Upgrade:
    """Bring the database at `url` to this version's head: make a new (or empty) one at head;
    apply the pending revisions to an older one, all in one transaction; leave one at head as it
    is. Raises StateError for a database that is not ours, or is newer than this version."""
    engine, new = open_engine(url)
    try:
        before = None if new else revision.status(engine)
        if before is None or (before.current is None and needs_creating(engine)):
            create_at_head(engine)
            return Upgrade(database=where(engine), before=None, after=revision.HEAD, applied=(),
                           created=True)
        error = revision.refusal(before, where(engine)) if before.too_new else None
        if error is not None:
            raise error
        if not before.ok:
            try:
                _apply(engine)
            except StateError as exc:
                raise StateError(f"state database {where(engine)}: {exc}; nothing was changed") from None
        if engine.dialect.name == "postgresql":
            _queue(engine)
        return Upgrade(database=where(engine), before=before.current,
                       after=revision.status(engine).current or "", applied=before.pending, created=False)
    finally:
        engine.dispose()


def _queue(engine: Engine) -> None:
    """procrastinate's schema (`execution: workers`), installed when missing."""
    from pipeline.workers.schema import install_queue

    with engine.begin() as conn:
        install_queue(conn)


def _apply(engine: Engine) -> None:
    if engine.dialect.name == "sqlite":
        # Python's sqlite3 runs DDL outside any transaction; take it over so that the revisions
        # apply all or nothing, and BEGIN IMMEDIATE keeps other processes' writes out meanwhile.
        event.listen(engine, "connect", _driver_transactions_off)
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
        engine.dispose()
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "head")


def _driver_transactions_off(dbapi_conn: Any, _record: object) -> None:
    dbapi_conn.isolation_level = None
