"""Digest editions: which posts the next one holds, its key, and the edition itself, compiled
when an entry fires and compiled again, the same, when its send is finished later (a worker's
job, `pipeline retry` after a crash mid-send)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Engine, func
from sqlalchemy import select as sql_select

from pipeline.config import Config
from pipeline.fields import EARLIEST
from pipeline.models import Edition, Post
from pipeline.store.engine import engine_for
from pipeline.store.runs import claim_for_digest, digested
from pipeline.store.schema import schedule_runs
from pipeline.timetable.entries import Entry


def digest_candidates(config: Config, entry: Entry, channel: str, fire_time: datetime,
                      ready: list[Post]) -> list[str]:
    """Posts published since the entry's last digest (or in the week before the first one)
    that are in no digest of `channel` yet."""
    engine = engine_for(config)
    taken = digested(engine, channel)
    since = last_digest(engine, entry.name, fire_time) or fire_time - timedelta(days=7)
    return [p.slug for p in ready if p.slug not in taken and p.sendable_from > since]


def digest_key(config: Config, entry: Entry, fire_time: datetime) -> str:
    """The edition key of the digest `entry` sends at `fire_time` (one per local day)."""
    return f"digest-{entry.name}-{fire_time.astimezone(entry.zone(config.timezone)):%Y-%m-%d}"


def digest_fire(config: Config, channel: str, key: str) -> tuple[Entry, datetime] | None:
    """The digest entry of `channel` and the recorded fire time that made the edition `key`
    (None: no entry of the timetable makes it any more): what compiles it again after its send
    was cut short (`pipeline retry`)."""
    entries = {e.name: e for e in config.schedule if e.edition == "digest" and channel in e.channels}
    if not entries or not key.startswith("digest-"):
        return None
    with engine_for(config).connect() as conn:
        fires = conn.execute(sql_select(schedule_runs.c.entry, schedule_runs.c.fire_time)
                             .where(schedule_runs.c.entry.in_(list(entries)), schedule_runs.c.status == "ran",
                                    schedule_runs.c.fire_time >= EARLIEST)
                             .order_by(schedule_runs.c.fire_time.desc())).all()
    for name, fire_time in fires:
        if digest_key(config, entries[name], fire_time) == key:
            return entries[name], fire_time
    return None


def digest_members(config: Config, channel: str, key: str) -> list[str]:
    """The slugs recorded as in the digest `key` of `channel` when it fired."""
    return claim_for_digest(engine_for(config), channel=channel, digest=key, slugs=[])


def recompiled_digest(config: Config, entry: Entry, channel: str, fire_time: datetime,
                      posts: list[Post], members: list[str]) -> Edition:
    """The digest `entry` made at `fire_time` compiled again with its `members` (its recorded
    posts, `digest_members`) of `posts`, in their order: the same edition, whatever was published
    since."""
    chosen = set(members)
    return digest_edition(config, entry, channel, fire_time, [p for p in posts if p.slug in chosen])


def digest_edition(config: Config, entry: Entry, channel: str, fire_time: datetime,
                   posts: list[Post]) -> Edition:
    """The digest `entry` sends on `channel` at `fire_time` with `posts` in it: it covers the time
    since the entry's last digest (or the week before its first)."""
    from pipeline.render.digest import render_digest

    local = fire_time.astimezone(entry.zone(config.timezone))
    since = last_digest(engine_for(config), entry.name, fire_time) or fire_time - timedelta(days=7)
    return render_digest(posts, config, key=digest_key(config, entry, fire_time),
                         start=since.astimezone(local.tzinfo).date(), end=local.date(), channel=channel)


def last_digest(engine: Engine, entry: str, before: datetime) -> datetime | None:
    """The fire time of the last digest `entry` ran before `before` (None: none yet)."""
    # A stored time before 1970 (a damaged row) is not a last digest: `since` would be year 1,
    # and moving it to the entry's time zone overflows.
    with engine.connect() as conn:
        return conn.execute(sql_select(func.max(schedule_runs.c.fire_time))
                            .where(schedule_runs.c.entry == entry, schedule_runs.c.status == "ran",
                                   schedule_runs.c.fire_time >= EARLIEST,
                                   schedule_runs.c.fire_time < before)).scalar()
