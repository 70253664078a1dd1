"""Bounces during the send (#14): the SMTP server's reply to one recipient decides. Real aiosmtpd
server refusing chosen recipients with chosen codes, real SQLite state, `pipeline publish`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipeline.config import Config
from pipeline.models import Status
from pipeline.publish import ChannelReport, publish, retry
from pipeline.store import events
from pipeline.store import subscribers as store
from pipeline.store.engine import engine_for
from tests.conftest import SEED_SLUG, add_channel, ledger_rows
from tests.smtp_sink import Sink

POSTS = [SEED_SLUG, "2024-03-12-your-first-infusion", "mood-journal"]
PROCESSES = pytest.mark.parametrize("processes", [False, True], ids=["in-process", "worker-processes"])


def smtp_project(project: Path, sink: Sink, *, processes: bool = False, bounces: str = "",
                 **extra: object) -> Config:
    """The project with an smtp channel `newsletter` to the sink (and a `bounces:` section)."""
    if bounces:
        path = project / "config.yaml"
        path.write_text(path.read_text(encoding="utf-8").replace(
            "\nchannels:\n", f"\nbounces: {bounces}\n\nchannels:\n", 1), encoding="utf-8")
    return add_channel(project, "newsletter", "smtp", {
        "host": "127.0.0.1", "port": sink.port, "security": "none", "timeout": 5, "connections": 1,
        "retries": 2, "retry_wait": 0.01, "processes": processes, **extra})


def subscribe(config: Config, *addresses: str) -> None:
    engine = engine_for(config)
    for address in addresses:
        store.upsert(engine, address, name=address.split("@")[0].title())


def status(config: Config, address: str) -> str:
    found = store.find(engine_for(config), address=address)
    assert found is not None
    return found.status


def kinds(config: Config, address: str) -> list[str]:
    return [e["kind"] for e in events.history(engine_for(config), address)]


def send(config: Config, slug: str = SEED_SLUG) -> ChannelReport:
    [report] = publish(config, slugs=[slug], channels=["newsletter"])
    return report


@PROCESSES
def test_user_unknown_at_rcpt_is_bounced_and_not_mailed_in_the_next_edition(project, sink, run_cli,
                                                                              processes):
    """The issue's own scenario, from the command line: 550 5.1.1 at RCPT, then the next post."""
    config = smtp_project(project, sink, processes=processes)
    subscribe(config, "ada@example.com", "gone@example.com", "zed@example.com")
    sink.behaviour.reject["gone@example.com"] = ("RCPT", 550, "5.1.1 <gone@example.com>: User unknown")
    first = run_cli("--config", project / "config.yaml", "publish", POSTS[0], "--channel", "newsletter")
    assert "Traceback" not in first.stderr
    assert status(config, "gone@example.com") == "bounced"
    assert "5.1.1" in (store.find(engine_for(config), address="gone@example.com").status_reason or "")
    assert sink.refusals == {"gone@example.com": 1}            # refused once: a 5xx is not retried

    second = run_cli("--config", project / "config.yaml", "publish", POSTS[1], "--channel", "newsletter")
    assert second.returncode == 0, second.stderr
    assert sink.refusals == {"gone@example.com": 1}            # not even tried
    assert sink.recipients() == {"ada@example.com": 2, "zed@example.com": 2}
    assert {r.recipient for r in ledger_rows(config, "newsletter") if r.edition == POSTS[1]} == \
        {"ada@example.com", "zed@example.com"}
    assert [status(config, a) for a in ("ada@example.com", "zed@example.com")] == ["active", "active"]


@PROCESSES
def test_user_unknown_after_the_message_is_bounced(project, sink, processes):
    config = smtp_project(project, sink, processes=processes)
    subscribe(config, "ada@example.com", "gone@example.com")
    sink.behaviour.reject["gone@example.com"] = ("DATA", 550, "5.1.1 Mailbox does not exist")
    report = send(config)
    assert (report.sent, report.failed, report.bounced, report.error) == (1, 1, 1, None)
    assert sink.attempts["gone@example.com"] == 1 and sink.recipients() == {"ada@example.com": 1}
    assert status(config, "gone@example.com") == "bounced"
    [event] = events.history(engine_for(config), "gone@example.com")
    assert (event["kind"], event["source"], event["edition"]) == ("hard", "smtp", SEED_SLUG)
    assert event["detail"] == "message refused: 550 5.1.1 Mailbox does not exist"


@pytest.mark.parametrize("stage, code, text, kind, after", [
    ("RCPT", 550, "5.1.1 User unknown", "hard", "bounced"),
    ("RCPT", 553, "5.1.3 Bad recipient address syntax", "hard", "bounced"),
    ("DATA", 550, "5.2.1 Mailbox disabled, not accepting messages", "hard", "bounced"),
    ("RCPT", 501, "5.5.4 Invalid recipient parameters", "hard", "bounced"),
    ("RCPT", 550, "Mailbox unavailable", "hard", "bounced"),               # no enhanced code: 550
    ("RCPT", 552, "5.2.2 Mailbox full", "soft", "active"),
    ("DATA", 552, "5.3.4 Message too big for system", "soft", "active"),
    ("RCPT", 550, "5.7.1 Relaying denied by policy", "policy", "active"),
    ("DATA", 554, "5.7.1 Message rejected as spam", "policy", "active"),
    ("RCPT", 554, "Rejected: 5.12.3.4 is on a block list", "policy", "active"),  # an IP, not a code
    ("RCPT", 550, "4.2.2 contradicts its reply code", "hard", "bounced"),  # then 550 decides
])
def test_the_reply_decides(project, sink, stage, code, text, kind, after):
    config = smtp_project(project, sink)
    subscribe(config, "ada@example.com", "x@example.com")
    sink.behaviour.reject["x@example.com"] = (stage, code, text)
    report = send(config)
    assert (report.sent, report.failed, report.bounced) == (1, 1, int(after == "bounced"))
    assert kinds(config, "x@example.com") == [kind]
    assert status(config, "x@example.com") == after
    assert status(config, "ada@example.com") == "active"


