"""What the store writes differently on SQLite and on PostgreSQL, in one place: an INSERT that
skips rows whose key exists, and the database's clock (in UTC, and in seconds since the epoch).
Everything else is the same SQL."""

from __future__ import annotations

from datetime import datetime
from importlib import import_module
from typing import Any

from sqlalchemy import DateTime, Engine, Table
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import Double


def insert_ignore(engine: Engine, table: Table) -> Any:
    """INSERT into `table` that does nothing for a row whose primary or unique key exists (its
    `rowcount` says whether a row went in)."""
    # Imported by name: the PostgreSQL dialect package (with its asyncpg and other drivers) costs
    # 40 ms of every command's start-up on SQLite.
    dialect: Any = import_module("sqlalchemy.dialects." + (
        "postgresql" if engine.dialect.name == "postgresql" else "sqlite"))
    # Without `preserve_rowcount`, SQLAlchemy reports -1 rows for an INSERT on PostgreSQL.
    return dialect.insert(table).on_conflict_do_nothing().execution_options(preserve_rowcount=True)


class utc_now(FunctionElement[datetime]):
    """SQL: the database's clock, in UTC and without an offset, as `UTCDateTime` stores times.
    (PostgreSQL's now() is in the session's time zone, which a `timestamp without time zone`
    column would keep as if it were UTC; SQLite's CURRENT_TIMESTAMP is UTC.)"""

    type = DateTime()
    inherit_cache = True


@compiles(utc_now)
def _utc_now(element: utc_now, compiler: SQLCompiler, **kw: object) -> str:
    return "CURRENT_TIMESTAMP"


@compiles(utc_now, "postgresql")
def _utc_now_postgresql(element: utc_now, compiler: SQLCompiler, **kw: object) -> str:
    return "(now() AT TIME ZONE 'UTC')"


class epoch_now(FunctionElement[float]):
    """SQL: the database's clock in seconds since the epoch, one value within a statement."""

    type = Double()
    inherit_cache = True


@compiles(epoch_now)
def _epoch_now_sqlite(element: epoch_now, compiler: SQLCompiler, **kw: object) -> str:
    # julianday('now') is the same for every use within one statement (millisecond precision).
    return "((julianday('now') - 2440587.5) * 86400.0)"


@compiles(epoch_now, "postgresql")
def _epoch_now_postgresql(element: epoch_now, compiler: SQLCompiler, **kw: object) -> str:
    return "CAST(EXTRACT(EPOCH FROM statement_timestamp()) AS DOUBLE PRECISION)"
