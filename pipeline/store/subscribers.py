"""The subscriber store: CSV import/export, add/remove, unsubscribe tokens.

Addresses are validated (syntax only, no DNS) and normalized with email-validator. An address is
unique case-insensitively. Someone who unsubscribed stays unsubscribed when re-imported, unless
the import says `resubscribe`. Sends stream subscribers from the database, never all at once.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO, Protocol, TextIO

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import Connection, Engine, bindparam, delete, insert, select, update

from pipeline.errors import PipelineError
from pipeline.intake.textfile import NotUtf8
from pipeline.store.dialect import insert_ignore
from pipeline.store.schema import secrets_table, subscribers


class SubscriberStatus(StrEnum):
    """Only `active` is ever mailed. `pending` waits for its confirmation (double opt-in);
    `bounced` and `complained` come back from the mail system; `suppressed` is the operator's
    own blocklist, which no import, form or link can lift."""

    PENDING = "pending"
    ACTIVE = "active"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    COMPLAINED = "complained"
    SUPPRESSED = "suppressed"


# Statuses a re-import (or `add`) leaves alone unless asked to resubscribe; `suppressed` stays.
KEPT_UNLESS_RESUBSCRIBE = frozenset({SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.BOUNCED,
                                     SubscriberStatus.COMPLAINED})


class SubscriberError(PipelineError):
    """A subscriber operation cannot be done (bad address, unknown address, bad file)."""


@dataclass(frozen=True, kw_only=True)
class Subscriber:
    email: str
    name: str | None
    tags: tuple[str, ...]
    status: str
    uid: str
    created_at: datetime
    unsubscribed_at: datetime | None = None
    consent_at: datetime | None = None
    consent_source: str | None = None
    status_reason: str | None = None


@dataclass(kw_only=True)
class ImportResult:
    """What an import did; `errors` are (line number, message) of rows that were not imported."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    kept_unsubscribed: int = 0      # unsubscribed, bounced or complained, and not --resubscribe
    kept_suppressed: int = 0
    resubscribed: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)