def test_a_refused_sender_bounces_no_recipient(project, sink):
    """553 5.1.8 at MAIL FROM is about the sender: the pipelined RCPT then gets "503 5.5.1 need MAIL
    command", which must not read as every recipient's 5.5.x."""
    config = smtp_project(project, sink, **{"from": "news@bad.example"})
    subscribe(config, "ada@example.com", "bob@example.com")
    sink.behaviour.reject["news@bad.example"] = ("MAIL", 553, "5.1.8 Sender address rejected")
    report = send(config)
    assert (report.sent, report.failed, report.bounced) == (0, 2, 0)
    assert all("sender refused: 553 5.1.8" in (r.last_error or "") for r in ledger_rows(config, "newsletter"))
    assert [status(config, a) for a in ("ada@example.com", "bob@example.com")] == ["active", "active"]
    assert events.counts(engine_for(config)) == {}


@PROCESSES
def test_a_4xx_that_outlives_the_retries_is_one_soft_bounce_per_attempt(project, sink, processes):
    config = smtp_project(project, sink, processes=processes)
    subscribe(config, "ada@example.com", "busy@example.com")
    sink.behaviour.reject["busy@example.com"] = ("DATA", 451, "4.3.0 Temporary local problem")
    report = send(config)
    assert (report.sent, report.failed, report.bounced) == (1, 1, 0)
    assert sink.refusals["busy@example.com"] == 3              # 1 + retries: 2, one send
    assert kinds(config, "busy@example.com") == ["soft"]
    # `pipeline retry --failed` is another attempt: its refusal counts again; the third bounces.
    [again] = retry(config, failed=True, channels=["newsletter"])
    assert (again.failed, again.bounced) == (1, 0) and kinds(config, "busy@example.com") == ["soft"] * 2
    [third] = retry(config, failed=True, channels=["newsletter"])
    assert (third.failed, third.bounced) == (1, 1) and status(config, "busy@example.com") == "bounced"
    assert sink.refusals["busy@example.com"] == 9


def test_three_soft_bounces_across_three_editions_bounce_the_address(project, sink, write_post):
    config = smtp_project(project, sink)
    subscribe(config, "ada@example.com", "full@example.com")
    sink.behaviour.reject["full@example.com"] = ("RCPT", 452, "4.2.2 Mailbox full")
    for slug, expected in zip(POSTS, ["active", "active", "bounced"], strict=True):
        report = send(config, slug)
        assert report.bounced == int(expected == "bounced")
        assert status(config, "full@example.com") == expected
    assert [e["edition"] for e in events.history(engine_for(config), "full@example.com")] == \
        POSTS[::-1]
    write_post("2025-01-01-next.md", "---\ntitle: Next\ndate: 2025-01-01\n---\nMore.\n")
    send(config, "2025-01-01-next")
    assert sink.refusals["full@example.com"] == 9              # 3 editions x (1 + retries: 2)
    assert sink.recipients() == {"ada@example.com": 4}


@pytest.mark.parametrize("days_ago, after", [(29, "bounced"), (31, "active")])
def test_soft_bounces_count_within_the_window_only(project, sink, days_ago, after):
    """`bounces: {soft_limit: 2, soft_days: 30}`: an older soft bounce no longer counts."""
    config = smtp_project(project, sink, bounces="{soft_limit: 2, soft_days: 30}")
    subscribe(config, "full@example.com")
    events.record(engine_for(config), events.Event(
        event_id="earlier", email="full@example.com", kind=events.EventKind.SOFT, source="dsn",
        at=datetime.now(UTC) - timedelta(days=days_ago)), soft_limit=2, soft_days=30)
    assert status(config, "full@example.com") == "active"
    sink.behaviour.reject["full@example.com"] = ("RCPT", 552, "5.2.2 Mailbox full")
    report = send(config)
    assert status(config, "full@example.com") == after
    assert report.bounced == int(after == "bounced")


def test_the_history_shows_the_reply_and_a_bounced_row_is_not_resent(project, sink):
    config = smtp_project(project, sink)
    subscribe(config, "gone@example.com")
    sink.behaviour.reject["gone@example.com"] = ("RCPT", 550, "5.1.1 <gone@example.com>: User unknown")
    send(config)
    [event] = events.history(engine_for(config), "gone@example.com")
    assert event["detail"] == "recipient refused: 550 5.1.1 <gone@example.com>: User unknown"
    assert (event["kind"], event["source"], event["edition"]) == ("hard", "smtp", SEED_SLUG)
    # `retry --failed` puts the row back, but a bounced address is never mailed.
    [again] = retry(config, failed=True, channels=["newsletter"])
    assert (again.sent, again.failed) == (0, 0)
    assert sink.refusals["gone@example.com"] == 1 and len(events.history(engine_for(config),
                                                                         "gone@example.com")) == 1
    assert [r.status for r in ledger_rows(config, "newsletter")] == [Status.PENDING]

