"""The ledger rows of delivery jobs: which keys a live job holds, which are pending with none,
and the crash rule applied to the `sending` rows of some keys only.

In workers mode nothing resolves a channel's `sending` rows channel-wide (live workers own them):
the planner resolves those no live job holds, a job those of its own keys an earlier attempt left.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import Connection, and_, bindparam, or_, select, text, update

from pipeline.models import Status
from pipeline.plan import key_prefix
from pipeline.store.schema import deliveries, subscribers
from pipeline.store.subscribers import SubscriberStatus
from pipeline.workers.app import TASK

_LIVE = text("SELECT jsonb_array_elements_text(args -> 'keys') AS key FROM procrastinate_jobs "
             "WHERE task_name = :task AND status IN ('todo', 'doing') "
             "AND args ->> 'channel' = :channel AND args ->> 'edition' = :edition")


def _edition(channel: str, edition: str):  # type: ignore[no-untyped-def]
    """SQL: the real (not dry-run) rows of one channel and edition, as a range of the primary key."""
    start = key_prefix(channel, edition, dry_run=False)
    d = deliveries.c
    return and_(d.key > start, d.key < start + "\U0010ffff", d.channel == channel, d.edition == edition,
                d.dry_run.is_(False))


def live_keys(conn: Connection, *, channel: str, edition: str) -> set[str]:
    """The keys of `channel` and `edition` that a waiting or running delivery job holds."""
    return {row.key for row in conn.execute(_LIVE, {"task": TASK, "channel": channel, "edition": edition})}


def pending_keys(conn: Connection, *, channel: str, edition: str, now: datetime) -> list[str]:
    """The keys a job could send now, in key order: pending, due, and (for an email) still
    addressed to an active subscriber, as an inline publish would read them."""
    d, s = deliveries.c, subscribers.c
    query = (select(d.key).select_from(deliveries.outerjoin(subscribers, s.email_key == d.recipient))
             .where(_edition(channel, edition), d.status == Status.PENDING.value,
                    or_(d.next_attempt_at.is_(None), d.next_attempt_at <= now),
                    or_(d.kind != "email", s.status == SubscriberStatus.ACTIVE.value))
             .order_by(d.key))
    return [row.key for row in conn.execute(query)]


def sending_keys(conn: Connection, *, channel: str, edition: str) -> list[str]:
    """The keys of `channel` and `edition` left `sending`."""
    d = deliveries.c
    return [row.key for row in conn.execute(
        select(d.key).where(_edition(channel, edition), d.status == Status.SENDING.value))]


def recover_keys(conn: Connection, keys: Iterable[str], *, rule: str, now: datetime) -> int:
    """The channel's crash rule for those of `keys` left `sending` (by a worker that died): "resend"
    puts them back to pending (counted in `resends`), "unknown" marks them unknown. How many."""
    keys = list(keys)
    if not keys:
        return 0
    d = deliveries.c
    where = and_(d.key.in_(bindparam("keys", expanding=True)), d.status == Status.SENDING.value)
    if rule == "resend":
        values = dict(status=Status.PENDING.value, resends=d.resends + 1)
    else:
        values = dict(status=Status.UNKNOWN.value,
                      last_error="interrupted while sending; the outcome is unknown")
    total = 0
    for start in range(0, len(keys), 1000):
        total += conn.execute(update(deliveries).where(where).values(**values, updated_at=now),
                              {"keys": keys[start:start + 1000]}).rowcount
    return total
