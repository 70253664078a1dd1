"""The list's life cycle in the store: statuses, consent, double opt-in, confirmation tokens, the
one rule per event kind (hard, soft within a window, policy, complaint, unsubscribe), topics,
the operator's suppression list, and a database made before these columns existed."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from pipeline.bounces import verp
from pipeline.bounces.classify import classify, enhanced_code
from pipeline.config import load_config
from pipeline.publish import publish
from pipeline.store import events, optin
from pipeline.store import subscribers as store
from pipeline.store.engine import engine_for
from pipeline.store.events import Event, EventKind
from pipeline.store.schema import subscribers as table
from tests.conftest import ledger_rows

pytestmark = pytest.mark.state_backends     # each test on SQLite and on PostgreSQL

NOW = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
SECRET = "s3cret-for-tests"


def _status(engine, address: str) -> str:
    found = store.find(engine, address=address)
    assert found is not None
    return found.status


def _event(address: str, kind: EventKind, n: int = 0, *, at: datetime = NOW) -> Event:
    return Event(event_id=f"test:{address}:{kind}:{n}", email=address, kind=kind, source="dsn",
                 edition="seed", detail="550 5.1.1 user unknown", at=at)


# -- sign-up and confirmation -------------------------------------------------------------------

def test_a_new_address_signs_up_pending_and_a_confirmation_is_due(engine):
    done = optin.sign_up(engine, "Ana@Example.com", name=" Ana ", tags=("news",), ip_hash="h1", now=NOW)
    assert done.send_confirmation
    sub = done.subscriber
    assert (sub.status, sub.name, sub.tags) == ("pending", "Ana", ("news",))
    assert done.subscriber.consent_at is None         # consent is the confirmation, not the form


def test_a_pending_address_gets_at_most_one_confirmation_per_window(engine):
    optin.sign_up(engine, "ana@example.com", now=NOW)
    assert not optin.sign_up(engine, "ana@example.com", now=NOW + timedelta(minutes=59)).send_confirmation
    assert optin.sign_up(engine, "ana@example.com", now=NOW + timedelta(minutes=61)).send_confirmation


def test_an_active_or_suppressed_address_is_left_alone_by_the_form(engine):
    store.upsert(engine, "ana@example.com", "Ana", ("vip",), source="cli")
    again = optin.sign_up(engine, "ana@example.com", name="Mallory", tags=("x",), now=NOW)
    assert not again.send_confirmation
    sub = again.subscriber
    assert (sub.name, sub.tags, sub.status) == ("Ana", ("vip",), "active")
    store.suppress(engine, "bob@example.com", reason="asked by phone")
    assert not optin.sign_up(engine, "bob@example.com", now=NOW).send_confirmation
    assert _status(engine, "bob@example.com") == "suppressed"


def test_confirming_records_consent_and_activates(engine):
    pending = optin.sign_up(engine, "ana@example.com", ip_hash=optin.ip_hash("203.0.113.9", SECRET),
                            now=NOW).subscriber
    done = optin.confirm(engine, pending.uid, now=NOW + timedelta(minutes=5))
    assert done is not None and done.status == "active"
    assert (done.consent_at, done.consent_source) == (NOW + timedelta(minutes=5), "form")
    with engine.connect() as conn:
        stored = conn.execute(select(table.c.consent_ip).where(table.c.uid == pending.uid)).scalar_one()
    assert stored == optin.ip_hash("203.0.113.9", SECRET) and "203.0.113.9" not in stored


def test_confirmation_tokens_expire_and_cannot_be_forged(engine):
    sub = optin.sign_up(engine, "ana@example.com", now=NOW).subscriber
    good = optin.confirm_token(sub.uid, sub.email, SECRET, expires=NOW + timedelta(days=7))
    assert optin.resolve_confirm_token(engine, good, SECRET, now=NOW)[0] == sub
    assert optin.resolve_confirm_token(engine, good, SECRET, now=NOW + timedelta(days=7))[1] == "expired"
    assert optin.resolve_confirm_token(engine, good, "another secret", now=NOW)[1] == "unknown"
    uid, _, mac = good.split(".")
    later = optin._base36(int((NOW + timedelta(days=70)).timestamp()))
    assert optin.resolve_confirm_token(engine, f"{uid}.{later}.{mac}", SECRET, now=NOW)[1] == "unknown"
    assert optin.resolve_confirm_token(engine, "../../etc", SECRET, now=NOW)[1] == "malformed"
    # The unsubscribe token of the same subscriber is not a confirmation token (and vice versa).
    unsubscribe_token = store.token(sub.uid, sub.email, SECRET)
    assert optin.resolve_confirm_token(engine, unsubscribe_token, SECRET)[1] == "malformed"
    assert store.resolve_token(engine, good, SECRET) is None


def test_manage_page_changes_only_topics_and_name(engine):
    store.upsert(engine, "ana@example.com", "Ana", ("vip", "news"), source="cli")
    sub = store.find(engine, address="ana@example.com")
    assert sub is not None
    after = optin.update_preferences(engine, sub.uid, name="Ana B", topics=("research", "bogus"),
                                     all_topics=("news", "research"))
    assert after is not None and (after.name, after.tags) == ("Ana B", ("vip", "research"))


def test_resubscribe_from_the_manage_page_only_lifts_an_unsubscribe(engine):
    for address in ("a@example.com", "b@example.com"):
        store.upsert(engine, address, source="cli")
    store.unsubscribe(engine, "a@example.com")
    events.record(engine, _event("b@example.com", EventKind.COMPLAINT))
    a, b = (store.find(engine, address=x) for x in ("a@example.com", "b@example.com"))
    assert a is not None and b is not None
    assert optin.resubscribe(engine, a.uid).status == "active"           # type: ignore[union-attr]
    assert optin.resubscribe(engine, b.uid).status == "complained"       # type: ignore[union-attr]


# -- events -------------------------------------------------------------------------------------

def test_a_hard_bounce_bounces_and_the_same_event_twice_counts_once(engine):
    store.upsert(engine, "gone@example.com", source="cli")
    first = events.record(engine, _event("gone@example.com", EventKind.HARD))
    assert first.status == "bounced" and not first.duplicate
    assert events.record(engine, _event("gone@example.com", EventKind.HARD)).duplicate
    assert events.counts(engine) == {"hard": 1}
    found = store.find(engine, address="gone@example.com")
    assert found is not None and found.status_reason and "5.1.1" in found.status_reason


def test_soft_bounces_bounce_at_the_limit_within_the_window_only(engine):
    store.upsert(engine, "full@example.com", source="cli")
    store.upsert(engine, "slow@example.com", source="cli")
    for n, days_ago in enumerate((29, 10)):
        assert events.record(engine, _event("full@example.com", EventKind.SOFT, n,
                                            at=NOW - timedelta(days=days_ago))).status is None
    assert events.record(engine, _event("full@example.com", EventKind.SOFT, 3, at=NOW)).status == "bounced"
    # Three as well, but the first is older than 30 days: two in the window.
    for n, days_ago in enumerate((45, 10, 0)):
        events.record(engine, _event("slow@example.com", EventKind.SOFT, n,
                                     at=NOW - timedelta(days=days_ago)))
    assert _status(engine, "slow@example.com") == "active"


def test_policy_keeps_the_address_complaint_and_unsubscribe_remove_it(engine):
    for address in ("p@example.com", "c@example.com", "u@example.com", "s@example.com"):
        store.upsert(engine, address, source="cli")
    store.suppress(engine, "s@example.com", reason="blocklist")
    events.record(engine, _event("p@example.com", EventKind.POLICY))
    events.record(engine, _event("c@example.com", EventKind.COMPLAINT))
    events.record(engine, _event("u@example.com", EventKind.UNSUBSCRIBE))
    events.record(engine, _event("s@example.com", EventKind.COMPLAINT))
    assert [_status(engine, f"{x}@example.com") for x in "pcus"] == \
        ["active", "complained", "unsubscribed", "suppressed"]
    assert not events.record(engine, _event("stranger@example.com", EventKind.HARD)).known


def test_reimport_never_reactivates_bounced_or_complained_without_resubscribe(engine, tmp_path: Path):
    for address in ("b@example.com", "c@example.com", "s@example.com"):
        store.upsert(engine, address, source="cli")
    events.record(engine, _event("b@example.com", EventKind.HARD))
    events.record(engine, _event("c@example.com", EventKind.COMPLAINT))
    store.suppress(engine, "s@example.com", reason="blocklist")
    csv = tmp_path / "list.csv"
    csv.write_text("email\nb@example.com\nc@example.com\ns@example.com\nnew@example.com\n", encoding="utf-8")
    result = store.import_csv(engine, csv)
    assert (result.added, result.kept_unsubscribed, result.kept_suppressed) == (1, 2, 1)
    assert [_status(engine, f"{x}@example.com") for x in "bcs"] == ["bounced", "complained", "suppressed"]
    again = store.import_csv(engine, csv, resubscribe=True)
    assert (again.resubscribed, again.kept_suppressed) == (2, 1)
    assert [_status(engine, f"{x}@example.com") for x in "bcs"] == ["active", "active", "suppressed"]
    found = store.find(engine, address="new@example.com")
    assert found is not None and found.consent_source == "import:list.csv" and found.consent_at


def test_an_import_activates_a_pending_address(engine, tmp_path: Path):
    optin.sign_up(engine, "p@example.com", now=NOW)
    csv = tmp_path / "list.csv"
    csv.write_text("email\np@example.com\n", encoding="utf-8")
    store.import_csv(engine, csv)
    assert _status(engine, "p@example.com") == "active"


# -- classification and VERP --------------------------------------------------------------------

@pytest.mark.parametrize(("status", "code", "kind"), [
    ("5.1.1", 550, EventKind.HARD), ("5.1.10", 550, EventKind.HARD), ("5.2.1", 550, EventKind.HARD),
    ("5.5.2", 501, EventKind.HARD), ("5.2.2", 552, EventKind.SOFT), ("5.4.4", 550, EventKind.SOFT),
    ("5.7.1", 550, EventKind.POLICY), ("4.2.2", 452, EventKind.SOFT), ("2.0.0", 250, None),
    (None, 550, EventKind.HARD), (None, 553, EventKind.HARD), (None, 554, EventKind.POLICY),
    (None, 552, EventKind.SOFT), (None, 421, EventKind.SOFT), (None, None, None),
])
def test_classify(status, code, kind):
    assert classify(status, code) == kind


def test_enhanced_code_is_read_from_a_reply():
    assert enhanced_code("550 5.1.1 <gone@example.com>: Recipient address rejected") == "5.1.1"
    assert enhanced_code("5.7.1 Message rejected as spam.") == "5.7.1"
    assert enhanced_code("550 Requested action not taken: mailbox unavailable") is None
    assert enhanced_code("version 1.2.3 of the server") is None


def test_verp_round_trip_and_foreign_addresses():
    uid = "0123456789abcdef0123456789abcdef"
    address = verp.envelope("bounces@news.example.com", uid, "my-post")
    assert address == f"bounces+{uid}.{verp.edition_tag('my-post')}@news.example.com"
    assert len(address.split("@")[0]) <= 64
    assert verp.decode(address.upper(), "bounces@news.example.com") == (uid, verp.edition_tag("my-post"))
    assert verp.decode(f"<{address}>", "bounces@news.example.com") is not None
    assert verp.decode(address, "bounces@other.example.com") is None
    assert verp.decode("bounces+junk@news.example.com", "bounces@news.example.com") is None


# -- topics -------------------------------------------------------------------------------------

def test_readers_who_chose_topics_get_only_editions_about_them(project: Path):
    """The newest post (the mood journal) is tagged `self-care`: readers of that topic get it,
    readers of clinic_news only do not, readers who chose no topic get everything."""
    path = project / "config.yaml"
    path.write_text(path.read_text(encoding="utf-8") + "\nsubscribe:\n  topics: [Self-care, clinic_news]\n",
                    encoding="utf-8")
    config = load_config(path)
    engine = engine_for(config)
    store.upsert(engine, "all@example.com", source="cli")                        # chose nothing
    store.upsert(engine, "vip@example.com", tags=("vip",), source="cli")          # not a topic
    store.upsert(engine, "care@example.com", tags=("Self-care", "clinic_news"), source="cli")
    store.upsert(engine, "news@example.com", tags=("clinic_news",), source="cli")
    store.upsert(engine, "wild@example.com", tags=("clinicXnews",), source="cli")   # `_` is no wildcard
    publish(config, channels=["outbox"], now=NOW)
    assert {r.edition for r in ledger_rows(config)} == {"mood-journal"}
    assert {r.recipient for r in ledger_rows(config) if r.kind == "email"} == \
        {"all@example.com", "vip@example.com", "care@example.com", "wild@example.com"}


# -- the CLI ------------------------------------------------------------------------------------

def test_suppress_show_and_unsuppress_from_the_cli(project: Path, run_cli, config):
    assert run_cli("subscribers", "add", "ana@example.com", cwd=project).returncode == 0
    done = run_cli("subscribers", "suppress", "ana@example.com", "nobody@example.com", "--reason",
                   "asked by phone", cwd=project)
    assert done.returncode == 0, done.stderr
    engine = engine_for(config)
    assert _status(engine, "nobody@example.com") == "suppressed"
    assert "kept suppressed" in run_cli("subscribers", "add", "ana@example.com", "--resubscribe",
                                        cwd=project).stdout
    listed = run_cli("subscribers", "list", "--status", "suppressed", "--json", cwd=project)
    assert {s["email"] for s in json.loads(listed.stdout)} == {"ana@example.com", "nobody@example.com"}
    assert "asked by phone" in run_cli("subscribers", "show", "ana@example.com", cwd=project).stdout
    lifted = run_cli("subscribers", "unsuppress", "ana@example.com", cwd=project)
    assert lifted.returncode == 0 and _status(engine, "ana@example.com") == "unsubscribed"
    again = run_cli("subscribers", "unsuppress", "ana@example.com", cwd=project)
    assert again.returncode == 1 and "not suppressed (unsubscribed)" in again.stderr
    assert "Traceback" not in again.stderr


def test_show_lists_the_events_newest_first(project: Path, run_cli, config):
    engine = engine_for(config)
    store.upsert(engine, "ana@example.com", source="cli")
    events.record(engine, _event("ana@example.com", EventKind.SOFT, 1, at=NOW - timedelta(days=2)))
    events.record(engine, _event("ana@example.com", EventKind.POLICY, 2, at=NOW))
    with engine.begin() as conn:
        conn.execute(update(table).values(name="Ana"))
    shown = run_cli("subscribers", "show", "ANA@example.com", cwd=project)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout
    assert lines.index("policy") < lines.index("soft") and "Ana" in lines
    missing = run_cli("subscribers", "show", "nobody@example.com", cwd=project)
    assert missing.returncode == 1 and "not a subscriber" in missing.stderr
