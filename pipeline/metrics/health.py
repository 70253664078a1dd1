"""Readiness: can the state database be read, and is its schema the one this version needs.

A SQLite file is checked on a connection of its own, opened read-only for each check: a
connection the app keeps open would still read a file that was deleted or replaced under it (and
the app would write into a ghost), and a read-write open would create an empty file where the
database was. Other databases are checked through the app's own engine (its pool pings first).
"""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, create_engine, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool
from starlette.concurrency import run_in_threadpool

from pipeline.errors import StateError
from pipeline.store.engine import state_error, where
from pipeline.store.revision import refusal, status
from pipeline.store.schema import deliveries, subscribers

CHECK_TIMEOUT = 5.0     # seconds a readiness check may take before the answer is "not ready"


@dataclass(frozen=True, kw_only=True)
class Readiness:
    """The answer of /readyz: `reason` says, in one line, why the process is not ready."""

    ready: bool
    reason: str = ""


def readiness(engine: Engine) -> Readiness:
    """Whether the state database behind `engine` is reachable, is a pipeline database, and is
    at the schema revision this version needs (never raises)."""
    probe = _read_only(engine) if _sqlite_file(engine) else engine
    try:
        with probe.connect() as conn:
            conn.execute(select(deliveries.c.key).limit(1)).all()
            conn.execute(select(subscribers.c.id).limit(1)).all()
        refused = refusal(status(probe), where(engine))
    except StateError as exc:
        return Readiness(ready=False, reason=str(exc))
    except SQLAlchemyError as exc:
        known = state_error(engine, exc)
        text = " ".join(str(getattr(exc, "orig", None) or exc).split())
        reason = str(known) if known else f"state database {where(engine)}: {text}"
        return Readiness(ready=False, reason=reason)
    finally:
        if probe is not engine:
            probe.dispose()
    if refused is not None:
        return Readiness(ready=False, reason=str(refused))
    return Readiness(ready=True)


class ReadinessCheck:
    """At most one readiness check at a time, shared by the requests that arrive meanwhile: a
    database that hangs (a server that stopped answering) holds one thread, not one per probe."""

    def __init__(self, engine: Engine, *, timeout: float = CHECK_TIMEOUT) -> None:
        self.engine = engine
        self.timeout = timeout
        self._running: asyncio.Future[Readiness] | None = None

    async def check(self) -> Readiness:
        """The result of the running check (or of a new one), or "not ready" after `timeout`."""
        if self._running is None or self._running.done():
            self._running = asyncio.ensure_future(run_in_threadpool(readiness, self.engine))
        try:
            return await asyncio.wait_for(asyncio.shield(self._running), self.timeout)
        except TimeoutError:
            return Readiness(ready=False, reason=f"state database {where(self.engine)}: no answer "
                                                 f"within {self.timeout:g}s")


def _sqlite_file(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:")


def _read_only(engine: Engine) -> Engine:
    """A one-connection engine opening the same SQLite file read-only (never creating it)."""
    uri = Path(engine.url.database or "").resolve().as_uri() + "?mode=ro"
    return create_engine("sqlite://", poolclass=NullPool,
                         creator=lambda: sqlite3.connect(uri, uri=True, check_same_thread=False))
