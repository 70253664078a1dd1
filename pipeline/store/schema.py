"""Every table of the state database, on one MetaData.

The database can be read here in one file, and a migration tool takes `metadata` as it is.
The APScheduler job store (`apscheduler_jobs`) is APScheduler's own table, created by it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Boolean, Column, DateTime, Double, Integer, MetaData, String, Table, Text
from sqlalchemy.types import TypeDecorator

from pipeline.models import Status

metadata = MetaData()


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and read back timezone-aware, on every database. (SQLite keeps no
    offset: without this, a time given in another zone would be read back as if it were UTC.)"""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect):  # type: ignore[no-untyped-def]
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect):  # type: ignore[no-untyped-def]
        return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


# Subscribers, and the secrets kept for them (the unsubscribe key).

subscribers = Table(
    "subscribers", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("uid", String(32), nullable=False, unique=True),     # public id used in tokens
    Column("email", String(320), nullable=False),
    Column("email_key", String(320), nullable=False, unique=True),   # lower-cased, for uniqueness
    Column("name", String(200)),
    Column("tags", Text, nullable=False, default=""),
    Column("status", String(16), nullable=False, default="active"),
    Column("source", String(200)),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("unsubscribed_at", UTCDateTime()),
    # Consent: when, how (form / import:<file> / cli) and from where (HMAC of the IP address).
    Column("consent_at", UTCDateTime()),
    Column("consent_source", String(200)),
    Column("consent_ip", String(64)),
    Column("confirm_sent_at", UTCDateTime()),     # the last confirmation email (double opt-in)
    Column("status_reason", String(500)),         # why the status last changed (bounce, complaint)
)

# What came back for a subscriber: bounces, complaints, unsubscribes by mail or webhook. One row
# per event, `event_id` unique so that reading a mailbox or a webhook twice counts nothing twice.
subscriber_events = Table(
    "subscriber_events", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(300), nullable=False, unique=True),
    Column("email_key", String(320), nullable=False, index=True),
    Column("kind", String(20), nullable=False),       # hard | soft | policy | complaint | unsubscribe
    Column("source", String(40), nullable=False),     # smtp | dsn | arf | mailto | ses | postmark | ...
    Column("edition", String(300)),
    Column("detail", String(1000)),
    Column("at", UTCDateTime(), nullable=False),
)

secrets_table = Table(
    "secrets", metadata,
    Column("name", String(64), primary_key=True),
    Column("value", String(128), nullable=False),
)


# The ledger: one row per delivery key.

deliveries = Table(
    "deliveries", metadata,
    # Byte order on PostgreSQL, as on SQLite: an edition's rows are the keys from `prefix` to
    # `prefix + U+10FFFF` (see below), which a natural-language collation (the server's default,
    # e.g. en_US.UTF-8) does not promise: it puts "NEWS:ed:a" between "news:ed:" and
    # "news:ed:\U0010ffff". Comparing bytes is also cheaper.
    Column("key", String(600).with_variant(String(600, collation="C"), "postgresql"), primary_key=True),
    Column("channel", String(100), nullable=False),
    Column("edition", String(300), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("recipient", String(320)),          # email_key of the subscriber, for email
    Column("network", String(40)),
    Column("part", Integer, nullable=False, default=0),
    Column("dry_run", Boolean, nullable=False, default=False),
    Column("status", String(10), nullable=False, default=Status.PENDING),
    Column("attempts", Integer, nullable=False, default=0),
    Column("resends", Integer, nullable=False, default=0),   # resent after a crash left it `sending`
    Column("last_error", Text),
    Column("remote_id", String(500)),
    Column("remote_url", String(1000)),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("sent_at", UTCDateTime()),
    Column("next_attempt_at", UTCDateTime()),
)
# No secondary index: a delivery's key starts with `channel:edition:`, so an edition's rows are one
# range of the primary key, which is what the sending queries walk (in key order, page by page).
# An index on (channel, edition) made SQLite sort every pending row of the edition for each page.


# The timetable's memory: digest membership, runs done or missed, the one scheduler's lock.

digest_items = Table(
    "digest_items", metadata,
    Column("channel", String(100), primary_key=True),
    Column("slug", String(300), primary_key=True),      # a post is in at most one digest per channel
    Column("digest", String(300), nullable=False),
    Column("added_at", UTCDateTime(), nullable=False),
)

schedule_runs = Table(
    "schedule_runs", metadata,
    Column("entry", String(200), primary_key=True),
    Column("fire_time", UTCDateTime(), primary_key=True),
    Column("status", String(10), nullable=False),        # ran | missed
    Column("detail", String(2000)),
    Column("at", UTCDateTime(), nullable=False),
)

scheduler_lock = Table(
    "scheduler_lock", metadata,
    Column("name", String(50), primary_key=True),
    Column("pid", Integer, nullable=False),
    Column("host", String(255), nullable=False),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("heartbeat_at", UTCDateTime(), nullable=False),
)


# Rate limits shared by every process that sends (store/throttle.py): one row per limit, e.g. a
# channel's `rate:` or a network's 429. Times are seconds since the epoch on the database's clock,
# as numbers: slots are sums of intervals, which both dialects add the same way.
rate_limits = Table(
    "rate_limits", metadata,
    Column("key", String(200), primary_key=True),
    Column("next_slot", Double(), nullable=False),      # the earliest slot no process has taken
    Column("held_until", Double()),                     # no slot before this (a 429's reset)
)


# Feeds read (`sources:`) and their entries.

feeds = Table(
    "feeds", metadata,
    Column("name", String(100), primary_key=True),
    Column("url", String(2000), nullable=False),
    Column("etag", String(500)),
    Column("last_modified", String(100)),
    Column("title", String(500)),
    Column("link", String(2000)),
    Column("baseline_at", UTCDateTime()),
    Column("last_fetch", UTCDateTime()),
    Column("last_ok", UTCDateTime()),
    Column("last_status", String(20)),
    Column("last_error", Text),
)

feed_entries = Table(
    "feed_entries", metadata,
    Column("feed", String(100), primary_key=True),
    Column("id_hash", String(64), primary_key=True),     # sha256 of the entry's id
    Column("entry_id", Text, nullable=False),            # guid / id, else link
    Column("slug", String(300), nullable=False, unique=True),   # fixed when first seen
    Column("status", String(10), nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("post", Text, nullable=False),                # the Post's fields as JSON
    Column("first_seen", UTCDateTime(), nullable=False),
    Column("changed_at", UTCDateTime(), nullable=False),  # last content change (settle counts from it)
    Column("updated_at", UTCDateTime(), nullable=False),
)
