"""The ledger: one row per delivery key, the only thing that decides whether something is sent.

Intent (`sending`) is committed before a send and the result after it, so a crash leaves at most
the sends that were in flight in `sending`; the next run resolves them by the channel's rule
(resend with the same identity, or mark `unknown`). A key that is `sent` is never sent again.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import (
    Engine,
    and_,
    bindparam,
    false,
    func,
    insert,
    literal,
    not_,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from pipeline.models import Receipt, Recipient, Status
from pipeline.plan import key_prefix
from pipeline.store.engine import state_error
from pipeline.store.schema import deliveries, subscribers
from pipeline.store.subscribers import SubscriberStatus


def _has_any(tags: tuple[str, ...]):  # type: ignore[no-untyped-def]
    """SQL: the subscriber's comma-separated tags include one of `tags` (false for none)."""
    padded = literal(",") + subscribers.c.tags + literal(",")
    return or_(false(), *(padded.contains(f",{tag},", autoescape=True) for tag in tags))


def _now() -> datetime:
    return datetime.now(UTC)


# The two statements of every send. They are compiled once for the database's dialect and run on
# the driver's own cursor: SQLAlchemy's per-call work was most of a send's CPU, and a publisher
# sends thousands of messages a second. Timestamps come from the database (CURRENT_TIMESTAMP), so
# only strings are bound and no type conversion is needed.
_BEGIN = (update(deliveries)
          .where(deliveries.c.key == bindparam("k"), deliveries.c.status == Status.PENDING.value)
          .values(status=Status.SENDING.value, attempts=deliveries.c.attempts + 1,
                  updated_at=func.now(), next_attempt_at=None))
_SUCCEED = (update(deliveries).where(deliveries.c.key == bindparam("k"))
            .values(status=Status.SENT.value, sent_at=func.now(), updated_at=func.now(),
                    last_error=None, remote_id=bindparam("rid"), remote_url=bindparam("url")))


class _Prepared:
    """A statement compiled once; `args(values)` gives the driver's parameters in its style."""

    def __init__(self, statement, dialect) -> None:  # type: ignore[no-untyped-def]
        compiled = statement.compile(dialect=dialect)
        self.sql = compiled.string
        self.defaults = {k: (v.value if isinstance(v, Status) else v) for k, v in compiled.params.items()}
        self.order = compiled.positiontup

    def args(self, values: dict[str, object]):  # type: ignore[no-untyped-def]
        merged = {**self.defaults, **values}
        return tuple(merged[name] for name in self.order) if self.order else merged


@dataclass(frozen=True, kw_only=True)
class Row:
    """A ledger row as read back."""

    key: str
    channel: str
    edition: str
    kind: str
    status: str
    attempts: int
    resends: int
    recipient: str | None
    network: str | None
    part: int
    last_error: str | None
    remote_id: str | None
    remote_url: str | None
    sent_at: datetime | None
    next_attempt_at: datetime | None
    dry_run: bool


