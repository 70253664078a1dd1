"""The ledger: one row per delivery key, the only thing that decides whether something is sent.

Intent (`sending`) is committed before a send and the result after it, so a crash leaves at most
the sends that were in flight in `sending`; the next run resolves them by the channel's rule
(resend with the same identity, or mark `unknown`). A key that is `sent` is never sent again.
`batch` puts several of those writes in one commit (a publisher records the answers that came
back and claims the next rows at once); each is still committed before the send it allows.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import itemgetter

from sqlalchemy import (
    Connection,
    Engine,
    Integer,
    and_,
    bindparam,
    false,
    func,
    insert,
    literal,
    not_,
    or_,
    select,
    text,
    update,
)

from pipeline.models import Receipt, Recipient, Status
from pipeline.plan import key_prefix
from pipeline.store.dialect import utc_now
from pipeline.store.engine import state_error
from pipeline.store.schema import deliveries, subscribers
from pipeline.store.subscribers import SubscriberStatus


def _has_any(tags: tuple[str, ...]):  # type: ignore[no-untyped-def]
    """SQL: the subscriber's comma-separated tags include one of `tags` (false for none)."""
    padded = literal(",") + subscribers.c.tags + literal(",")
    return or_(false(), *(padded.contains(f",{tag},", autoescape=True) for tag in tags))


def _now() -> datetime:
    return datetime.now(UTC)


ANALYZE_AFTER = 1000    # rows planned at once on PostgreSQL: refresh the table's statistics


# The two statements of every send. They are compiled once for the database's dialect and run on
# the driver's own cursor: SQLAlchemy's per-call work was most of a send's CPU, and a publisher
# sends thousands of messages a second. Timestamps come from the database (`utc_now`), so
# only strings are bound and no type conversion is needed.
_BEGIN = (update(deliveries)
          .where(deliveries.c.key == bindparam("k"), deliveries.c.status == Status.PENDING.value)
          .values(status=Status.SENDING.value, attempts=deliveries.c.attempts + 1,
                  updated_at=utc_now(), next_attempt_at=None))
_SUCCEED = (update(deliveries).where(deliveries.c.key == bindparam("k"))
            .values(status=Status.SENT.value, sent_at=utc_now(), updated_at=utc_now(),
                    last_error=None, remote_id=bindparam("rid"), remote_url=bindparam("url")))


class _Prepared:
    """A statement compiled once; `args(values)` gives the driver's parameters in its style."""

    def __init__(self, statement, dialect) -> None:  # type: ignore[no-untyped-def]
        compiled = statement.compile(dialect=dialect)
        self.sql = compiled.string
        self.defaults = {k: (v.value if isinstance(v, Status) else v) for k, v in compiled.params.items()}
        self.order = compiled.positiontup
        # Positional: the defaults in place, and where each value goes (a name may recur).
        self._row = [self.defaults.get(name) for name in self.order or ()]
        self._at = {name: [i for i, n in enumerate(self.order or ()) if n == name] for name in self.defaults}

    def many(self, names: tuple[str, ...], rows: list[tuple[object, ...]]) -> list:  # type: ignore[type-arg]
        """The driver's parameters for each of `rows`, the values of `names` in that order."""
        if not self.order:
            return [{**self.defaults, **dict(zip(names, row, strict=True))} for row in rows]
        # Each row extended by the defaults, and its values picked in the statement's order.
        extended = [*names, *self.defaults]
        consts = tuple(self.defaults.values())
        pick = itemgetter(*(extended.index(name) for name in self.order))
        return [pick(row + consts) for row in rows]

    def args(self, values: dict[str, object]):  # type: ignore[no-untyped-def]
        if not self.order:
            return {**self.defaults, **values}
        row = self._row.copy()
        for name, value in values.items():
            for i in self._at[name]:
                row[i] = value
        return tuple(row)