def normalize(address: str) -> str:
    """The normalized form of an address (domain lower-cased, IDNA-checked). Raises ValueError
    with email-validator's reason."""
    try:
        return validate_email(address.strip(), check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from None


def _now() -> datetime:
    return datetime.now(UTC)


def split_tags(raw: str | None) -> tuple[str, ...]:
    parts = (raw or "").replace(";", ",").replace("|", ",").split(",")
    return tuple(dict.fromkeys(t.strip() for t in parts if t.strip()))


def upsert(engine: Engine, address: str, name: str | None = None, tags: tuple[str, ...] = (), *,
           resubscribe: bool = False, source: str | None = None) -> str:
    """Add or update one subscriber; returns "added", "updated", "unchanged", "kept_unsubscribed"
    or "resubscribed". Raises ValueError for an invalid address."""
    email = normalize(address)
    with engine.begin() as conn:
        return _upsert(conn, email, name, split_tags(",".join(tags)), resubscribe=resubscribe,
                       source=source)


def _upsert(conn, email: str, name: str | None, tags: tuple[str, ...], *,  # type: ignore[no-untyped-def]
            resubscribe: bool, source: str | None) -> str:
    now = _now()
    name = (name or "").strip() or None
    # Insert first, then read: two processes adding the same address at once then wait for each
    # other in the database (a read first would let both see no row and one fail).
    if add_new(conn, new_row(email, name, tags, source=source, now=now)):
        return "added"
    row = conn.execute(select(subscribers).where(subscribers.c.email_key == email.lower())).one()
    outcome, changes = _changes(row, name, tags, resubscribe=resubscribe)
    if changes:
        conn.execute(update(subscribers).where(subscribers.c.id == row.id)
                     .values(**changes, updated_at=now))
    return outcome


def add_new(conn: Connection, values: dict[str, object]) -> bool:
    """Insert a subscriber unless its address is on the list already; whether it went in."""
    return bool(conn.execute(insert_ignore(conn.engine, subscribers).values(values)).rowcount)


def new_row(email: str, name: str | None, tags: tuple[str, ...], *, source: str | None,
             now: datetime) -> dict[str, object]:
    """The column values of a subscriber seen for the first time (`name` already stripped)."""
    return dict(uid=secrets.token_hex(16), email=email, email_key=email.lower(), name=name,
                tags=",".join(tags), status=SubscriberStatus.ACTIVE, source=source, created_at=now,
                updated_at=now, consent_at=now, consent_source=_consent(source))


def _consent(source: str | None) -> str:
    """How an operator-added address consented: `import:<file>`, else `cli`."""
    return f"import:{source}"[:200] if source and source != "cli" else "cli"


class _Stored(Protocol):
    """What `_changes` reads of a subscriber: a database row, or an import's pending state."""

    name: str | None
    tags: str
    status: str


def _changes(row: _Stored, name: str | None, tags: tuple[str, ...], *, resubscribe: bool
             ) -> tuple[str, dict[str, object]]:
    """The outcome of seeing a known address again, and the columns that then change (empty when
    nothing does). The one place this decision is made, for `upsert` and for batched imports."""
    changes: dict[str, object] = {}
    if name and name != row.name:
        changes["name"] = name
    merged = ",".join(dict.fromkeys([*split_tags(row.tags), *tags]))
    if merged != row.tags:
        changes["tags"] = merged
    outcome = "updated" if changes else "unchanged"
    if row.status == SubscriberStatus.SUPPRESSED:
        return "kept_suppressed", {}
    if row.status in KEPT_UNLESS_RESUBSCRIBE:
        if not resubscribe:
            return "kept_unsubscribed", {}
        changes.update(status=SubscriberStatus.ACTIVE, unsubscribed_at=None, status_reason=None)
        outcome = "resubscribed"
    elif row.status == SubscriberStatus.PENDING:
        # The operator vouches for the address (an import or `add` is their consent record).
        changes.update(status=SubscriberStatus.ACTIVE)
        outcome = "updated"
    return outcome, changes


# Rows validated before one round trip for the lot: one SELECT ... IN of their keys, one
# executemany INSERT, one executemany UPDATE per set of changed columns. 1,000 keys stay far below
# the limits on bound parameters (SQLite's 32,766, PostgreSQL's 65,535), and a batch's state is a
# few hundred kilobytes.
IMPORT_BATCH = 1000


@dataclass(slots=True)
class _Pending:
    """An address as the import currently sees it: as stored (id set) or to be inserted (id None),
    with the earlier rows of the batch applied, so that a repeated address behaves as if each row
    had been written before the next was read."""

    id: int | None
    name: str | None
    tags: str
    status: str


def _import_batch(conn: Connection, batch: list[tuple[str, str | None, tuple[str, ...]]],
                  result: ImportResult, *, resubscribe: bool, source: str | None) -> None:
    """Apply a batch of valid rows (normalized address, name cell, tags), counting the outcomes
    exactly as row-by-row upserts in file order would."""
    now = _now()
    c = subscribers.c
    keys = {email.lower() for email, _, _ in batch}
    seen: dict[str, _Pending] = {
        row.email_key: _Pending(id=row.id, name=row.name, tags=row.tags, status=row.status)
        for row in conn.execute(select(c.id, c.email_key, c.name, c.tags, c.status)
                                .where(c.email_key.in_(keys)))}
    inserts: dict[str, dict[str, object]] = {}      # by key, in order of first appearance (= ids)
    updates: dict[int, dict[str, object]] = {}      # by id: every column changed by the batch
    for email, raw_name, tags in batch:
        key = email.lower()
        name = (raw_name or "").strip() or None
        pending = seen.get(key)
        if pending is None:
            values = new_row(email, name, tags, source=source, now=now)
            inserts[key] = values
            seen[key] = _Pending(id=None, name=name, tags=str(values["tags"]),
                                 status=SubscriberStatus.ACTIVE)
            result.added += 1
            continue
        outcome, changes = _changes(pending, name, tags, resubscribe=resubscribe)
        setattr(result, outcome, getattr(result, outcome) + 1)
        if not changes:
            continue
        if "name" in changes:
            pending.name = name
        if "tags" in changes:
            pending.tags = str(changes["tags"])
        if "status" in changes:
            pending.status = SubscriberStatus.ACTIVE
        if pending.id is None:
            inserts[key].update(changes)            # a new row is active: only name and tags change
        else:
            updates.setdefault(pending.id, {}).update(changes)
    if inserts:
        conn.execute(insert(subscribers), list(inserts.values()))
    # An executemany needs the same SET clause for each row: group the rows by changed columns.
    groups: dict[tuple[str, ...], list[dict[str, object]]] = {}
    for row_id, changes in updates.items():
        groups.setdefault(tuple(sorted(changes)), []).append({**changes, "updated_at": now, "_id": row_id})
    for params in groups.values():
        conn.execute(update(subscribers).where(c.id == bindparam("_id")), params)


def _utf8_lines(binary: BinaryIO) -> Iterator[str]:
    """The file's lines, decoded one at a time (memory stays flat for any size), a leading
    byte-order mark dropped. Raises NotUtf8 with the same line and byte as `read_utf8`: lines
    split at b"\n", which is never part of a multi-byte sequence, so each line decodes (or
    fails at the same byte) as it would within the whole file."""
    for number, raw in enumerate(binary, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise NotUtf8(number, raw[exc.start]) from None
        yield line.removeprefix("\ufeff") if number == 1 else line


def import_csv(engine: Engine, path: Path, *, resubscribe: bool = False) -> ImportResult:
    """Import a CSV with an `email` column and optional `name` and `tags` columns. Bad rows are
    reported with their line numbers; the good ones are imported (in one transaction), a batch of
    rows at a time. The file is read as it is imported: a file that turns out not to be UTF-8
    imports nothing (the transaction is rolled back)."""
    try:
        binary = path.open("rb")
    except FileNotFoundError:
        raise SubscriberError(f"{path}: file not found") from None
    with binary:
        try:
            return _import_lines(engine, path, _utf8_lines(binary), resubscribe=resubscribe)
        except NotUtf8 as exc:
            raise SubscriberError(f"{path}: {exc}; save the CSV as UTF-8") from None


def _import_lines(engine: Engine, path: Path, lines: Iterator[str], *, resubscribe: bool) -> ImportResult:
    # csv.reader takes the lines one by one and joins those of a quoted multi-line field itself;
    # its line_num counts the lines taken, which gives the line where each row starts.
    reader = csv.reader(lines)
    header = next(reader, [])
    columns = {c.strip().lower(): i for i, c in enumerate(header)}
    if "email" not in columns:
        raise SubscriberError(f"{path}: line 1: no `email` column (columns: email, name, tags)")
    result = ImportResult()

    def cell(row: list[str], column: str) -> str | None:
        i = columns.get(column)
        return row[i] if i is not None and i < len(row) else None

    batch: list[tuple[str, str | None, tuple[str, ...]]] = []
    with engine.begin() as conn:
        while True:
            line = reader.line_num + 1          # where the next row starts (it may span lines)
            row = next(reader, None)
            if row is None:
                break
            if not any(field.strip() for field in row):
                continue
            address = (cell(row, "email") or "").strip()
            try:
                email = normalize(address)
            except ValueError as exc:
                shown = address.encode("unicode_escape").decode() if address else "(empty)"
                result.errors.append((line, f"{shown}: {exc}"))
                continue
            batch.append((email, cell(row, "name"), split_tags(cell(row, "tags"))))
            if len(batch) == IMPORT_BATCH:
                _import_batch(conn, batch, result, resubscribe=resubscribe, source=path.name)
                batch.clear()
        if batch:
            _import_batch(conn, batch, result, resubscribe=resubscribe, source=path.name)
    return result


def unsubscribe(engine: Engine, address: str, *, reason: str | None = None) -> bool:
    """Mark an address unsubscribed (kept, so that a re-import cannot resubscribe it). A
    bounced, complained or suppressed address keeps that status (it is not mailed either way)."""
    with engine.begin() as conn:
        done = conn.execute(
            update(subscribers).where(subscribers.c.email_key == normalize(address).lower(),
                                      subscribers.c.status.in_([SubscriberStatus.ACTIVE,
                                                                SubscriberStatus.PENDING]))
            .values(status=SubscriberStatus.UNSUBSCRIBED, unsubscribed_at=_now(), updated_at=_now(),
                    status_reason=reason))
        if done.rowcount:
            return True
        known = conn.execute(select(subscribers.c.id)
                             .where(subscribers.c.email_key == normalize(address).lower())).first()
    return known is not None


def set_status(engine: Engine, address: str, status: SubscriberStatus, *, reason: str | None = None
               ) -> bool:
    """Give an address a status outright (the operator's `suppress` / `unsuppress`). Returns
    False for an unknown address."""
    now = _now()
    values: dict[str, object] = dict(status=status, updated_at=now, status_reason=reason)
    if status != SubscriberStatus.ACTIVE:
        values["unsubscribed_at"] = now
    else:
        values["unsubscribed_at"] = None
    with engine.begin() as conn:
        done = conn.execute(update(subscribers)
                            .where(subscribers.c.email_key == normalize(address).lower()).values(**values))
    return done.rowcount > 0


def forget(engine: Engine, address: str) -> bool:
    """Delete an address entirely (erasure on request). It could then be imported again."""
    with engine.begin() as conn:
        done = conn.execute(delete(subscribers)
                            .where(subscribers.c.email_key == normalize(address).lower()))
    return done.rowcount > 0


def iter_subscribers(engine: Engine, *, status: str | None = None, page: int = 1000
                     ) -> Iterator[Subscriber]:
    """Subscribers in id order, fetched a page at a time (memory stays flat)."""
    last = 0
    while True:
        query = select(subscribers).where(subscribers.c.id > last).order_by(subscribers.c.id).limit(page)
        if status:
            query = query.where(subscribers.c.status == status)
        with engine.connect() as conn:
            rows = conn.execute(query).all()
        for row in rows:
            yield from_row(row)
        if len(rows) < page:
            return
        last = rows[-1].id


def export_csv(engine: Engine, out: TextIO, *, status: str | None = None) -> int:
    """Write subscribers as CSV (email, name, tags, status, subscribed_at); returns the count."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["email", "name", "tags", "status", "subscribed_at", "consent_at", "consent_source",
                     "status_reason"])
    count = 0
    for s in iter_subscribers(engine, status=status):
        writer.writerow([s.email, s.name or "", ",".join(s.tags), s.status,
                         s.created_at.isoformat(timespec="seconds"),
                         s.consent_at.isoformat(timespec="seconds") if s.consent_at else "",
                         s.consent_source or "", s.status_reason or ""])
        count += 1
    return count


def count(engine: Engine, status: str | None = None) -> int:
    from sqlalchemy import func

    query = select(func.count()).select_from(subscribers)
    if status:
        query = query.where(subscribers.c.status == status)
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


# -- unsubscribe tokens -------------------------------------------------------------------------

def state_secret(engine: Engine, name: str = "unsubscribe") -> str:
    """A random secret kept in the state database, created on first use: the fallback when
    `unsubscribe.secret` is not configured."""
    query = select(secrets_table.c.value).where(secrets_table.c.name == name)
    with engine.begin() as conn:
        row = conn.execute(query).first()
        if row:
            return str(row.value)
    # Two processes' first use at once (`serve` and a `publish`): one secret is kept, and both
    # return it.
    with engine.begin() as conn:
        conn.execute(insert_ignore(engine, secrets_table).values(name=name, value=secrets.token_urlsafe(32)))
        return str(conn.execute(query).scalar_one())


def token(uid: str, email: str, secret: str) -> str:
    """`<uid>.<HMAC-SHA256(secret, uid:address)>`: names no address, cannot be forged or
    reversed without the secret."""
    mac = hmac.new(secret.encode(), f"{uid}:{email.lower()}".encode(), hashlib.sha256).hexdigest()
    return f"{uid}.{mac[:40]}"


def resolve_token(engine: Engine, value: str, secret: str) -> Subscriber | None:
    """The subscriber a token belongs to, or None if it is malformed, unknown or forged."""
    uid, _, mac = value.partition(".")
    if len(uid) != 32 or len(mac) != 40 or not all(c in "0123456789abcdef" for c in uid + mac):
        return None
    with engine.connect() as conn:
        row = conn.execute(select(subscribers).where(subscribers.c.uid == uid)).first()
    if row is None or not hmac.compare_digest(token(row.uid, row.email, secret), value):
        return None
    return from_row(row)


def from_row(row) -> Subscriber:  # type: ignore[no-untyped-def]
    """A Subscriber from a row of the subscribers table."""
    return Subscriber(email=row.email, name=row.name, tags=split_tags(row.tags), status=row.status,
                      uid=row.uid, created_at=row.created_at, unsubscribed_at=row.unsubscribed_at,
                      consent_at=row.consent_at, consent_source=row.consent_source,
                      status_reason=row.status_reason)


def find(engine: Engine, *, address: str | None = None, uid: str | None = None) -> Subscriber | None:
    """The subscriber with this address (any case) or uid, or None."""
    c = subscribers.c
    where = c.uid == uid if uid is not None else c.email_key == normalize(address or "").lower()
    with engine.connect() as conn:
        row = conn.execute(select(subscribers).where(where)).first()
    return from_row(row) if row is not None else None


def suppress(engine: Engine, address: str, *, reason: str) -> None:
    """Put an address on the operator's blocklist, adding it when it is not on the list yet (a
    suppressed address is kept so that no import or form can add it later). Raises ValueError
    for an invalid address."""
    email = normalize(address)
    now = _now()
    with engine.begin() as conn:
        if not add_new(conn, {**new_row(email, None, (), source="cli", now=now),
                              "status": SubscriberStatus.SUPPRESSED, "status_reason": reason[:500],
                              "unsubscribed_at": now, "consent_at": None, "consent_source": None}):
            conn.execute(update(subscribers).where(subscribers.c.email_key == email.lower()).values(
                status=SubscriberStatus.SUPPRESSED, status_reason=reason[:500], unsubscribed_at=now,
                updated_at=now))
