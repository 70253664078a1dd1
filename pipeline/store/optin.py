"""Double opt-in: a sign-up from the form makes an address `pending`; its confirmation link, made
of an expiring HMAC token, makes it `active` with its consent recorded. Also what the manage page
changes (name, topics, subscribing again). The subscriber table itself is `subscribers.py`'s.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, select, update

from pipeline.store.schema import subscribers
from pipeline.store.subscribers import (
    Subscriber,
    SubscriberStatus,
    add_new,
    from_row,
    new_row,
    normalize,
    split_tags,
)


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, kw_only=True)
class SignUp:
    """What a sign-up did: the subscriber as stored now, and whether a confirmation email is due
    (a new or still-pending address, at most once per `resend_after`)."""

    subscriber: Subscriber
    send_confirmation: bool


def sign_up(engine: Engine, address: str, *, name: str | None = None, tags: tuple[str, ...] = (),
            ip_hash: str | None = None, resend_after: timedelta = timedelta(hours=1),
            now: datetime | None = None) -> SignUp:
    """Record a sign-up from the form: a new address becomes `pending`. An active address is left
    as it is (a stranger must not change someone's name or topics), and so is a suppressed one;
    any other gets a confirmation email, at most one per `resend_after`. Raises ValueError for
    an invalid address."""
    email = normalize(address)
    now = now or _now()
    name = (name or "").strip()[:200] or None
    c = subscribers.c
    with engine.begin() as conn:
        # Inserted first: two sign-ups of one address at once wait for each other in the database.
        added = add_new(conn, {**new_row(email, name, tags, source="form", now=now),
                               "status": SubscriberStatus.PENDING, "consent_at": None,
                               "consent_source": None, "consent_ip": ip_hash, "confirm_sent_at": now})
        row = conn.execute(select(subscribers).where(c.email_key == email.lower())).one()
        if added:
            return SignUp(subscriber=from_row(row), send_confirmation=True)
        if row.status in (SubscriberStatus.ACTIVE, SubscriberStatus.SUPPRESSED):
            return SignUp(subscriber=from_row(row), send_confirmation=False)
        last = row.confirm_sent_at
        due = last is None or now - last >= resend_after
        changes: dict[str, object] = {}
        if row.status == SubscriberStatus.PENDING:      # nobody's data yet: the newest form wins
            changes = {"name": name or row.name, "tags": ",".join(tags) or row.tags}
        if due:
            changes.update(confirm_sent_at=now, consent_ip=ip_hash)
        if changes:
            conn.execute(update(subscribers).where(c.id == row.id).values(**changes, updated_at=now))
        row = conn.execute(select(subscribers).where(c.id == row.id)).one()
    return SignUp(subscriber=from_row(row), send_confirmation=due)


def confirm(engine: Engine, uid: str, *, now: datetime | None = None) -> Subscriber | None:
    """The confirmation link was followed: the address is `active`, its consent recorded (the
    form's). Suppressed addresses stay suppressed. None for an unknown uid."""
    now = now or _now()
    c = subscribers.c
    with engine.begin() as conn:
        conn.execute(update(subscribers).where(c.uid == uid, c.status != SubscriberStatus.SUPPRESSED,
                                               c.status != SubscriberStatus.ACTIVE)
                     .values(status=SubscriberStatus.ACTIVE, consent_at=now, consent_source="form",
                             unsubscribed_at=None, status_reason=None, updated_at=now))
        row = conn.execute(select(subscribers).where(c.uid == uid)).first()
    return from_row(row) if row is not None else None


def update_preferences(engine: Engine, uid: str, *, name: str | None, topics: tuple[str, ...],
                       all_topics: tuple[str, ...]) -> Subscriber | None:
    """The manage page: a new name, and the topics the reader wants among `all_topics` (their
    other tags, set by the operator, are kept)."""
    c = subscribers.c
    with engine.begin() as conn:
        row = conn.execute(select(subscribers).where(c.uid == uid)).first()
        if row is None:
            return None
        kept = [t for t in split_tags(row.tags) if t not in all_topics]
        chosen = [t for t in all_topics if t in topics]
        conn.execute(update(subscribers).where(c.id == row.id).values(
            name=(name or "").strip()[:200] or None, tags=",".join([*kept, *chosen]), updated_at=_now()))
        row = conn.execute(select(subscribers).where(c.id == row.id)).one()
    return from_row(row)


def resubscribe(engine: Engine, uid: str) -> Subscriber | None:
    """The manage page's "subscribe again" (the link proves the address is the reader's): an
    unsubscribed address becomes active. Bounced, complained and suppressed ones do not: the
    reader signs up again through the form and confirms."""
    c = subscribers.c
    with engine.begin() as conn:
        conn.execute(update(subscribers).where(c.uid == uid, c.status == SubscriberStatus.UNSUBSCRIBED)
                     .values(status=SubscriberStatus.ACTIVE, unsubscribed_at=None, status_reason=None,
                             consent_at=_now(), consent_source="manage", updated_at=_now()))
        row = conn.execute(select(subscribers).where(c.uid == uid)).first()
    return from_row(row) if row is not None else None


def confirm_token(uid: str, email: str, secret: str, *, expires: datetime) -> str:
    """`<uid>.<expiry, unix seconds in base 36>.<HMAC>`: a confirmation link that works until
    `expires` and cannot be made for another address or a later time without the secret."""
    stamp = _base36(int(expires.timestamp()))
    mac = hmac.new(secret.encode(), f"confirm:{uid}:{email.lower()}:{stamp}".encode(),
                   hashlib.sha256).hexdigest()
    return f"{uid}.{stamp}.{mac[:40]}"


def resolve_confirm_token(engine: Engine, value: str, secret: str, *, now: datetime | None = None
                          ) -> tuple[Subscriber | None, str]:
    """(subscriber, "") for a valid, unexpired confirmation token, else (None, reason) with
    reason "malformed", "unknown" (forged, or the address was erased) or "expired"."""
    parts = value.split(".")
    if len(parts) != 3 or len(parts[0]) != 32 or len(parts[2]) != 40 or len(parts[1]) > 12 \
            or not all(ch in "0123456789abcdef" for ch in parts[0] + parts[2]) \
            or not parts[1].isalnum() or not parts[1].isascii():
        return None, "malformed"
    with engine.connect() as conn:
        row = conn.execute(select(subscribers).where(subscribers.c.uid == parts[0])).first()
    if row is None:
        return None, "unknown"
    expires = datetime.fromtimestamp(int(parts[1], 36), UTC)
    if not hmac.compare_digest(confirm_token(row.uid, row.email, secret, expires=expires), value):
        return None, "unknown"
    if (now or _now()) >= expires:
        return None, "expired"
    return from_row(row), ""


def ip_hash(ip: str, secret: str) -> str:
    """The consent record's trace of an IP address: an HMAC, so that it can be matched against a
    known address on request but not reversed by trying all four billion."""
    return hmac.new(secret.encode(), f"ip:{ip}".encode(), hashlib.sha256).hexdigest()[:32]


def _base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        number, rest = divmod(number, 36)
        out = digits[rest] + out
        if not number:
            return out
