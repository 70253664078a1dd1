"""What the metrics read from the state database: one `StateSnapshot` per change of it.

Four statements make a snapshot, whatever the size of the ledger: one grouped pass over the
deliveries (rows per channel, edition and status, and how long each sent row waited between its
planning and its send, counted into the histogram's buckets by the database), and one
small grouped read each of the subscriber events, the timetable runs and the scheduler lock.
Dry-run rows (`--dry-run` sends into the outbox) are left out: they are rehearsals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Engine, Integer, case, cast, extract, false, func, select

from pipeline.models import Status
from pipeline.store.schema import deliveries, schedule_runs, scheduler_lock, subscriber_events

# Upper bounds (seconds) of the send-latency buckets: from a second (a social post) to a day (a
# large list through a slow relay, or retries after a network's rate limit).
LATENCY_BUCKETS: tuple[float, ...] = (1, 5, 15, 60, 300, 900, 1800, 3600, 4 * 3600, 86400)


@dataclass(frozen=True, kw_only=True)
class Latency:
    """The send-latency histogram of one channel: rows per bucket (not cumulative; the last one
    is above the largest bound), and the sum of the seconds."""

    counts: tuple[int, ...]
    total: float


@dataclass(frozen=True, kw_only=True)
class LockHolder:
    """The row of the one-scheduler lock: who holds it, and when it last said it was alive."""

    host: str
    pid: int
    heartbeat_at: datetime


@dataclass(frozen=True, kw_only=True)
class StateSnapshot:
    """Everything the metrics take from the state database at one moment."""

    # (channel, edition, status) -> rows
    rows: dict[tuple[str, str, str], int] = field(default_factory=dict)
    # (channel, edition) -> when its latest row was planned
    planned: dict[tuple[str, str], datetime] = field(default_factory=dict)
    latency: dict[str, Latency] = field(default_factory=dict)
    events: dict[str, int] = field(default_factory=dict)          # kind -> events
    last_fire: dict[str, datetime] = field(default_factory=dict)  # entry -> latest fire time that ran
    lock: LockHolder | None = None

    def by_channel(self) -> dict[tuple[str, str], int]:
        """(channel, status) -> rows, over every edition."""
        out: dict[tuple[str, str], int] = {}
        for (channel, _, status), n in self.rows.items():
            out[(channel, status)] = out.get((channel, status), 0) + n
        return out

    def recent_editions(self, count: int) -> list[str]:
        """The `count` editions planned last (on any channel), newest first."""
        latest: dict[str, datetime] = {}
        for (_, edition), at in self.planned.items():
            latest[edition] = max(at, latest.get(edition, at))
        return sorted(latest, key=lambda e: (latest[e], e), reverse=True)[:count]


def _ledger_query():  # type: ignore[no-untyped-def]
    """The one grouped pass over the deliveries, in three steps. The pass groups by channel,
    edition, status and the whole seconds each row waited (computed once per row); the buckets
    are then given to those few groups, not to each row (a CASE over the rows would compute the
    wait once per bound); and the outer query groups by a subquery's column, not by the CASE
    itself, whose repeated bound parameters PostgreSQL would not take as the same expression."""
    d = deliveries.c
    # EXTRACT(epoch ...) on PostgreSQL, STRFTIME('%s', ...) on SQLite; NULL for rows not sent.
    # Whole seconds: PostgreSQL's microseconds would make about one group per row.
    waited = cast(extract("epoch", d.sent_at) - extract("epoch", d.created_at), Integer).label("waited")
    grouped = (select(d.channel, d.edition, d.status, waited, func.count().label("n"),
                      func.max(d.created_at).label("planned"))
               .where(d.dry_run == false()).group_by(d.channel, d.edition, d.status, waited).subquery())
    g = grouped.c
    sent = g.status == Status.SENT.value
    bucket = case((~sent, None), *((g.waited <= bound, i) for i, bound in enumerate(LATENCY_BUCKETS)),
                  else_=len(LATENCY_BUCKETS))
    bucketed = select(g.channel, g.edition, g.status, g.n, g.planned, bucket.label("bucket"),
                      case((sent, g.waited * g.n), else_=None).label("waited")).subquery()
    b = bucketed.c
    return (select(b.channel, b.edition, b.status, b.bucket, func.sum(b.n).label("n"),
                   func.sum(b.waited).label("waited"), func.max(b.planned).label("planned"))
            .group_by(b.channel, b.edition, b.status, b.bucket))


def read_snapshot(engine: Engine) -> StateSnapshot:
    """Read a snapshot (raises the store's StateError when the database cannot be read)."""
    rows: dict[tuple[str, str, str], int] = {}
    planned: dict[tuple[str, str], datetime] = {}
    buckets: dict[str, list[int]] = {}
    totals: dict[str, float] = {}
    r, e, lk = schedule_runs.c, subscriber_events.c, scheduler_lock.c
    with engine.connect() as conn:
        for row in conn.execute(_ledger_query()):
            key = (row.channel, row.edition, row.status)
            rows[key] = rows.get(key, 0) + row.n
            at = row.planned        # max() keeps the column's type: a UTC datetime
            if at is not None:
                planned[(row.channel, row.edition)] = max(at, planned.get((row.channel, row.edition), at))
            if row.bucket is not None:
                counts = buckets.setdefault(row.channel, [0] * (len(LATENCY_BUCKETS) + 1))
                counts[int(row.bucket)] += row.n
                totals[row.channel] = totals.get(row.channel, 0.0) + float(row.waited or 0)
        events = {row.kind: row.n for row in conn.execute(
            select(e.kind, func.count().label("n")).group_by(e.kind))}
        last_fire = {row.entry: row.fire_time for row in conn.execute(
            select(r.entry, func.max(r.fire_time).label("fire_time"))
            .where(r.status == "ran").group_by(r.entry))}
        holder = conn.execute(select(scheduler_lock).where(lk.name == "scheduler")).first()
    return StateSnapshot(
        rows=rows, planned=planned, events=events,
        latency={c: Latency(counts=tuple(n), total=totals.get(c, 0.0)) for c, n in buckets.items()},
        last_fire={entry: at for entry, at in last_fire.items() if at is not None},
        lock=(LockHolder(host=holder.host, pid=holder.pid, heartbeat_at=holder.heartbeat_at)
              if holder is not None else None))

