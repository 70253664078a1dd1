"""What the scheduler keeps in the state database besides the ledger: which posts went into which
digest, which timetable runs happened or were missed, and the one-scheduler lock.

The lock is a row of `scheduler_lock` (name "scheduler": host, pid, heartbeat) on every database.
On PostgreSQL the row only says who is active; what decides it is an advisory lock held on a
connection of its own, outside the engine's pool, so that a dead process or a cut connection
frees it and a standby (`pipeline run` on another machine) takes over. Standbys keep a row each
("standby-...") with their host, pid and heartbeat, so `pipeline status` can list them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, Engine, create_engine, delete, func, select, text, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from pipeline.errors import PipelineError
from pipeline.store.dialect import insert_ignore
from pipeline.store.engine import LIBPQ_DEFAULTS
from pipeline.store.schema import digest_items, schedule_runs, scheduler_lock

STALE_AFTER = timedelta(minutes=2)   # a lock not refreshed for this long belongs to no one
# The advisory lock's two keys ("pipe", "schd"); advisory locks are per database, so several
# pipelines can share a PostgreSQL server.
ADVISORY_KEYS = (0x70697065, 0x73636864)
# The lock's connection, on both ends: a peer that stops answering is given up within about 20 s
# (keep-alive probes when idle, a timeout on unacknowledged data otherwise), so the server frees
# the lock of a machine that died and the holder of a connection that was cut finds out.
# (The store's connect timeout and keep-alives, probing sooner.)
_KEEPALIVE = {**LIBPQ_DEFAULTS, "keepalives_idle": "5", "keepalives_interval": "5",
              "tcp_user_timeout": "20000"}
_SESSION_SETTINGS = ("SET tcp_keepalives_idle = 5", "SET tcp_keepalives_interval = 5",
                     "SET tcp_keepalives_count = 3", "SET tcp_user_timeout = 20000",
                     # The lock's session sits idle between checks: no timeout may end it.
                     "SET idle_session_timeout = 0", "SET idle_in_transaction_session_timeout = 0")


def _now() -> datetime:
    return datetime.now(UTC)


def claim_for_digest(engine: Engine, *, channel: str, digest: str, slugs: list[str]) -> list[str]:
    """Record `slugs` as in `digest` unless already in another digest of `channel`; returns the
    digest's posts (so a digest re-run after a crash keeps its posts, and no post is in two)."""
    with engine.begin() as conn:
        for slug in slugs:
            conn.execute(insert_ignore(engine, digest_items).values(
                channel=channel, slug=slug, digest=digest, added_at=_now()))
        rows = conn.execute(select(digest_items.c.slug).where(digest_items.c.channel == channel,
                                                              digest_items.c.digest == digest))
        return [r.slug for r in rows]


def digested(engine: Engine, channel: str) -> set[str]:
    """Slugs already in a digest of `channel`."""
    with engine.connect() as conn:
        return {r.slug for r in conn.execute(select(digest_items.c.slug)
                                             .where(digest_items.c.channel == channel))}


def digest_of(engine: Engine, channel: str) -> dict[str, str]:
    """Slug -> the digest of `channel` it is in."""
    with engine.connect() as conn:
        return {r.slug: r.digest for r in conn.execute(
            select(digest_items.c.slug, digest_items.c.digest).where(digest_items.c.channel == channel))}


def record_run(engine: Engine, entry: str, fire_time: datetime, status: str, detail: str = "") -> bool:
    """Note a run (or a missed one); False if that fire time was already recorded."""
    with engine.begin() as conn:
        done = conn.execute(insert_ignore(engine, schedule_runs).values(
            entry=entry, fire_time=fire_time, status=status, detail=detail[:2000], at=_now()))
    return done.rowcount > 0


def runs(engine: Engine, *, limit: int = 50) -> list[dict[str, object]]:
    """The latest runs and missed runs, newest first (for `pipeline status`)."""
    with engine.connect() as conn:
        rows = conn.execute(select(schedule_runs).order_by(schedule_runs.c.fire_time.desc()).limit(limit))
        return [dict(r._mapping) for r in rows]