class _BeginAll:
    """`_BEGIN` for several keys in one statement that returns the keys it took (UPDATE ...
    RETURNING): a publisher claims a batch of rows in one call, not one per row. Compiled once
    per power of two of keys (a list is padded with its first key: a key twice in IN is taken
    once), so a few statements serve every batch size."""

    def __init__(self, dialect) -> None:  # type: ignore[no-untyped-def]
        self.dialect = dialect
        self.supported = bool(getattr(dialect, "update_returning", False))
        self._by_size: dict[int, _Prepared] = {}

    def run(self, cursor, keys: list[str]) -> set[str]:  # type: ignore[no-untyped-def]
        size = 1 << (len(keys) - 1).bit_length()
        if size not in self._by_size:
            statement = (update(deliveries)
                         .where(deliveries.c.key.in_([bindparam(f"k{i}") for i in range(size)]),
                                deliveries.c.status == Status.PENDING.value)
                         .values(status=Status.SENDING.value, attempts=deliveries.c.attempts + 1,
                                 updated_at=utc_now(), next_attempt_at=None)
                         .returning(deliveries.c.key))
            self._by_size[size] = _Prepared(statement, self.dialect)
        prepared = self._by_size[size]
        padded = keys + keys[:1] * (size - len(keys))
        cursor.execute(prepared.sql, prepared.args({f"k{i}": key for i, key in enumerate(padded)}))
        return {row[0] for row in cursor.fetchall()}


def _pending_query(*, bounded: bool):  # type: ignore[no-untyped-def]
    """`Ledger.pending_rows`' page: keys above `last` and below `end` (at most `end`: `bounded`)."""
    d, s = deliveries.c, subscribers.c
    return (select(d.key, s.email, s.name, s.uid)
            .select_from(deliveries.join(subscribers, s.email_key == d.recipient))
            .where(d.channel == bindparam("channel"), d.edition == bindparam("edition"),
                   d.dry_run == bindparam("dry_run"), d.status == Status.PENDING.value,
                   d.key > bindparam("last"),
                   d.key <= bindparam("end") if bounded else d.key < bindparam("end"),
                   s.status == SubscriberStatus.ACTIVE.value,
                   or_(d.next_attempt_at.is_(None), d.next_attempt_at <= bindparam("now")))
            .order_by(d.key).limit(bindparam("page", type_=Integer)))


class _Select:
    """A SELECT compiled once and run on the driver's cursor, its rows the driver's tuples (it
    selects only strings, which need no conversion). Its parameters go through their column
    types' bind processors (a timestamp as SQLite stores it), once per call, not per row."""

    def __init__(self, statement, dialect) -> None:  # type: ignore[no-untyped-def]
        compiled = statement.compile(dialect=dialect)
        self.sql = compiled.string
        self.order = compiled.positiontup
        self.defaults = dict(compiled.params)
        self.process = {name: bind.type.bind_processor(dialect) for name, bind in compiled.binds.items()}

    def fetch(self, engine: Engine, conn: Connection, values: Mapping[str, object]) -> list[tuple]:  # type: ignore[type-arg]
        params: dict[str, object] = {}
        for name, value in {**self.defaults, **values}.items():
            process = self.process.get(name)
            params[name] = process(value) if process else value
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(self.sql, tuple(params[n] for n in self.order) if self.order else params)
            return cursor.fetchall()
        except Exception as exc:
            # The driver's own errors bypass SQLAlchemy's translation.
            error = state_error(engine, exc)
            if error is None:
                raise
            raise error from None
        finally:
            cursor.close()


class LedgerBatch:
    """The writes of one `Ledger.batch` transaction, on the driver's cursor: nothing is
    committed until the batch ends."""

    def __init__(self, cursor, begin: _Prepared, succeed: _Prepared,  # type: ignore[no-untyped-def]
                 begin_all: _BeginAll | None = None) -> None:
        self._cursor, self._begin, self._succeed, self._begin_all = cursor, begin, succeed, begin_all

    def begin(self, key: str) -> bool:
        """As `Ledger.begin`: `pending` -> `sending`; False if the key is not pending."""
        self._cursor.execute(self._begin.sql, self._begin.args({"k": key}))
        return self._cursor.rowcount == 1

    def begin_all(self, keys: list[str]) -> set[str]:
        """`begin` for each of `keys`, in one statement where the database can say which rows
        an UPDATE took: the keys now `sending`."""
        if not keys:
            return set()
        if self._begin_all is None or not self._begin_all.supported:
            return {key for key in keys if self.begin(key)}
        return self._begin_all.run(self._cursor, keys)

    def succeed(self, receipts: Iterable[Receipt]) -> None:
        """As `Ledger.succeed`, for each receipt."""
        self.succeed_rows([(r.key, r.remote_id, r.url) for r in receipts])

    def succeed_rows(self, sent: list[tuple[str, str | None, str | None]]) -> None:
        """`succeed` from (key, remote id, url) tuples: a publisher records thousands a second."""
        if sent:
            self._cursor.executemany(self._succeed.sql, self._succeed.many(("k", "rid", "url"), sent))


