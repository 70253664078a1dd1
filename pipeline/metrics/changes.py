"""Whether the state database changed since the metrics last read it.

A mark is read that moves with every commit to the database, from this process or any other,
and costs no read of the data; while it stands still, what was read stands too. On a SQLite file
it is `PRAGMA data_version` on a connection kept for nothing else (the preview page's signal,
`web.post_status.LedgerCache`). On PostgreSQL it is the current snapshot (`xmin:xmax:in-progress
ids`): a transaction that writes is given an id, which moves xmax, and leaves the in-progress list
when it ends, so no commit goes by unseen (a commit to another database of the same server moves
it too: a read too many, never one too few). Other databases have no such cheap signal: there,
what was read is kept for `max_age` seconds.
"""

from __future__ import annotations

import threading
import time

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from pipeline.errors import StateError


class ChangeProbe:
    """Answers `changed()`: True on the first call, then whenever the database moved on (or,
    without a cheap signal, when `max_age` seconds have passed). Thread-safe."""

    def __init__(self, engine: Engine, *, max_age: float = 10.0) -> None:
        self.engine = engine
        self.max_age = max_age
        self._lock = threading.Lock()
        self._probe: Connection | None = None
        self._seen: object | None = None

    def changed(self) -> bool:
        """Whether the database may hold something the last call did not see."""
        with self._lock:
            query = self._mark_query()
            if query is not None:
                mark = self._mark(query)
                if mark is not None and mark == self._seen:
                    return False
                self._seen = mark
                return True
            now = time.monotonic()
            if isinstance(self._seen, float) and now - self._seen < self.max_age:
                return False
            self._seen = now
            return True

    def _mark_query(self) -> str | None:
        if self.engine.dialect.name == "postgresql":
            return "SELECT CAST(pg_current_snapshot() AS text)"
        # An in-memory SQLite database is one shared connection: data_version would not see its
        # own writes.
        if self.engine.dialect.name == "sqlite" and self.engine.url.database not in (None, "", ":memory:"):
            return "PRAGMA data_version"
        return None

    def _mark(self, query: str) -> object | None:
        """The database's mark now; None when it cannot be read (the caller reads again, and
        fails there with the reason)."""
        try:
            if self._probe is None:
                self._probe = self.engine.connect()
            mark = self._probe.exec_driver_sql(query).scalar()
            self._probe.rollback()      # hold no transaction: it would hide later commits
        except (SQLAlchemyError, StateError):
            if self._probe is not None:
                self._probe.invalidate()
                self._probe = None
            return None
        return mark
