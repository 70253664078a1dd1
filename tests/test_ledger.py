"""The delivery ledger on a real SQLite file: planning, the send cycle, recovery, reading."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from pipeline.models import Receipt, Status
from pipeline.store import subscribers as store
from pipeline.store.ledger import Ledger

pytestmark = pytest.mark.state_backends     # each test on SQLite and on PostgreSQL

PREFIX = "news:ed:"


def _social(ledger: Ledger, key: str = "k", *, channel: str = "c", edition: str = "ed",
            dry_run: bool = False) -> bool:
    return ledger.plan(key=key, channel=channel, edition=edition, kind="social", network="x",
                       dry_run=dry_run)


def _sent(ledger: Ledger, key: str, remote_id: str | None = None, url: str | None = None) -> None:
    assert ledger.begin(key)
    ledger.succeed(Receipt(key=key, remote_id=remote_id, url=url))


def _plan_emails(ledger: Ledger, *, dry_run: bool = False) -> int:
    return ledger.plan_recipients(channel="news", edition="ed", key_prefix=PREFIX, dry_run=dry_run)


def _pending_keys(ledger: Ledger, **kwargs) -> list[str]:
    return [key for key, _ in ledger.pending_recipients(channel="news", edition="ed", dry_run=False,
                                                        **kwargs)]


# -- plan --------------------------------------------------------------------------------------

def test_plan_inserts_a_pending_row_once(ledger):
    assert _social(ledger) is True
    assert _social(ledger) is False
    row = ledger.get("k")
    assert (row.status, row.attempts, row.resends, row.channel, row.edition, row.network) == \
        ("pending", 0, 0, "c", "ed", "x")
    assert len(ledger.rows()) == 1


def test_plan_again_does_not_reset_a_sent_row(ledger):
    _social(ledger)
    _sent(ledger, "k", "remote-1")
    assert _social(ledger) is False
    row = ledger.get("k")
    assert (row.status, row.remote_id, row.attempts) == ("sent", "remote-1", 1)


# -- begin / succeed / fail / release ---------------------------------------------------------

def test_begin_moves_pending_to_sending_and_counts_the_attempt(ledger):
    _social(ledger)
    assert ledger.begin("k") is True
    row = ledger.get("k")
    assert (row.status, row.attempts) == ("sending", 1)


def test_begin_refuses_a_key_that_is_sending(ledger):
    _social(ledger)
    assert ledger.begin("k") is True
    assert ledger.begin("k") is False
    assert ledger.get("k").attempts == 1


def test_begin_refuses_a_key_that_is_sent(ledger):
    _social(ledger)
    _sent(ledger, "k")
    assert ledger.begin("k") is False
    assert (ledger.get("k").status, ledger.get("k").attempts) == ("sent", 1)


def test_begin_refuses_a_key_that_failed(ledger):
    _social(ledger)
    ledger.begin("k")
    ledger.fail("k", "rejected")
    assert ledger.begin("k") is False
    assert ledger.get("k").status == "failed"


def test_begin_refuses_an_unplanned_key(ledger):
    assert ledger.begin("nope") is False
    assert ledger.get("nope") is None


def test_succeed_records_sent_remote_id_url_and_time(ledger):
    _social(ledger)
    before = datetime.now(UTC)
    _sent(ledger, "k", "post-42", "https://social.example/post-42")
    row = ledger.get("k")
    assert (row.status, row.remote_id, row.remote_url, row.last_error) == \
        ("sent", "post-42", "https://social.example/post-42", None)
    # SQLite hands the timestamp back without its (UTC) offset.
    sent_at = row.sent_at if row.sent_at.tzinfo else row.sent_at.replace(tzinfo=UTC)
    assert before - timedelta(seconds=1) <= sent_at <= datetime.now(UTC) + timedelta(seconds=1)


def test_fail_records_failed_with_the_error(ledger):
    _social(ledger)
    ledger.begin("k")
    ledger.fail("k", "550 mailbox unavailable")
    row = ledger.get("k")
    assert (row.status, row.last_error, row.sent_at) == ("failed", "550 mailbox unavailable", None)


def test_fail_can_record_unknown(ledger):
    _social(ledger)
    ledger.begin("k")
    ledger.fail("k", "timed out after the request", status=Status.UNKNOWN)
    row = ledger.get("k")
    assert (row.status, row.last_error) == ("unknown", "timed out after the request")


def test_release_puts_the_row_back_to_pending_until_a_time(ledger):
    _social(ledger)
    ledger.begin("k")
    until = datetime.now(UTC) + timedelta(hours=1)
    ledger.release("k", "429 slow down", until=until)
    row = ledger.get("k")
    assert (row.status, row.last_error, row.attempts) == ("pending", "429 slow down", 1)
    assert row.next_attempt_at.replace(tzinfo=UTC) == until
    assert ledger.begin("k") is True


def test_pending_recipients_skips_rows_deferred_to_the_future(engine, ledger):
    store.upsert(engine, "a@example.com")
    store.upsert(engine, "b@example.com")
    _plan_emails(ledger)
    ledger.begin(PREFIX + "a@example.com")
    until = datetime.now(UTC) + timedelta(hours=1)
    ledger.release(PREFIX + "a@example.com", "deferred", until=until)
    assert _pending_keys(ledger) == [PREFIX + "b@example.com"]
    assert _pending_keys(ledger, now=until + timedelta(seconds=1)) == \
        [PREFIX + "a@example.com", PREFIX + "b@example.com"]


def test_release_until_in_another_time_zone_still_defers(engine, ledger):
    store.upsert(engine, "a@example.com")
    _plan_emails(ledger)
    ledger.begin(PREFIX + "a@example.com")
    until = datetime.now(ZoneInfo("America/New_York")) + timedelta(hours=1)
    ledger.release(PREFIX + "a@example.com", "deferred", until=until)
    assert _pending_keys(ledger) == []


# -- recover / reset -------------------------------------------------------------------------

def test_recover_resend_puts_sending_rows_back_to_pending_and_counts_resends(ledger):
    _social(ledger, "a")
    _social(ledger, "b")
    _social(ledger, "done")
    ledger.begin("a")
    ledger.begin("b")
    _sent(ledger, "done")
    assert ledger.recover("c", rule="resend") == 2
    assert [(r.key, r.status, r.resends) for r in ledger.rows()] == \
        [("a", "pending", 1), ("b", "pending", 1), ("done", "sent", 0)]


def test_recover_unknown_marks_sending_rows_unknown(ledger):
    _social(ledger, "a")
    ledger.begin("a")
    assert ledger.recover("c", rule="unknown") == 1
    row = ledger.get("a")
    assert (row.status, row.resends) == ("unknown", 0)
    assert "interrupted" in row.last_error


def test_recover_only_touches_its_channel_and_dry_run_flag(ledger):
    _social(ledger, "mine")
    _social(ledger, "other", channel="other")
    _social(ledger, "dry", dry_run=True)
    for key in ("mine", "other", "dry"):
        ledger.begin(key)
    assert ledger.recover("c", rule="resend") == 1
    assert ledger.get("mine").status == "pending"
    assert ledger.get("other").status == "sending"
    assert ledger.get("dry").status == "sending"
    assert ledger.recover("c", rule="resend", dry_run=True) == 1
    assert (ledger.get("dry").status, ledger.get("other").status) == ("pending", "sending")


def test_reset_puts_failed_and_unknown_back_to_pending(ledger):
    for key in ("f", "u", "s"):
        _social(ledger, key)
        ledger.begin(key)
    ledger.fail("f", "rejected")
    ledger.fail("u", "maybe", status=Status.UNKNOWN)
    ledger.succeed(Receipt(key="s"))
    assert ledger.reset([Status.FAILED, Status.UNKNOWN]) == 2
    assert {r.key: r.status for r in ledger.rows()} == {"f": "pending", "u": "pending", "s": "sent"}


def test_reset_of_one_status_leaves_the_other(ledger):
    for key in ("f", "u"):
        _social(ledger, key)
        ledger.begin(key)
    ledger.fail("f", "rejected")
    ledger.fail("u", "maybe", status=Status.UNKNOWN)
    assert ledger.reset([Status.FAILED]) == 1
    assert {r.key: r.status for r in ledger.rows()} == {"f": "pending", "u": "unknown"}


def test_reset_can_be_limited_to_a_channel(ledger):
    _social(ledger, "a")
    _social(ledger, "b", channel="other")
    for key in ("a", "b"):
        ledger.begin(key)
        ledger.fail(key, "rejected")
    assert ledger.reset([Status.FAILED], channel="other") == 1
    assert (ledger.get("a").status, ledger.get("b").status) == ("failed", "pending")


# -- plan_recipients / pending_recipients -----------------------------------------------------

def test_plan_recipients_plans_one_row_per_active_subscriber(engine, ledger):
    store.upsert(engine, "Ada@Example.com", "Ada")
    store.upsert(engine, "bob@example.com")
    store.upsert(engine, "gone@example.com")
    store.unsubscribe(engine, "gone@example.com")
    assert _plan_emails(ledger) == 2
    rows = ledger.rows(channel="news")
    assert [(r.key, r.kind, r.recipient, r.status, r.edition) for r in rows] == [
        (PREFIX + "ada@example.com", "email", "ada@example.com", "pending", "ed"),
        (PREFIX + "bob@example.com", "email", "bob@example.com", "pending", "ed"),
    ]


def test_plan_recipients_twice_creates_no_duplicates(engine, ledger):
    store.upsert(engine, "a@example.com")
    store.upsert(engine, "b@example.com")
    assert _plan_emails(ledger) == 2
    _sent(ledger, PREFIX + "a@example.com")
    store.upsert(engine, "c@example.com")
    assert _plan_emails(ledger) == 1
    assert {r.key: r.status for r in ledger.rows()} == {
        PREFIX + "a@example.com": "sent", PREFIX + "b@example.com": "pending",
        PREFIX + "c@example.com": "pending"}


def test_pending_recipients_pages_through_all_in_key_order(engine, ledger):
    for address in ("e@example.com", "C@example.com", "a@example.com", "d@example.com", "b@example.com"):
        store.upsert(engine, address, address[0].upper())
    _plan_emails(ledger)
    got = list(ledger.pending_recipients(channel="news", edition="ed", dry_run=False, page=2))
    assert [key for key, _ in got] == [PREFIX + f"{c}@example.com" for c in "abcde"]
    assert [r.email for _, r in got] == ["a@example.com", "b@example.com", "C@example.com",
                                         "d@example.com", "e@example.com"]
    assert [r.name for _, r in got] == list("ABCDE")
    assert all(len(r.uid) == 32 for _, r in got)


def test_pending_recipients_skips_those_who_unsubscribed_after_planning(engine, ledger):
    store.upsert(engine, "a@example.com")
    store.upsert(engine, "b@example.com")
    _plan_emails(ledger)
    store.unsubscribe(engine, "a@example.com")
    assert _pending_keys(ledger) == [PREFIX + "b@example.com"]
    assert ledger.get(PREFIX + "a@example.com").status == "pending"


def test_pending_recipients_skips_rows_not_pending(engine, ledger):
    store.upsert(engine, "a@example.com")
    store.upsert(engine, "b@example.com")
    _plan_emails(ledger)
    _sent(ledger, PREFIX + "a@example.com")
    assert _pending_keys(ledger) == [PREFIX + "b@example.com"]


# -- dry run / counts ---------------------------------------------------------------------------

def test_dry_run_rows_are_separate_from_real_rows(engine, ledger):
    store.upsert(engine, "a@example.com")
    ledger.plan_recipients(channel="news", edition="ed", key_prefix="dry-run:" + PREFIX, dry_run=True)
    assert _pending_keys(ledger) == []
    assert ledger.rows() == []
    dry = ledger.rows(dry_run=True)
    assert [(r.key, r.dry_run) for r in dry] == [("dry-run:" + PREFIX + "a@example.com", True)]
    assert [k for k, _ in ledger.pending_recipients(channel="news", edition="ed", dry_run=True)] == \
        ["dry-run:" + PREFIX + "a@example.com"]
    assert ledger.counts() == []
    assert ledger.counts(dry_run=True)[0]["counts"] == {"pending": 1}
    assert ledger.pending_editions() == {}
    assert ledger.pending_editions(dry_run=True) == {"news": ["ed"]}


def test_an_editions_rows_are_a_key_range_in_byte_order_on_every_database(ledger):
    """On a server whose collation is a natural language's (the test server's is ICU en-US),
    "NEWS:ed:b" would sort between "news:ed:" and "news:ed:\U0010ffff" and count as `news`'s."""
    for channel, key in (("news", "news:ed:a"), ("NEWS", "NEWS:ed:b"), ("news", "news:ed:\u00e9")):
        assert ledger.plan(key=key, channel=channel, edition="ed", kind="social", network="x")
    _sent(ledger, "NEWS:ed:b", "1")
    assert ledger.edition_counts(channel="news", edition="ed") == {"pending": 2}
    assert ledger.last_sent(channel="news", edition="ed") is None
    assert ledger.edition_counts(channel="NEWS", edition="ed") == {"sent": 1}
    assert [r.key for r in ledger.rows()] == sorted(["news:ed:a", "NEWS:ed:b", "news:ed:\u00e9"])