@dataclass(frozen=True, kw_only=True)
class Evidence:
    """What a send journal (`channels/smtp_journal.py`) says about rows a crash left `sending`:
    keys the server took (with their Message-ID), keys on the wire when the run ended (they may
    have arrived), keys that surely never did. A key it does not name is treated as on the wire."""

    delivered: Mapping[str, str | None]
    on_wire: frozenset[str]
    never_sent: frozenset[str]


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
        self._begin_all = _BeginAll(engine.dialect)
        self._pending = (_Select(_pending_query(bounded=False), engine.dialect),
                         _Select(_pending_query(bounded=True), engine.dialect))

    def _fast(self, prepared: _Prepared, values: dict[str, object]) -> int:
        """Run a prepared statement on the write connection's driver cursor and commit."""
        with self.batch() as batch:
            batch._cursor.execute(prepared.sql, prepared.args(values))
            return batch._cursor.rowcount

    @contextmanager
    def batch(self) -> Iterator[LedgerBatch]:
        """One transaction for several `begin`/`succeed` writes, committed when the block ends
        (rolled back if it raises). The caller sends nothing the batch claims before it ends:
        the claim must be committed first."""
        with self._lock:
            if self._conn.in_transaction():
                self._conn.commit()
            driver = self._conn.connection.driver_connection
            try:
                cursor = driver.cursor()
                try:
                    yield LedgerBatch(cursor, self._begin, self._succeed, self._begin_all)
                finally:
                    cursor.close()
                driver.commit()
            except BaseException as exc:
                with suppress(Exception):       # the error that matters is the one in hand
                    driver.rollback()
                # The driver's own errors bypass SQLAlchemy's translation.
                error = state_error(self.engine, exc) if isinstance(exc, Exception) else None
                if error is None:
                    raise
                raise error from None

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
                        topics: tuple[str, ...] = (), about: tuple[str, ...] = (),
                        after: str | None = None, upto: str | None = None) -> int:
        """One `pending` row per active subscriber without a row yet, in one statement (no
        subscriber is loaded into memory). Keys are `key_prefix + address`.

        `topics` are the topics readers may choose (`subscribe.topics`) and `about` those of
        them the edition is about: a reader who chose topics gets the edition only if it is about
        one of them; a reader who chose none gets everything. `after` and `upto`: only the
        subscribers whose `email_key` is above `after` and at most `upto` (a chunk)."""
        now = _now()
        source = select(
            (literal(key_prefix) + subscribers.c.email_key).label("key"), literal(channel),
            literal(edition), literal("email"), subscribers.c.email_key, literal(0),
            literal(dry_run), literal(Status.PENDING.value), literal(0), literal(0), literal(now),
            literal(now),
        ).where(subscribers.c.status == SubscriberStatus.ACTIVE)
        if after is not None:
            source = source.where(subscribers.c.email_key > after)
        if upto is not None:
            source = source.where(subscribers.c.email_key <= upto)
        if topics:
            source = source.where(or_(not_(_has_any(topics)), _has_any(about)))
        cols = ["key", "channel", "edition", "kind", "recipient", "part", "dry_run", "status",
                "attempts", "resends", "created_at", "updated_at"]
        planned = self._write(self._insert_ignore().from_select(cols, source))
        if planned >= ANALYZE_AFTER and self.engine.dialect.name == "postgresql":
            # Until autovacuum gets to them, PostgreSQL plans the reads of new rows blind: reading
            # 20k just planned took 1.7 s, against 0.2 s after an ANALYZE of 0.1 s.
            self._write(text("ANALYZE deliveries"))
        return planned

    def planning(self, *, channel: str, edition: str, key_prefix: str, dry_run: bool,
                 topics: tuple[str, ...] = (), about: tuple[str, ...] = (),
                 planned: Callable[[int], None] = lambda count: None,
                 ) -> Iterator[tuple[str, str, str | None, str]]:
        """`plan_recipients`, then `pending_rows`, overlapped: the rows are planned a chunk
        at a time on a thread of their own, and each chunk's pending rows are read once its
        commit is done, so that the first messages go out while the rest are planned.
        `planned(count)` is told each chunk's new rows. Only rows that exist are read (and so
        claimed and sent); a run killed half-way leaves planned rows, which the next one's
        planning skips and its reading sends."""
        plan = _ChunkedPlan(self, dict(channel=channel, edition=edition, key_prefix=key_prefix,
                                       dry_run=dry_run, topics=topics, about=about), planned)
        return plan.recipients(channel=channel, edition=edition, dry_run=dry_run, key_prefix=key_prefix)

    def _chunk_end(self, after: str | None, size: int) -> str | None:
        """The `email_key` of the `size`-th active subscriber after `after`, in the byte order of
        the edition's keys (None: fewer are left, or the database orders them otherwise)."""
        if self.engine.dialect.name != "sqlite":
            # Only SQLite's index on email_key is in the keys' byte order (PostgreSQL's follows
            # the server's collation): elsewhere the edition is planned in one chunk.
            return None
        query = (select(subscribers.c.email_key).where(subscribers.c.status == SubscriberStatus.ACTIVE)
                 .order_by(subscribers.c.email_key).offset(size - 1).limit(1))
        if after is not None:
            query = query.where(subscribers.c.email_key > after)
        with self.engine.connect() as conn:
            return conn.execute(query).scalar()

    def _insert_ignore(self):  # type: ignore[no-untyped-def]
        # Each dialect's module is imported when used: PostgreSQL's costs every run 40 ms.
        # `preserve_rowcount`: without it SQLAlchemy reports no row count for an INSERT on
        # PostgreSQL (-1), and `plan` counts what was new by it.
        if self.engine.dialect.name == "postgresql":
            from sqlalchemy.dialects import postgresql

            statement = postgresql.insert(deliveries).on_conflict_do_nothing()
        elif self.engine.dialect.name == "sqlite":
            from sqlalchemy.dialects import sqlite

            statement = sqlite.insert(deliveries).on_conflict_do_nothing()
        else:
            statement = insert(deliveries).prefix_with("IGNORE")
        return statement.execution_options(preserve_rowcount=True)

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

    def checkpoint(self, key: str, remote_id: str) -> bool:
        """Keep the remote id of a send's first step on its `sending` row, committed before the
        next step (a Threads container before it is published): the row keeps it through
        `unknown`, `failed` and `retry`, so a later attempt asks the network what became of it
        instead of starting over. False if the row is not `sending` (then go no further)."""
        return self._write(update(deliveries)
                           .where(deliveries.c.key == key, deliveries.c.status == Status.SENDING)
                           .values(remote_id=remote_id, updated_at=_now())) == 1

    def recover(self, channel: str, *, rule: str, dry_run: bool = False,
                evidence: Evidence | None = None) -> int:
        """Resolve rows a crash left `sending` on `channel`: "resend" puts them back to pending
        (counted in `resends`), "unknown" marks them unknown. Returns how many. With `evidence`
        (a send journal's, rule "resend"), a row the server took is marked sent and a row that
        never left goes back to pending uncounted; the others are resent as without it."""
        where = and_(deliveries.c.channel == channel, deliveries.c.status == Status.SENDING,
                     deliveries.c.dry_run == dry_run)
        if rule == "resend" and evidence is not None:
            return self._recover_with(where, evidence)
        if rule == "resend":
            values = dict(status=Status.PENDING, resends=deliveries.c.resends + 1)
        else:
            values = dict(status=Status.UNKNOWN,
                          last_error="interrupted while sending; the outcome is unknown")
        return self._write(update(deliveries).where(where).values(**values, updated_at=_now()))

    def _recover_with(self, where, evidence: Evidence) -> int:  # type: ignore[no-untyped-def]
        now = _now()
        key = deliveries.c.key
        with self._lock:
            try:
                keys = [row.key for row in self._conn.execute(select(key).where(where))]
                took, never = evidence.delivered, evidence.never_sent
                sent = [{"k": k, "rid": took[k]} for k in keys if k in took]
                back = [{"k": k} for k in keys if k in never and k not in took]
                again = [{"k": k} for k in keys if k not in took and k not in never]
                one = and_(where, key == bindparam("k"))
                if sent:
                    self._conn.execute(update(deliveries).where(one).values(
                        status=Status.SENT, sent_at=now, updated_at=now, last_error=None,
                        remote_id=bindparam("rid")), sent)
                if back:
                    self._conn.execute(update(deliveries).where(one).values(
                        status=Status.PENDING, updated_at=now), back)
                if again:
                    self._conn.execute(update(deliveries).where(one).values(
                        status=Status.PENDING, resends=deliveries.c.resends + 1, updated_at=now), again)
                self._conn.commit()
            except BaseException:
                self._conn.rollback()
                raise
        return len(again)

    def reset(self, statuses: list[Status], *, channel: str | None = None, dry_run: bool = False) -> int:
        """`pipeline retry`: put failed/unknown rows back to pending."""
        where = and_(deliveries.c.status.in_(statuses), deliveries.c.dry_run == dry_run)
        if channel:
            where = and_(where, deliveries.c.channel == channel)
        return self._write(update(deliveries).where(where).values(
            status=Status.PENDING, next_attempt_at=None, updated_at=_now()))

    # -- reading ---------------------------------------------------------------------------

    def pending_recipients(self, *, channel: str, edition: str, dry_run: bool, page: int = 500,
                           now: datetime | None = None, after: str | None = None,
                           upto: str | None = None) -> Iterator[tuple[str, Recipient]]:
        """(key, recipient) of due pending email rows whose subscriber is still active, in key
        order, a page at a time; only keys above `after` and at most `upto`, when given."""
        for key, email, name, uid in self.pending_rows(channel=channel, edition=edition, dry_run=dry_run,
                                                       page=page, now=now, after=after, upto=upto):
            yield key, Recipient(email=email, name=name, uid=uid)

    def pending_rows(self, *, channel: str, edition: str, dry_run: bool, page: int = 500,
                     now: datetime | None = None, after: str | None = None,
                     upto: str | None = None) -> Iterator[tuple[str, str, str | None, str]]:
        """`pending_recipients` as the driver's rows, (key, email, name, uid): what a publisher
        reads 100,000s of, without a Row or a Recipient per row."""
        prefix = key_prefix(channel, edition, dry_run=dry_run)
        values: dict[str, object] = {
            "channel": channel, "edition": edition, "dry_run": dry_run, "now": now or _now(),
            "last": after or prefix, "page": page,
            "end": prefix + "\U0010ffff" if upto is None else upto}     # the edition's keys
        query = self._pending[upto is not None]
        while True:
            with self.engine.connect() as conn:
                rows = query.fetch(self.engine, conn, values)
            yield from rows
            if len(rows) < page:
                return
            values["last"] = rows[-1][0]

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

    def counts(self, *, dry_run: bool = False, latest_errors: int = 3,
               remote_ids: int = 20) -> list[dict[str, object]]:
        """Per (edition, channel), in that order: counts by status (in status order), resends,
        the `latest_errors` latest errors (newest first; equal times in key order) and the first
        `remote_ids` remote ids of sent social posts and articles (in key order).

        Three statements whatever the number of editions: one grouped pass for the counts, and
        one pass each for the errors and the remote ids, whose rows are numbered within their
        group and cut at the limit. A query per group would read the whole table once per group:
        the table has no index on (edition, channel), on purpose (see schema.py)."""
        d = deliveries.c
        grouped = (select(d.edition, d.channel, d.status, func.count().label("n"),
                          func.sum(d.resends).label("resends"))
                   .where(d.dry_run == dry_run)
                   .group_by(d.edition, d.channel, d.status).order_by(d.edition, d.channel, d.status))
        errors = _first_per_group(and_(d.dry_run == dry_run, d.last_error.is_not(None)),
                                  (d.updated_at.desc(), d.key), latest_errors,
                                  d.key, d.status, d.last_error)
        remote = _first_per_group(and_(d.dry_run == dry_run, d.kind != "email", d.status == Status.SENT),
                                  (d.key,), remote_ids, d.key, d.remote_id, d.remote_url)
        counts: dict[tuple[str, str], dict[str, int]] = {}
        resends: dict[tuple[str, str], int] = {}
        listed: dict[tuple[str, str], dict[str, list[dict[str, str | None]]]] = {}
        with self.engine.connect() as conn:
            for r in conn.execute(grouped):
                counts.setdefault((r.edition, r.channel), {})[r.status] = r.n
                resends[(r.edition, r.channel)] = resends.get((r.edition, r.channel), 0) + int(r.resends or 0)
            for e in conn.execute(errors):
                listed.setdefault((e.edition, e.channel), {}).setdefault("errors", []).append(
                    {"key": e.key, "status": e.status, "error": e.last_error})
            for m in conn.execute(remote):
                listed.setdefault((m.edition, m.channel), {}).setdefault("remote", []).append(
                    {"key": m.key, "id": m.remote_id, "url": m.remote_url})
        # A group first written between the statements has errors or remote ids but no counts:
        # it is left for the next report, as if it had come a moment later.
        return [{"edition": edition, "channel": channel, "counts": n, "resends": resends[(edition, channel)],
                 "errors": listed.get((edition, channel), {}).get("errors", []),
                 "remote": listed.get((edition, channel), {}).get("remote", [])}
                for (edition, channel), n in sorted(counts.items())]


