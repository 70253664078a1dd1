"""Firing timetable entries with an injected clock: DST double fires, queue slots, digests."""

from __future__ import annotations

import mailbox
import threading
from datetime import datetime, timedelta
from email.header import decode_header, make_header
from zoneinfo import ZoneInfo

import pytest

from pipeline.config import load_config
from pipeline.intake.sources import load_all
from pipeline.models import Status
from pipeline.publish import retry
from pipeline.store import subscribers as store
from pipeline.store.engine import engine_for
from pipeline.store.ledger import Ledger
from pipeline.store.runs import digested, record_run
from pipeline.timetable.entries import fire_times
from pipeline.timetable.schedule import digest_edition, run_entry, run_once

pytestmark = pytest.mark.state_backends     # each test on SQLite and on PostgreSQL

NY = ZoneInfo("America/New_York")


def configure(project, schedule: str, extra: str = ""):  # type: ignore[no-untyped-def]
    path = project / "config.yaml"
    path.write_text(path.read_text(encoding="utf-8") + extra + "schedule:\n" + schedule, encoding="utf-8")
    config = load_config(path)
    store.upsert(engine_for(config), "ada@example.com", "Ada")
    return config


def mails(project) -> list[str]:  # type: ignore[no-untyped-def]
    box = mailbox.Maildir(project / "out" / "outbox" / "mail", create=True)
    return sorted(str(make_header(decode_header(m["Subject"]))).replace("\n", "") for m in box)


def test_fall_back_double_fire_sends_once(project):
    config = configure(project, '  - {name: nightly, channels: [outbox], cron: "30 1 * * *"}\n')
    [entry] = config.schedule
    # The daemon's trigger fires 01:30 EDT and then 01:30 EST on the fall-back night.
    trigger = entry.trigger(config.timezone)
    first = trigger.get_next_fire_time(None, datetime(2026, 10, 31, 12, tzinfo=NY))
    second = trigger.get_next_fire_time(first, first + timedelta(microseconds=1))
    both = [first, second]
    assert [f.isoformat() for f in both] == ["2026-11-01T01:30:00-04:00", "2026-11-01T01:30:00-05:00"]
    reports = [run_entry(config, entry, f, now=f) for f in both]
    assert [r.sent for r in reports[0]] == [5] and [r.sent for r in reports[1]] == []
    assert len(mails(project)) == 1


def test_spring_forward_fire_sends_once(project):
    config = configure(project, '  - {name: early, channels: [outbox], cron: "30 2 * * *"}\n')
    [entry] = config.schedule
    [fire] = fire_times(entry, config.timezone, datetime(2026, 3, 7, 12, tzinfo=NY), 1)
    assert fire.isoformat() == "2026-03-08T03:00:00-04:00"
    assert [r.sent for r in run_entry(config, entry, fire, now=fire)] == [5]
    assert run_entry(config, entry, fire, now=fire) == []
    assert len(mails(project)) == 1


def test_three_queue_slots_over_two_posts_then_idle(project):
    config = configure(project, "  - {name: slots, channels: [outbox], every: 1h, edition: queue}\n")
    for name in ("2024-03-12-your-first-infusion.md", "2024-05-20-mood-journal-spreadsheet.md"):
        (project / "posts" / name).unlink()
    (project / "posts" / "two.md").write_text("---\ntitle: Second\ndate: 2024-01-01\n---\nBody.\n",
                                              encoding="utf-8")
    [entry] = config.schedule
    start = datetime(2026, 5, 4, 10, tzinfo=NY)
    slots = [start + timedelta(hours=i) for i in range(3)]
    sent = [[r.sent for r in run_entry(config, entry, slot, now=slot)] for slot in slots]
    assert sent == [[5], [5], []]
    assert sorted(mails(project)) == ["Ketamine’s Potential Ability to Heal Neurological Damage", "Second"]


def test_posts_dated_in_the_future_or_drafts_are_never_sent(project):
    config = configure(project, "  - {name: slots, channels: [outbox], every: 1h, edition: queue}\n")
    (project / "posts" / "draft.md").write_text("---\ntitle: D\ndate: 2019-01-01\ndraft: true\n---\nB.\n",
                                                encoding="utf-8")
    [entry] = config.schedule
    now = datetime(2024, 4, 1, tzinfo=NY)          # before the May post's date
    for i in range(4):
        run_entry(config, entry, now + timedelta(hours=i), now=now + timedelta(hours=i))
    assert "Un journal d’humeur: track your mood in five minutes a day 🌿" not in mails(project)
    assert "D" not in mails(project)
    assert len(mails(project)) == 2