class Ledger:
    """Reads and writes delivery rows. Thread-safe: writes go through one connection, one at a
    time, each committed at once."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        self._conn = engine.connect()
        self._begin = _Prepared(_BEGIN, engine.dialect)
        self._succeed = _Prepared(_SUCCEED, engine.dialect)

    def _fast(self, prepared: _Prepared, values: dict[str, object]) -> int:
        """Run a prepared statement on the write connection's driver cursor and commit."""
        with self._lock:
            if self._conn.in_transaction():
                self._conn.commit()
            driver = self._conn.connection.driver_connection
            try:
                cursor = driver.cursor()
                try:
                    cursor.execute(prepared.sql, prepared.args(values))
                    count = cursor.rowcount
                finally:
                    cursor.close()
                driver.commit()
            except Exception as exc:   # the driver's own errors bypass SQLAlchemy's translation
                error = state_error(self.engine, exc)
                if error is None:
                    raise
                raise error from None
            return count

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _write(self, statement, params: dict[str, object] | None = None) -> int:  # type: ignore[no-untyped-def]
        with self._lock:
            result = self._conn.execute(statement, params)
            self._conn.commit()
            return result.rowcount

    # -- planning --------------------------------------------------------------------------

    def plan(self, *, key: str, channel: str, edition: str, kind: str, network: str | None = None,
             part: int = 0, dry_run: bool = False) -> bool:
        """Record a planned delivery as `pending` unless the key exists; True if it was new."""
        now = _now()
        values = dict(key=key, channel=channel, edition=edition, kind=kind, network=network,
                      part=part, dry_run=dry_run, status=Status.PENDING, attempts=0, resends=0,
                      created_at=now, updated_at=now)
        return self._write(self._insert_ignore().values(**values)) > 0

    def plan_recipients(self, *, channel: str, edition: str, key_prefix: str, dry_run: bool,
                        topics: tuple[str, ...] = (), about: tuple[str, ...] = ()) -> int:
        """One `pending` row per active subscriber without a row yet, in one statement (no
        subscriber is loaded into memory). Keys are `key_prefix + address`.

        `topics` are the topics readers may choose (`subscribe.topics`) and `about` those of
        them the edition is about: a reader who chose topics gets the edition only if it is about
        one of them; a reader who chose none gets everything."""
        now = _now()
        source = select(
            (literal(key_prefix) + subscribers.c.email_key).label("key"), literal(channel),
            literal(edition), literal("email"), subscribers.c.email_key, literal(0),
            literal(dry_run), literal(Status.PENDING.value), literal(0), literal(0), literal(now),
            literal(now),
        ).where(subscribers.c.status == SubscriberStatus.ACTIVE)
        if topics:
            source = source.where(or_(not_(_has_any(topics)), _has_any(about)))
        cols = ["key", "channel", "edition", "kind", "recipient", "part", "dry_run", "status",
                "attempts", "resends", "created_at", "updated_at"]
        return self._write(self._insert_ignore().from_select(cols, source))

    def _insert_ignore(self):  # type: ignore[no-untyped-def]
        if self.engine.dialect.name == "postgresql":
            return postgresql.insert(deliveries).on_conflict_do_nothing()
        if self.engine.dialect.name == "sqlite":
            return sqlite.insert(deliveries).on_conflict_do_nothing()
        return insert(deliveries).prefix_with("IGNORE")

    # -- the send cycle --------------------------------------------------------------------

    def begin(self, key: str) -> bool:
        """Write the intent: `pending` -> `sending`. False if the key is not pending (already
        sent, or taken by someone else): then it must not be sent."""
        return self._fast(self._begin, {"k": key}) == 1

    def succeed(self, receipt: Receipt) -> None:
        self._fast(self._succeed, {"k": receipt.key, "rid": receipt.remote_id, "url": receipt.url})

    def fail(self, key: str, error: str, *, status: Status = Status.FAILED) -> None:
        """Record a permanent failure (or `unknown`) with its reason."""
        self._write(update(deliveries).where(deliveries.c.key == key)
                    .values(status=status, last_error=error[:2000], updated_at=_now()))

    def release(self, key: str, error: str | None = None, *, until: datetime | None = None) -> None:
        """Back to `pending` (not sent; the channel stopped, or the network asked us to wait)."""
        self._write(update(deliveries).where(deliveries.c.key == key).values(
            status=Status.PENDING, last_error=error, next_attempt_at=until, updated_at=_now()))

    def recover(self, channel: str, *, rule: str, dry_run: bool = False) -> int:
        """Resolve rows a crash left `sending` on `channel`: "resend" puts them back to pending
        (counted in `resends`), "unknown" marks them unknown. Returns how many."""
        where = and_(deliveries.c.channel == channel, deliveries.c.status == Status.SENDING,
                     deliveries.c.dry_run == dry_run)
        if rule == "resend":
            values = dict(status=Status.PENDING, resends=deliveries.c.resends + 1)
        else:
            values = dict(status=Status.UNKNOWN,
                          last_error="interrupted while sending; the outcome is unknown")
        return self._write(update(deliveries).where(where).values(**values, updated_at=_now()))

    def reset(self, statuses: list[Status], *, channel: str | None = None, dry_run: bool = False) -> int:
        """`pipeline retry`: put failed/unknown rows back to pending."""
        where = and_(deliveries.c.status.in_(statuses), deliveries.c.dry_run == dry_run)
        if channel:
            where = and_(where, deliveries.c.channel == channel)
        return self._write(update(deliveries).where(where).values(
            status=Status.PENDING, next_attempt_at=None, updated_at=_now()))

    # -- reading ---------------------------------------------------------------------------

    def pending_recipients(self, *, channel: str, edition: str, dry_run: bool, page: int = 500,
                           now: datetime | None = None) -> Iterator[tuple[str, Recipient]]:
        """(key, recipient) of due pending email rows whose subscriber is still active, in key
        order, a page at a time."""
        now = now or _now()
        last = key_prefix(channel, edition, dry_run=dry_run)
        end = last + "\U0010ffff"      # the edition's keys are the range (prefix, prefix + max)
        join = deliveries.join(subscribers, subscribers.c.email_key == deliveries.c.recipient)
        while True:
            query = (select(deliveries.c.key, subscribers.c.email, subscribers.c.name,
                            subscribers.c.uid).select_from(join)
                     .where(deliveries.c.channel == channel, deliveries.c.edition == edition,
                            deliveries.c.dry_run == dry_run, deliveries.c.status == Status.PENDING,
                            deliveries.c.key > last, deliveries.c.key < end,
                            subscribers.c.status == SubscriberStatus.ACTIVE,
                            or_(deliveries.c.next_attempt_at.is_(None),
                                deliveries.c.next_attempt_at <= now))
                     .order_by(deliveries.c.key).limit(page))
            with self.engine.connect() as conn:
                rows = conn.execute(query).all()
            for row in rows:
                yield row.key, Recipient(email=row.email, name=row.name, uid=row.uid)
            if len(rows) < page:
                return
            last = rows[-1].key

    def edition_counts(self, *, channel: str, edition: str, dry_run: bool = False) -> dict[str, int]:
        """Status -> count for one channel and edition (a range of the primary key)."""
        start = key_prefix(channel, edition, dry_run=dry_run)
        query = (select(deliveries.c.status, func.count().label("n"))
                 .where(deliveries.c.key > start, deliveries.c.key < start + "\U0010ffff")
                 .group_by(deliveries.c.status))
        with self.engine.connect() as conn:
            return {row.status: row.n for row in conn.execute(query)}

    def last_sent(self, *, channel: str, edition: str, dry_run: bool = False) -> datetime | None:
        """When the edition's latest delivery on `channel` was sent (None: nothing sent)."""
        start = key_prefix(channel, edition, dry_run=dry_run)
        query = (select(func.max(deliveries.c.sent_at))
                 .where(deliveries.c.key > start, deliveries.c.key < start + "\U0010ffff"))
        with self.engine.connect() as conn:
            return conn.execute(query).scalar()

    def pending_editions(self, *, dry_run: bool = False) -> dict[str, list[str]]:
        """Channel -> editions that have pending rows."""
        query = (select(deliveries.c.channel, deliveries.c.edition).distinct()
                 .where(deliveries.c.status == Status.PENDING, deliveries.c.dry_run == dry_run)
                 .order_by(deliveries.c.channel, deliveries.c.edition))
        out: dict[str, list[str]] = {}
        with self.engine.connect() as conn:
            for row in conn.execute(query):
                out.setdefault(row.channel, []).append(row.edition)
        return out

    def get(self, key: str) -> Row | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(deliveries).where(deliveries.c.key == key)).first()
        return Row(**{c: getattr(row, c) for c in Row.__dataclass_fields__}) if row else None

    def rows(self, *, channel: str | None = None, edition: str | None = None,
             status: Status | None = None, dry_run: bool | None = False,
             due: datetime | None = None) -> list[Row]:
        """Rows matching the filters (for a post's few social rows, reports and tests; not for
        bulk sends). `due`: only rows whose next attempt is not after it."""
        query = select(deliveries).order_by(deliveries.c.key)
        if due is not None:
            query = query.where(or_(deliveries.c.next_attempt_at.is_(None),
                                    deliveries.c.next_attempt_at <= due))
        for column, value in ((deliveries.c.channel, channel), (deliveries.c.edition, edition),
                              (deliveries.c.status, status), (deliveries.c.dry_run, dry_run)):
            if value is not None:
                query = query.where(column == value)
        with self.engine.connect() as conn:
            return [Row(**{c: getattr(r, c) for c in Row.__dataclass_fields__})
                    for r in conn.execute(query)]

    def counts(self, *, dry_run: bool = False) -> list[dict[str, object]]:
        """Per (edition, channel): counts by status, resends, the latest error and remote ids."""
        query = (select(deliveries.c.edition, deliveries.c.channel, deliveries.c.status,
                        func.count().label("n"), func.sum(deliveries.c.resends).label("resends"),
                        func.max(deliveries.c.updated_at).label("updated"))
                 .where(deliveries.c.dry_run == dry_run)
                 .group_by(deliveries.c.edition, deliveries.c.channel, deliveries.c.status))
        out: dict[tuple[str, str], dict[str, object]] = {}
        with self.engine.connect() as conn:
            for r in conn.execute(query):
                item = out.setdefault((r.edition, r.channel), {
                    "edition": r.edition, "channel": r.channel, "counts": {}, "resends": 0,
                    "errors": [], "remote": []})
                item["counts"][r.status] = r.n  # type: ignore[index]
                item["resends"] = int(item["resends"]) + int(r.resends or 0)  # type: ignore[call-overload]
            for (edition, channel), item in out.items():
                where = and_(deliveries.c.edition == edition, deliveries.c.channel == channel,
                             deliveries.c.dry_run == dry_run)
                errors = conn.execute(
                    select(deliveries.c.key, deliveries.c.status, deliveries.c.last_error)
                    .where(where, deliveries.c.last_error.is_not(None))
                    .order_by(deliveries.c.updated_at.desc()).limit(3))
                item["errors"] = [{"key": e.key, "status": e.status, "error": e.last_error}
                                  for e in errors]
                remote = conn.execute(
                    select(deliveries.c.key, deliveries.c.remote_id, deliveries.c.remote_url)
                    .where(where, deliveries.c.kind != "email", deliveries.c.status == Status.SENT)
                    .order_by(deliveries.c.key).limit(20))
                item["remote"] = [{"key": m.key, "id": m.remote_id, "url": m.remote_url}
                                  for m in remote]
        return sorted(out.values(), key=lambda i: (str(i["edition"]), str(i["channel"])))
