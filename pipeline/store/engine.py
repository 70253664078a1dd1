"""The state database: one SQLite file by default (`state:` in config), or any SQLAlchemy URL.

Ledger, subscribers and the scheduler's job store share it. SQLite runs in WAL mode with
synchronous=NORMAL: a commit survives the process being killed (the WAL is in the OS page cache),
and costs tens of microseconds, so the ledger can commit every send.

The schema is created, at the head revision, only where there is no database yet. A file that
exists but is empty, foreign, truncated or corrupt stops every command with a StateError: read as
a new database it would show an empty list and let already-sent posts go out again. So does a
database at another schema revision (`pipeline db upgrade` brings it to this version's; see
docs/database.md). Database errors (damaged, disk full, read-only, unreachable) become one-line
StateErrors here, at the store's edge.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import ExceptionContext, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.pool import StaticPool

from pipeline.config import Config
from pipeline.errors import StateError
from pipeline.store import revision
from pipeline.store.schema import metadata

SQLITE_MAGIC = b"SQLite format 3\x00"
# Tables every pipeline database has had since the first release (the others came later).
CORE_TABLES = frozenset({"deliveries", "subscribers"})
RESTORE = "restore it from a backup, or move it away to start a new one"
CREATE_LOCK = 0x70697065   # the PostgreSQL advisory lock taken while the schema is made
# libpq's defaults wait on a connection attempt (to a server shutting down, a host that dropped
# off the network) for minutes, and notice a dead peer on an idle connection never: a worker or
# the timetable would hang instead of reconnecting. A URL's own settings of these win.
LIBPQ_DEFAULTS = {"connect_timeout": "10", "keepalives": "1", "keepalives_idle": "30",
                  "keepalives_interval": "10", "keepalives_count": "3"}


def state_url(config: Config) -> str:
    """The SQLAlchemy URL of the state database."""
    if "://" in config.state:
        return config.state
    return f"sqlite:///{config.path(config.state).resolve()}"


@lru_cache(maxsize=8)
def _engine(url: str) -> Engine:
    engine, new = open_engine(url)
    try:
        # Every command comes here: an existing database costs one SELECT of its revision.
        state = None if new else revision.status(engine)
        if state is None or (state.current is None and needs_creating(engine)):
            create_at_head(engine)
            return engine
        error = revision.refusal(state, where(engine))
        if error is not None:
            raise error
    except BaseException:
        engine.dispose()
        raise
    return engine


def open_engine(url: str) -> tuple[Engine, bool]:
    """A new engine of `url` with the store's settings and error messages, its schema neither
    made nor checked (`pipeline db` works on databases other commands refuse); and whether the
    database is new (a SQLite file that is not there yet). Raises StateError for a SQLite file
    that cannot be a pipeline database."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        # Not echoed: a URL may hold a password.
        raise StateError("state database: the URL (`state:` in config.yaml, or `db copy --to`) is not a "
                         "database URL; write e.g. "
                         "postgresql+psycopg://user@host/name or sqlite:///path/to/file.sqlite3") from None
    path = url.removeprefix("sqlite:///") if url.startswith("sqlite") else ""
    on_disk = bool(path) and path != ":memory:"
    existed = on_disk and Path(path).exists()
    if url.startswith("sqlite"):
        if existed:
            _check_sqlite_file(Path(path))
        elif on_disk:
            _make_folder(Path(path))
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                               poolclass=StaticPool if not on_disk else None)
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        name = f"state database {parsed.render_as_string(hide_password=True)}"
        try:
            engine = create_engine(url, pool_pre_ping=True, connect_args=libpq_defaults(url))
        except ArgumentError:
            raise StateError(f"{name}: no database driver is called `{parsed.drivername}`; write e.g. "
                             "postgresql+psycopg://user@host/name") from None
        except ImportError as exc:
            raise StateError(f"{name}: its driver `{exc.name}` is not installed in the pipeline's "
                             "environment; install it, or use postgresql+psycopg://") from None
    event.listen(engine, "handle_error", _to_state_error)
    return engine, url.startswith("sqlite") and not existed