def test_two_digests_in_a_row_never_repeat_a_post_and_an_empty_one_is_not_sent(project):
    config = configure(project,
                       '  - {name: weekly, channels: [outbox], cron: "0 9 * * mon", edition: digest}\n')
    [entry] = config.schedule
    monday = datetime(2024, 5, 20, 9, tzinfo=NY)       # the mood journal post is dated that morning
    first = run_entry(config, entry, monday, now=monday)
    assert [r.sent for r in first] == [1]
    assert digested(engine_for(config), "outbox") == {"mood-journal"}
    second = run_entry(config, entry, monday + timedelta(days=7), now=monday + timedelta(days=7))
    assert [r.sent for r in second] == [0] and [r.total for r in second] == [0]
    [subject] = mails(project)
    assert subject.startswith("RTR Wellness Center: new articles, ")
    rows = Ledger(engine_for(config)).rows(channel="outbox", status=Status.SENT)
    assert [r.edition for r in rows] == ["digest-weekly-2024-05-20"]


def test_a_digest_cut_short_is_finished_by_retry_as_it_was_compiled(project, caplog):
    config = configure(project,
                       '  - {name: weekly, channels: [outbox], cron: "0 9 * * mon", edition: digest}\n')
    for address in ("bo@example.com", "cy@example.com"):
        store.upsert(engine_for(config), address, None)
    [entry] = config.schedule
    monday = datetime(2024, 5, 20, 9, tzinfo=NY)       # the mood journal post is dated that morning
    # As the daemon fires: the run is recorded first, then the send is stopped before any message.
    assert record_run(engine_for(config), "weekly", monday, "ran")
    stopped = threading.Event()
    stopped.set()
    [cut] = run_entry(config, entry, monday, now=monday, stop=stopped)
    assert cut.sent == 0 and not (project / "out").exists()
    rows = Ledger(engine_for(config)).rows(channel="outbox")
    assert {(r.edition, r.status) for r in rows} == {("digest-weekly-2024-05-20", Status.PENDING)}
    # A post published since is not added to that digest when it is compiled again.
    (project / "posts" / "later.md").write_text("---\ntitle: Later\ndate: 2024-05-21\n---\nBody.\n",
                                                encoding="utf-8")

    [report] = retry(config)
    assert (report.channel, report.editions, report.sent) == ("outbox", ["digest-weekly-2024-05-20"], 3)
    expected = digest_edition(config, entry, "outbox", monday,
                              [p for p in load_all(config).posts if p.slug == "mood-journal"])
    assert mails(project) == [expected.subject] * 3
    assert all(r.status == Status.SENT for r in Ledger(engine_for(config)).rows(channel="outbox"))
    assert [r.sent for r in retry(config)] == []            # nothing left: nothing sent twice
    assert len(mails(project)) == 3

    # An edition no post and no digest entry makes any more is left pending, with a warning.
    ledger = Ledger(engine_for(config))
    ledger.plan(key="outbox:digest-gone-2024-05-20:email", channel="outbox", edition="digest-gone-2024-05-20",
                kind="email")
    ledger.close()
    assert retry(config) == []
    assert "'digest-gone-2024-05-20' has pending deliveries" in caplog.text
    assert Ledger(engine_for(config)).get("outbox:digest-gone-2024-05-20:email").status == Status.PENDING


def test_empty_digest_sends_a_note_when_configured(project):
    config = configure(project,
                       '  - {name: weekly, channels: [outbox], cron: "0 9 * * mon", edition: digest}\n',
                       extra="digest: {empty: note}\n")
    [entry] = config.schedule
    monday = datetime(2026, 11, 30, 9, tzinfo=NY)
    assert [r.sent for r in run_entry(config, entry, monday, now=monday)] == [1]
    box = mailbox.Maildir(project / "out" / "outbox" / "mail")
    [message] = list(box)
    assert "Nothing new" in message.as_string()


def test_run_once_fires_due_entries_once(project):
    config = configure(project,
                       '  - {name: weekly, channels: [outbox], cron: "0 9 * * mon", max_lateness: 6h}\n')
    at = datetime(2026, 11, 30, 14, tzinfo=NY)
    assert list(run_once(config, now=at)) == ["weekly"]
    assert run_once(config, now=at + timedelta(minutes=5)) == {}
    assert run_once(config, now=datetime(2026, 11, 30, 16, tzinfo=NY)) == {}
    assert len(mails(project)) == 1


def test_publish_at_sends_the_post_to_its_channels_when_due(project):
    config = configure(project, "  - {name: idle, channels: [outbox], every: 1w}\n",
                       extra="default_channels: [outbox]\n")
    (project / "posts" / "timed.md").write_text(
        "---\ntitle: Timed\ndate: 2024-01-01\npublish_at: 2026-12-01T09:00:00-05:00\n---\nBody.\n",
        encoding="utf-8")
    before = datetime(2026, 12, 1, 8, 59, tzinfo=NY)
    assert "publish_at" not in run_once(config, now=before)
    after = datetime(2026, 12, 1, 9, 1, tzinfo=NY)
    [report] = run_once(config, now=after)["publish_at"]
    assert (report.channel, report.sent) == ("outbox", 5)
    assert "publish_at" not in run_once(config, now=after + timedelta(minutes=1))
    assert "Timed" in mails(project)
