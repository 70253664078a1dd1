"""The state database: one SQLite file by default (`state:` in config), or any SQLAlchemy URL.

Ledger, subscribers and the scheduler's job store share it. SQLite runs in WAL mode with
synchronous=NORMAL: a commit survives the process being killed (the WAL is in the OS page cache),
and costs tens of microseconds, so the ledger can commit every send.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.pool import StaticPool

from pipeline.config import Config
from pipeline.store.schema import metadata


def state_url(config: Config) -> str:
    """The SQLAlchemy URL of the state database."""
    if "://" in config.state:
        return config.state
    return f"sqlite:///{config.path(config.state).resolve()}"


@lru_cache(maxsize=8)
def _engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                               poolclass=StaticPool if path == ":memory:" else None)
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True)
    metadata.create_all(engine)
    return engine


def engine_for(config: Config) -> Engine:
    """The (cached) engine of the config's state database, tables created."""
    return _engine(state_url(config))


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    # Checkpoints (which sync the database file) every ~40 MB of WAL rather than every 4 MB:
    # a publish commits twice per message.
    cursor.execute("PRAGMA wal_autocheckpoint=10000")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