def test_counts_group_by_edition_and_channel(engine, ledger):
    store.upsert(engine, "a@example.com")
    store.upsert(engine, "b@example.com")
    store.upsert(engine, "c@example.com")
    _plan_emails(ledger)
    _sent(ledger, PREFIX + "a@example.com", "<mid@example.com>")
    ledger.begin(PREFIX + "b@example.com")
    ledger.fail(PREFIX + "b@example.com", "550 no such user")
    _social(ledger, "social:ed:x", channel="social")
    _social(ledger, "social:ed:mastodon", channel="social")
    ledger.begin("social:ed:x")
    ledger.recover("social", rule="resend")
    _sent(ledger, "social:ed:x", "123", "https://x.example/123")
    _social(ledger, "social:old:x", channel="social", edition="old")

    counts = ledger.counts()
    assert [(c["edition"], c["channel"]) for c in counts] == \
        [("ed", "news"), ("ed", "social"), ("old", "social")]
    news, social, old = counts
    assert news["counts"] == {"sent": 1, "failed": 1, "pending": 1}
    assert news["resends"] == 0
    assert news["errors"] == [{"key": PREFIX + "b@example.com", "status": "failed",
                               "error": "550 no such user"}]
    assert news["remote"] == []          # email Message-IDs are not listed
    assert social["counts"] == {"sent": 1, "pending": 1}
    assert social["resends"] == 1
    assert social["errors"] == []
    assert social["remote"] == [{"key": "social:ed:x", "id": "123", "url": "https://x.example/123"}]
    assert old["counts"] == {"pending": 1}


def test_counts_list_the_latest_errors_first(ledger):
    for key in ("a", "b", "c", "d"):
        _social(ledger, key)
        ledger.begin(key)
        ledger.fail(key, f"error {key}")
    errors = ledger.counts()[0]["errors"]
    assert [e["error"] for e in errors] == ["error d", "error c", "error b"]


def test_planning_many_rows_on_postgresql_refreshes_the_statistics(ledger, engine):
    from sqlalchemy import insert, text

    from pipeline.store.ledger import ANALYZE_AFTER
    from pipeline.store.schema import subscribers
    from pipeline.store.subscribers import new_row

    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(insert(subscribers), [new_row(f"r{i:05d}@example.com", None, (), source="test", now=now)
                                           for i in range(ANALYZE_AFTER)])
    planned = ledger.plan_recipients(channel="newsletter", edition="big", key_prefix="newsletter:big:",
                                     dry_run=False)
    assert planned == ANALYZE_AFTER
    if engine.dialect.name == "postgresql":     # the test cluster runs no autovacuum: only we analyzed it
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT reltuples FROM pg_class WHERE relname = 'deliveries'")).scalar()
        assert rows == ANALYZE_AFTER