def ran(engine: Engine, entry: str, fire_time: datetime) -> bool:
    """Whether a run (or a missed run) of `entry` at `fire_time` is recorded."""
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(schedule_runs).where(
            schedule_runs.c.entry == entry, schedule_runs.c.fire_time == fire_time)).scalar_one() > 0


@dataclass(frozen=True, kw_only=True)
class Lock:
    """The one-scheduler-per-database lock, held by this process (on PostgreSQL: `session`, the
    connection holding the advisory lock)."""

    engine: Engine
    pid: int
    host: str
    session: Connection | None = None

    def refresh(self) -> None:
        """Renew the row's heartbeat (what `pipeline status` and the leadership metric read), and
        forget standbys that stopped saying they are alive."""
        with self.engine.begin() as conn:
            conn.execute(update(scheduler_lock).where(scheduler_lock.c.name == "scheduler",
                                                      scheduler_lock.c.pid == self.pid,
                                                      scheduler_lock.c.host == self.host)
                         .values(heartbeat_at=_now()))
            conn.execute(delete(scheduler_lock).where(scheduler_lock.c.name.like("standby-%"),
                                                      scheduler_lock.c.heartbeat_at < _now() - STALE_AFTER))

    def held(self) -> bool:
        """Whether this process still holds the lock: on PostgreSQL, whether the lock's own
        connection still answers (a cut or terminated connection has freed the lock)."""
        if self.session is None:
            return True
        try:
            self.session.execute(text("SELECT 1"))
        except SQLAlchemyError:
            return False
        return True

    def release(self) -> None:
        """Give the lock up (on PostgreSQL the connection is closed, which frees it anyway)."""
        try:
            with self.engine.begin() as conn:
                conn.execute(delete(scheduler_lock).where(scheduler_lock.c.name == "scheduler",
                                                          scheduler_lock.c.pid == self.pid,
                                                          scheduler_lock.c.host == self.host))
        finally:
            if self.session is not None:
                close_session(self.session)


class SchedulerRunning(PipelineError):
    """Another `pipeline run` holds the state database."""


class SchedulerLost(PipelineError):
    """This `pipeline run` lost the lock it held (its connection to PostgreSQL was cut)."""


def acquire(engine: Engine) -> Lock:
    """Take the lock, or raise naming the scheduler that holds it. A lock whose process is gone
    (same host) or that was not refreshed for STALE_AFTER is stale and taken over. (On
    PostgreSQL, `pipeline run` uses `try_lead` instead, and waits.)"""
    me = Lock(engine=engine, pid=os.getpid(), host=socket.gethostname())
    for _ in range(2):
        with engine.begin() as conn:
            row = conn.execute(select(scheduler_lock).where(scheduler_lock.c.name == "scheduler")).first()
            if row is not None and not _stale(row, me.host):
                raise SchedulerRunning(
                    f"another scheduler is running on this state database (pid {row.pid} on {row.host}, "
                    f"since {row.started_at:%Y-%m-%d %H:%M:%S} UTC); stop it first")
            if row is not None:
                conn.execute(delete(scheduler_lock).where(scheduler_lock.c.name == "scheduler",
                                                          scheduler_lock.c.pid == row.pid,
                                                          scheduler_lock.c.host == row.host))
            # Two schedulers starting at once (on PostgreSQL both may read "no lock"): the
            # second inserts nothing and, next time round, reads the first one's row.
            taken = conn.execute(insert_ignore(engine, scheduler_lock).values(
                name="scheduler", pid=me.pid, host=me.host, started_at=_now(), heartbeat_at=_now()))
            if taken.rowcount > 0:
                return me
    raise SchedulerRunning("another scheduler took this state database's lock as this one started; "
                           "stop it first")


def lock_session(engine: Engine) -> Connection:
    """A new connection to the PostgreSQL state database of its own (not from the engine's pool:
    closing it ends the session, and with it the advisory lock), in autocommit mode so that it
    never sits in an open transaction, with keep-alives on both ends."""
    own = create_engine(engine.url, poolclass=NullPool, connect_args=_KEEPALIVE)
    conn = own.connect().execution_options(isolation_level="AUTOCOMMIT")
    for setting in _SESSION_SETTINGS:
        # An older server may lack one of them: the others still hold.
        with contextlib.suppress(SQLAlchemyError):
            conn.execute(text(setting))
    return conn


