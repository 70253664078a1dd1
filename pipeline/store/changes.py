"""Whether the state database changed: a mark that moves with every commit, from this process or
any other, and costs no read of the data.

On a SQLite file it is `PRAGMA data_version`, asked on a connection kept for nothing else: SQLite
moves it whenever another connection commits. (The files' modification times and sizes can miss
a commit made within the same clock tick; max(updated_at) would need an index or a pass over the
table.) On PostgreSQL it is the current snapshot (`xmin:xmax:in-progress ids`): a transaction that
writes is given an id, which moves xmax, and leaves the in-progress list when it ends, so no
commit goes by unseen; it moves for the server's other databases too, which costs a needless
read, never a stale one. (`pg_stat_*` reaches the shared view up to a second after a commit; a
counter bumped by the ledger's writes would make every send of every worker update one row.)
Other databases, and an in-memory SQLite database (one shared connection, whose own writes
data_version does not count), have no such mark.
"""

from __future__ import annotations

from sqlalchemy import Connection, Engine


class ChangeMark:
    """Reads the mark of `engine`'s database on a connection of its own. Not thread-safe: its
    users hold their own lock."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._conn: Connection | None = None
        self._query = _query(engine)

    @property
    def available(self) -> bool:
        """Whether this database has a mark at all."""
        return self._query is not None

    def read(self) -> int | str | None:
        """The mark now (None where there is none). Raises the store's errors when the database
        cannot be read; the connection is then dropped, and the next read opens another."""
        if self._query is None:
            return None
        try:
            if self._conn is None:
                self._conn = self.engine.connect()
            mark = self._conn.exec_driver_sql(self._query).scalar()
            self._conn.rollback()      # hold no read transaction: it would hide later commits
        except Exception:
            if self._conn is not None:
                self._conn.invalidate()
                self._conn = None
            raise
        return mark if isinstance(mark, str) else int(mark or 0)

    def close(self) -> None:
        """Let go of the kept connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _query(engine: Engine) -> str | None:
    if engine.dialect.name == "postgresql":
        return "SELECT CAST(pg_current_snapshot() AS text)"
    if engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        return "PRAGMA data_version"
    return None