def libpq_defaults(url: str) -> dict[str, str]:
    """`LIBPQ_DEFAULTS` that the PostgreSQL URL `url` does not set itself (none for a driver
    other than libpq's: psycopg, psycopg2)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql" or parsed.get_driver_name() not in ("psycopg", "psycopg2"):
        return {}
    return {k: v for k, v in LIBPQ_DEFAULTS.items() if k not in parsed.query}


def engine_for(config: Config) -> Engine:
    """The (cached) engine of the config's state database, tables created. Raises StateError
    for a database that is not a pipeline database, is damaged or cannot be reached."""
    return _engine(state_url(config))


def where(engine: Engine) -> str:
    """The database as messages name it: a SQLite file's path, else the URL without password."""
    if engine.dialect.name == "sqlite":
        return engine.url.database or ":memory:"
    return engine.url.render_as_string(hide_password=True)


def state_error(engine: Engine, exc: BaseException) -> StateError | None:
    """The one-line StateError for a database-level failure (damaged, full, read-only, locked,
    unreachable), or None for errors the code handles itself (constraint violations)."""
    dbapi: Any = engine.dialect.dbapi
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    if dbapi is None or not isinstance(orig, dbapi.OperationalError | dbapi.DatabaseError) \
            or isinstance(orig, dbapi.IntegrityError | dbapi.ProgrammingError):
        return None
    text = " ".join(str(orig).split()) or type(orig).__name__
    lowered = text.lower()
    name = f"state database {where(engine)}"
    if "not a database" in lowered or "malformed" in lowered or "corrupt" in lowered:
        return StateError(f"{name} is damaged ({text}); {RESTORE}")
    if "disk is full" in lowered or "no space" in lowered:
        return StateError(f"{name}: the disk is full; free some space and run the command again")
    if "readonly" in lowered or "read-only" in lowered or "unable to open" in lowered:
        return StateError(f"{name} cannot be written ({text}); check that the file and its folder "
                          "are writable by this user")
    if "locked" in lowered or "busy" in lowered:
        return StateError(f"{name} is locked by another process ({text}); try again when it is done")
    return StateError(f"{name}: {text}")


def _to_state_error(context: ExceptionContext) -> None:
    error = state_error(context.engine, context.original_exception) if context.engine else None
    if error is not None:
        raise error from None


def _check_sqlite_file(path: Path) -> None:
    """Refuse an existing file that cannot be a pipeline database, before SQLite opens it (which
    would take an empty file for a new database)."""
    try:
        with path.open("rb") as f:
            header = f.read(100)
        size = path.stat().st_size
    except OSError as exc:
        raise StateError(f"state database {path} cannot be read ({exc.strerror}); check its "
                         "permissions") from None
    if size == 0:
        raise StateError(f"state database {path} is empty (0 bytes), not a pipeline database; {RESTORE}")
    if not header.startswith(SQLITE_MAGIC) or len(header) < 100:
        raise StateError(f"state database {path} is not a pipeline database (not a SQLite file); {RESTORE}")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    # The page count in the header is valid when its "version valid for" equals the change counter.
    if header[24:28] == header[92:96] and pages * page_size > size:
        raise StateError(f"state database {path} is damaged (truncated: {size:,} of "
                         f"{pages * page_size:,} bytes); {RESTORE}")


def _make_folder(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StateError(f"state database {path}: cannot create its folder {path.parent} "
                         f"({exc.strerror}); set `state:` in config.yaml to a writable path") from None


def needs_creating(engine: Engine) -> bool:
    """Whether an existing database has none of our tables and no recorded revision, so that the
    schema is to be made in it. A SQLite file never does: one without the core tables is someone
    else's (or was emptied) and is refused. (A server database may hold other applications'
    tables: ours are created beside them.)"""
    tables = set(inspect(engine).get_table_names())
    if engine.dialect.name == "sqlite" and not tables >= CORE_TABLES:
        raise StateError(f"state database {where(engine)} is not a pipeline database (it has no "
                         f"{' or '.join(sorted(CORE_TABLES - tables))} table); {RESTORE}")
    return not tables & (set(metadata.tables) | {revision.version_table.name})


def create_at_head(engine: Engine) -> None:
    """Make every table of a new database and record the head revision, in one transaction."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Two processes starting on one empty database: the second waits, then finds the tables.
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CREATE_LOCK})
            if revision.current_revision(conn) is not None:
                return
        metadata.create_all(conn)
        revision.stamp(conn)
        if conn.dialect.name == "postgresql":
            from pipeline.workers.schema import install_queue

            install_queue(conn)     # procrastinate's tables, for `execution: workers`


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    # Checkpoints (which sync the database file) every ~40 MB of WAL rather than every 4 MB:
    # an SMTP publish commits once per half a queue of answers per connection; other channels twice
    # per message.
    cursor.execute("PRAGMA wal_autocheckpoint=10000")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