def try_lead(engine: Engine, session: Connection) -> Lock | None:
    """PostgreSQL: take the advisory lock on `session` (from `lock_session`) without waiting; the
    Lock, its row written, or None while another process holds it."""
    got = session.execute(text("SELECT pg_try_advisory_lock(:a, :b)"),
                          {"a": ADVISORY_KEYS[0], "b": ADVISORY_KEYS[1]}).scalar_one()
    if not got:
        return None
    me = Lock(engine=engine, pid=os.getpid(), host=socket.gethostname(), session=session)
    # The advisory lock decides; a row left by a holder that died is only out of date.
    with engine.begin() as conn:
        conn.execute(delete(scheduler_lock).where(scheduler_lock.c.name.in_(["scheduler", _standby_name()])))
        conn.execute(insert_ignore(engine, scheduler_lock).values(
            name="scheduler", pid=me.pid, host=me.host, started_at=_now(), heartbeat_at=_now()))
    return me


def close_session(session: Connection) -> None:
    """Close a connection from `lock_session` (which frees an advisory lock held on it)."""
    engine = session.engine
    with contextlib.suppress(SQLAlchemyError):    # a connection already cut has nothing to close
        session.close()
    engine.dispose()


def standing_by(engine: Engine) -> None:
    """Note (or renew) this process as a standby scheduler, for `pipeline status`."""
    name, now = _standby_name(), _now()
    with engine.begin() as conn:
        done = conn.execute(update(scheduler_lock).where(scheduler_lock.c.name == name)
                            .values(heartbeat_at=now))
        if done.rowcount == 0:
            conn.execute(insert_ignore(engine, scheduler_lock).values(
                name=name, pid=os.getpid(), host=socket.gethostname(), started_at=now, heartbeat_at=now))


def stop_standing_by(engine: Engine) -> None:
    """Remove this process's standby row."""
    with engine.begin() as conn:
        conn.execute(delete(scheduler_lock).where(scheduler_lock.c.name == _standby_name()))


def _standby_name() -> str:
    # The key column is short: a digest of host and pid (the row holds both in full).
    return "standby-" + hashlib.sha1(f"{socket.gethostname()}:{os.getpid()}".encode()).hexdigest()[:24]


@dataclass(frozen=True, kw_only=True)
class Scheduler:
    """A `pipeline run` process as the state database knows it."""

    host: str
    pid: int
    started_at: datetime
    heartbeat_at: datetime


def scheduler_roster(engine: Engine) -> tuple[Scheduler | None, list[Scheduler]]:
    """The active scheduler (None when none is: no row, a heartbeat older than STALE_AFTER, or on
    PostgreSQL nobody holding the advisory lock) and the standbys that said they were alive
    within STALE_AFTER, oldest first."""
    fresh = _now() - STALE_AFTER
    with engine.connect() as conn:
        rows = conn.execute(select(scheduler_lock).where(scheduler_lock.c.heartbeat_at >= fresh)
                            .order_by(scheduler_lock.c.started_at)).all()
        held = True
        if engine.dialect.name == "postgresql":
            held = conn.execute(text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                "AND classid = :a AND objid = :b AND objsubid = 2"),
                {"a": ADVISORY_KEYS[0], "b": ADVISORY_KEYS[1]}).scalar_one() > 0
    found = {r.name: Scheduler(host=r.host, pid=r.pid, started_at=r.started_at, heartbeat_at=r.heartbeat_at)
             for r in rows}
    active = found.pop("scheduler", None) if held else None
    return active, [s for n, s in found.items() if n.startswith("standby-")]


def _stale(row, host: str) -> bool:  # type: ignore[no-untyped-def]
    if _now() - row.heartbeat_at > STALE_AFTER:
        return True
    if row.host != host:
        return False
    try:
        os.kill(row.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return row.pid == os.getpid()