def _first_per_group(where, order, limit: int, *columns):  # type: ignore[no-untyped-def]
    """SELECT edition, channel, `columns` of the rows matching `where`, only the first `limit` of
    each (edition, channel) in `order`: one pass over the table, whatever the number of groups."""
    d = deliveries.c
    ranked = (select(d.edition, d.channel, *columns,
                     func.row_number().over(partition_by=(d.edition, d.channel), order_by=order)
                     .label("rank"))
              .where(where).subquery())
    return (select(ranked).where(ranked.c.rank <= limit)
            .order_by(ranked.c.edition, ranked.c.channel, ranked.c.rank))


@dataclass(frozen=True, kw_only=True)
class EditionTally:
    """One edition on one channel as the ledger has it: rows per status, and when the latest
    was sent (None: nothing sent)."""

    counts: dict[str, int]
    last_sent: datetime | None


def edition_tally(engine: Engine, *, channel: str, edition: str, dry_run: bool = False) -> EditionTally:
    """`Ledger.edition_counts` and `Ledger.last_sent` in one pass over the edition's key range."""
    start = key_prefix(channel, edition, dry_run=dry_run)
    query = (select(deliveries.c.status, func.count().label("n"),
                    func.max(deliveries.c.sent_at).label("sent"))
             .where(deliveries.c.key > start, deliveries.c.key < start + "\U0010ffff")
             .group_by(deliveries.c.status))
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return EditionTally(counts={r.status: r.n for r in rows},
                        last_sent=max((r.sent for r in rows if r.sent is not None), default=None))


