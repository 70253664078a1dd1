"""`pipeline db copy --to URL`: the whole state (every table of the schema) into an empty database,
typically a SQLite file's into PostgreSQL when one machine is no longer enough.

The target is brought to head first, and must hold no rows. The tables are copied in foreign-key
order, in batches, all in one transaction on the target: a copy that fails leaves it empty, ready
for another try. The source is read in one snapshot, so a command writing to it meanwhile cannot
make the counts disagree. Each table's rows are counted on both sides before the commit; after
rows with explicit ids, PostgreSQL's sequences are moved past them, so new rows get new ids.

Not copied: APScheduler's job store (`pipeline run` writes its jobs again when it starts) and any
task queue's tables, which are not state.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, Row, Table, func, select, text

from pipeline.errors import StateError
from pipeline.store import migrate
from pipeline.store.engine import open_engine, state_error, where
from pipeline.store.schema import metadata

BATCH = 1000


@dataclass(frozen=True, kw_only=True)
class TableCount:
    """One table's rows, as read from the source and as counted in the target after the copy."""

    table: str
    rows: int


@dataclass(frozen=True, kw_only=True)
class Copied:
    """What `db copy` did: from where to where (passwords hidden), the rows of each table."""

    source: str
    target: str
    tables: tuple[TableCount, ...]


def copy_state(source: Engine, target_url: str, *, batch: int = BATCH) -> Copied:
    """Copy every table of `source` (a database at head) into the empty database at
    `target_url`, made or upgraded to head first. Raises StateError, naming the target, when it
    is not empty, not ours, or newer than this version; and when a table's counts differ."""
    migrate.upgrade(target_url)
    target, _ = open_engine(target_url)
    try:
        name = where(target)
        if where(source) == name:
            raise StateError(f"db copy: the target {name} is the state database itself; give another "
                             "database's URL")
        with _snapshot(source) as reading, target.begin() as writing:
            _refuse_rows(writing, name)
            counts = tuple(_copy_table(reading, writing, table.name, batch, name)
                           for table in metadata.sorted_tables)
            if writing.dialect.name == "postgresql":
                _reset_sequences(writing)
        return Copied(source=where(source), target=name, tables=counts)
    finally:
        target.dispose()


@contextmanager
def _snapshot(engine: Engine) -> Iterator[Connection]:
    """A connection that reads one consistent state of the database until it is closed."""
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            # Python's sqlite3 would read each SELECT in a snapshot of its own; one BEGIN holds one.
            conn.exec_driver_sql("BEGIN")
        else:
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        try:
            yield conn
        finally:
            conn.rollback()


def _refuse_rows(conn: Connection, name: str) -> None:
    filled = [f"{table.name}: {rows:,}" for table in metadata.sorted_tables
              if (rows := conn.execute(select(func.count()).select_from(table)).scalar_one())]
    if filled:
        raise StateError(f"db copy: the target {name} is not empty ({', '.join(filled)} rows); copy into "
                         "a new, empty database")


def _copy_table(reading: Connection, writing: Connection, name: str, batch: int, target: str) -> TableCount:
    table = metadata.tables[name]
    order = list(table.primary_key.columns) or list(table.columns)
    copied = 0
    rows = reading.execute(select(table).order_by(*order), execution_options={"yield_per": batch})
    write = _copy_rows if writing.dialect.name == "postgresql" else _insert_rows
    for part in rows.partitions():
        write(writing, table, part)
        copied += len(part)
    source_count = reading.execute(select(func.count()).select_from(table)).scalar_one()
    target_count = writing.execute(select(func.count()).select_from(table)).scalar_one()
    if not source_count == copied == target_count:
        raise StateError(f"db copy: table {name} has {source_count:,} rows in the source but {copied:,} "
                         f"were read and {target_count:,} are in {target}; nothing was committed")
    return TableCount(table=name, rows=target_count)


def _insert_rows(conn: Connection, table: Table, rows: Sequence[Row[Any]]) -> None:
    conn.execute(table.insert(), [row._asdict() for row in rows])


def _copy_rows(conn: Connection, table: Table, rows: Sequence[Row[Any]]) -> None:
    """PostgreSQL's COPY: ten times the rows per second of INSERTs, which psycopg sends one by
    one. The values go through the columns' own bind processing first (UTC timestamps)."""
    dialect = conn.dialect
    process = [c.type.bind_processor(dialect) for c in table.columns]
    columns = ", ".join(f'"{c.name}"' for c in table.columns)
    cursor = conn.connection.driver_connection.cursor()   # type: ignore[union-attr]
    try:
        with cursor.copy(f'COPY "{table.name}" ({columns}) FROM STDIN') as copy:
            for row in rows:
                copy.write_row([p(v) if p else v for p, v in zip(process, row, strict=True)])
    except dialect.dbapi.Error as exc:   # type: ignore[union-attr]
        # Past SQLAlchemy, so its error hook does not see it: the same one-line message.
        raise (state_error(conn.engine, exc) or StateError(f"state database {where(conn.engine)}: "
                                                           f"{' '.join(str(exc).split())}")) from None
    finally:
        cursor.close()


def _reset_sequences(conn: Connection) -> None:
    for table in metadata.sorted_tables:
        column = table.autoincrement_column
        if column is None:
            continue
        # is_called=false: the next id handed out is this one (1 for an empty table).
        conn.execute(text(f'SELECT setval(pg_get_serial_sequence(:table, :column), '
                          f'COALESCE(MAX("{column.name}"), 0) + 1, false) FROM "{table.name}"'),
                     {"table": table.name, "column": column.name})
