"""What comes back for a subscriber (bounces, complaints, unsubscribes by mail or webhook), and
what it does to their status.

Every event is kept with a unique `event_id` (a DSN's Message-ID, a webhook's event id, the
ledger key of a refused send): reading a mailbox or receiving a webhook twice changes nothing the
second time. The rules, in one place for every source:

- `hard`: the address does not exist (5.1.x, 5.2.1, 5.5.x) -> `bounced`;
- `soft`: temporary (4.x.x, mailbox full, ...); `soft_limit` of them within `soft_days` -> `bounced`;
- `policy`: refused by policy (5.7.x, spam filter): kept for the record, the status stays;
- `complaint`: marked as spam (ARF, an ESP's complaint) -> `complained` (never mailed again);
- `unsubscribe`: a mail to the unsubscribe address, or an ESP's unsubscribe -> `unsubscribed`.

A suppressed address stays suppressed, and an address that left the list is never brought back.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from sqlalchemy import Engine, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from pipeline.store.schema import subscriber_events, subscribers
from pipeline.store.subscribers import SubscriberStatus

log = logging.getLogger(__name__)


class EventKind(StrEnum):
    HARD = "hard"
    SOFT = "soft"
    POLICY = "policy"
    COMPLAINT = "complaint"
    UNSUBSCRIBE = "unsubscribe"


@dataclass(frozen=True, kw_only=True)
class Event:
    """One bounce, complaint or unsubscribe for an address, from `source` (smtp, dsn, arf,
    mailto, ses, postmark, mailgun, sendgrid)."""

    event_id: str
    email: str
    kind: EventKind
    source: str
    edition: str | None = None
    detail: str = ""
    at: datetime | None = None

    def __post_init__(self) -> None:
        if not self.event_id or not self.email:
            raise ValueError("an event needs an event_id and an address")


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """What recording an event did: `duplicate` (seen before: nothing changed), `known` (the
    address is on the list) and the status it moved to, if any."""

    duplicate: bool = False
    known: bool = True
    status: str | None = None


# The status each kind leads to, and the statuses it may replace.
_MOVES: dict[EventKind, tuple[SubscriberStatus, frozenset[str]]] = {
    EventKind.HARD: (SubscriberStatus.BOUNCED, frozenset({"active", "pending"})),
    EventKind.SOFT: (SubscriberStatus.BOUNCED, frozenset({"active", "pending"})),
    EventKind.COMPLAINT: (SubscriberStatus.COMPLAINED,
                          frozenset({"active", "pending", "unsubscribed", "bounced"})),
    EventKind.UNSUBSCRIBE: (SubscriberStatus.UNSUBSCRIBED, frozenset({"active", "pending"})),
}


def record(engine: Engine, event: Event, *, soft_limit: int = 3, soft_days: int = 30) -> Outcome:
    """Keep `event` and apply its rule to the subscriber's status (see the module's docstring)."""
    at = event.at or datetime.now(UTC)
    key = event.email.strip().lower()
    c = subscribers.c
    try:
        with engine.begin() as conn:
            conn.execute(insert(subscriber_events).values(
                event_id=event.event_id[:300], email_key=key, kind=event.kind, source=event.source,
                edition=(event.edition or None) and event.edition[:300], detail=event.detail[:1000], at=at))
            row = conn.execute(select(c.id, c.status).where(c.email_key == key)).first()
            if row is None:
                return Outcome(known=False)
            move = _MOVES.get(event.kind)
            if move is None or row.status not in move[1]:
                return Outcome()
            if event.kind == EventKind.SOFT and _soft_count(conn, key, at, soft_days) < soft_limit:
                return Outcome()
            reason = f"{event.kind} ({event.source}{', ' + event.edition if event.edition else ''}): " \
                     f"{event.detail}"[:500]
            conn.execute(update(subscribers).where(c.id == row.id).values(
                status=move[0], status_reason=reason, unsubscribed_at=at, updated_at=at))
            log.info("subscriber %s is now %s (%s)", key.rpartition("@")[2], move[0], event.kind)
            return Outcome(status=move[0])
    except IntegrityError:
        return Outcome(duplicate=True)


def _soft_count(conn, key: str, at: datetime, days: int) -> int:  # type: ignore[no-untyped-def]
    e = subscriber_events.c
    return int(conn.execute(select(func.count()).select_from(subscriber_events).where(
        e.email_key == key, e.kind == EventKind.SOFT, e.at > at - timedelta(days=days),
        e.at <= at)).scalar_one())


def counts(engine: Engine, *, since: datetime | None = None) -> dict[str, int]:
    """Events by kind (since `since`), for `pipeline bounces` and the complaint rate."""
    e = subscriber_events.c
    query = select(e.kind, func.count()).group_by(e.kind)
    if since is not None:
        query = query.where(e.at >= since)
    with engine.connect() as conn:
        return {kind: int(n) for kind, n in conn.execute(query)}


def history(engine: Engine, address: str, *, limit: int = 50) -> list[dict[str, object]]:
    """The newest events of one address (for `subscribers show`)."""
    e = subscriber_events.c
    query = (select(e.kind, e.source, e.edition, e.detail, e.at)
             .where(e.email_key == address.strip().lower()).order_by(e.at.desc()).limit(limit))
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]