# Subscribers planned per chunk: the first chunk small, so that sending starts at once, then
# doubling up to `CHUNK`, small enough that a claim waiting for a chunk's commit finds the
# workers still busy with what they were given.
FIRST_CHUNK, CHUNK = 250, 2000


class _ChunkedPlan:
    """An edition's recipient rows planned chunk by chunk (`Ledger.planning`) on a thread, and
    read back behind it. A chunk is the active subscribers up to some `email_key`; its rows are
    read once it is committed, as the key range up to `key_prefix + that email_key`."""

    def __init__(self, ledger: Ledger, plan: dict[str, object],
                 planned: Callable[[int], None]) -> None:
        self.ledger, self.plan, self.planned = ledger, plan, planned
        self.changed = threading.Condition()
        self.reached: str | None = None     # the email_key every committed chunk is at most
        self.done = False                   # every chunk committed (or planning failed)
        self.error: BaseException | None = None
        self.cancelled = False

    def _run(self) -> None:
        after, size = None, FIRST_CHUNK
        try:
            while not self.cancelled:
                upto = self.ledger._chunk_end(after, size)
                self.planned(self.ledger.plan_recipients(**self.plan, after=after, upto=upto))  # type: ignore[arg-type]
                with self.changed:
                    self.reached, self.done = upto, upto is None
                    self.changed.notify_all()
                if upto is None:
                    return
                after, size = upto, min(size * 2, CHUNK)
        except BaseException as exc:
            with self.changed:
                self.error, self.done = exc, True
                self.changed.notify_all()

    def recipients(self, *, channel: str, edition: str, dry_run: bool,
                   key_prefix: str) -> Iterator[tuple[str, str, str | None, str]]:
        """The pending rows (`Ledger.pending_rows`), chunk by chunk as they are committed, in key order."""
        thread = threading.Thread(target=self._run, name=f"plan-{channel}", daemon=True)
        thread.start()
        read: str | None = None                 # the email_key the rows read so far are at most
        try:
            while True:
                with self.changed:
                    self.changed.wait_for(lambda seen=read: self.done or self.reached != seen)
                    if self.error is not None:
                        raise self.error
                    upto, last = self.reached, self.done
                yield from self.ledger.pending_rows(
                    channel=channel, edition=edition, dry_run=dry_run,
                    after=None if read is None else key_prefix + read,
                    upto=None if last else key_prefix + upto)  # type: ignore[operator]
                if last:
                    return
                read = upto
        finally:
            self.cancelled = True
            thread.join()
