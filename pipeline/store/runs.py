"""What the scheduler keeps in the state database besides the ledger: which posts went into which
digest, which timetable runs happened or were missed, and the one-scheduler lock."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, Table, delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from pipeline.errors import PipelineError
from pipeline.store.schema import digest_items, schedule_runs, scheduler_lock

STALE_AFTER = timedelta(minutes=2)   # a lock not refreshed for this long belongs to no one


def _now() -> datetime:
    return datetime.now(UTC)


def _insert_ignore(engine: Engine, table: Table):  # type: ignore[no-untyped-def]
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing()


def claim_for_digest(engine: Engine, *, channel: str, digest: str, slugs: list[str]) -> list[str]:
    """Record `slugs` as in `digest` unless already in another digest of `channel`; returns the
    digest's posts (so a digest re-run after a crash keeps its posts, and no post is in two)."""
    with engine.begin() as conn:
        for slug in slugs:
            conn.execute(_insert_ignore(engine, digest_items).values(
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
        done = conn.execute(_insert_ignore(engine, schedule_runs).values(
            entry=entry, fire_time=fire_time, status=status, detail=detail[:2000], at=_now()))
    return done.rowcount > 0


def runs(engine: Engine, *, limit: int = 50) -> list[dict[str, object]]:
    """The latest runs and missed runs, newest first (for `pipeline status`)."""
    with engine.connect() as conn:
        rows = conn.execute(select(schedule_runs).order_by(schedule_runs.c.fire_time.desc()).limit(limit))
        return [dict(r._mapping) for r in rows]


@dataclass(frozen=True, kw_only=True)
class Lock:
    """The one-scheduler-per-database lock, held by this process."""

    engine: Engine
    pid: int
    host: str

    def refresh(self) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(scheduler_lock).where(scheduler_lock.c.name == "scheduler",
                                                      scheduler_lock.c.pid == self.pid,
                                                      scheduler_lock.c.host == self.host)
                         .values(heartbeat_at=_now()))

    def release(self) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(scheduler_lock).where(scheduler_lock.c.name == "scheduler",
                                                      scheduler_lock.c.pid == self.pid,
                                                      scheduler_lock.c.host == self.host))


class SchedulerRunning(PipelineError):
    """Another `pipeline run` holds the state database."""


def acquire(engine: Engine) -> Lock:
    """Take the lock, or raise naming the scheduler that holds it. A lock whose process is gone
    (same host) or that was not refreshed for STALE_AFTER is stale and taken over."""
    me = Lock(engine=engine, pid=os.getpid(), host=socket.gethostname())
    with engine.begin() as conn:
        row = conn.execute(select(scheduler_lock).where(scheduler_lock.c.name == "scheduler")).first()
        if row is not None and not _stale(row, me.host):
            raise SchedulerRunning(
                f"another scheduler is running on this state database (pid {row.pid} on {row.host}, "
                f"since {row.started_at:%Y-%m-%d %H:%M:%S} UTC); stop it first")
        if row is not None:
            conn.execute(delete(scheduler_lock).where(scheduler_lock.c.name == "scheduler"))
        conn.execute(insert(scheduler_lock).values(name="scheduler", pid=me.pid, host=me.host,
                                                   started_at=_now(), heartbeat_at=_now()))
    return me


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
