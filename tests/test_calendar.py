"""The plan as a calendar: the preview page's /calendar.ics and `pipeline schedule --ics`, across
the end of daylight-saving time in New York (Sun 2026-11-01, 02:00 EDT -> 01:00 EST). The page
itself, in Chromium: tests/browser/test_calendar_browser.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from icalendar import Calendar

from pipeline.config import load_config
from pipeline.store.engine import engine_for
from pipeline.store.schema import deliveries
from pipeline.timetable.calendar import MAX_FIRES, SentCounts, build_plan
from pipeline.timetable.ical import cut_note, feed
from pipeline.web.preview_page import create_preview_app
from tests.conftest import SEED_SLUG
from tests.servers import AppServers

# Friday 08:00 in New York, two days before the clocks go back.
NOW = datetime(2026, 10, 30, 12, 0, tzinfo=UTC)
INFUSION, MOOD, EXTRA = "2024-03-12-your-first-infusion", "mood-journal", "2026-10-28-autumn-notes"

TIMETABLE = """
schedule:
  - name: sunday-digest
    channels: [outbox]
    cron: "0 9 * * sun"
    edition: digest
  - name: slots
    channels: [outbox]
    cron: "30 10 * * *"
    edition: queue
"""


@pytest.fixture
def planned(project: Path) -> Path:
    """The shipped project with a daily queue, a Sunday digest, a post whose `publish_at` is
    Sunday 08:00 EST, and the seed post sent on Tuesday 09:00 EDT (three deliveries)."""
    config_path = project / "config.yaml"
    text = config_path.read_text(encoding="utf-8")
    head, _, rest = text.partition("\nschedule:\n")
    tail = rest[rest.index("\n# `pipeline preview --serve`"):]
    config_path.write_text(head + "\n" + TIMETABLE + tail, encoding="utf-8")
    (project / "posts" / f"{EXTRA}.md").write_text(
        "---\ntitle: Autumn notes\ndate: 2026-10-28\npublish_at: 2026-11-01T08:00:00-05:00\n---\n\n"
        "Leaves, and what they teach us.\n", encoding="utf-8")
    engine = engine_for(load_config(config_path))
    sent = datetime(2026, 10, 27, 13, 0, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(deliveries.insert(), [
            {"key": f"outbox:{SEED_SLUG}:reader{i}@example.com", "channel": "outbox", "edition": SEED_SLUG,
             "kind": "email", "recipient": f"reader{i}@example.com", "part": 0, "dry_run": False,
             "status": "sent", "attempts": 1, "resends": 0, "created_at": sent, "updated_at": sent,
             "sent_at": sent + timedelta(minutes=2 * i)} for i in range(3)])
    return project


@pytest.fixture
def served(planned: Path) -> Iterator[str]:
    servers = AppServers()
    yield servers.start(create_preview_app(planned / "config.yaml", now=NOW))
    servers.stop()


def _events(body: bytes) -> list:  # type: ignore[type-arg]
    return list(Calendar.from_ical(body).walk("VEVENT"))


def test_ics_has_one_event_per_send_in_utc_with_stable_uids(served):
    first = httpx.get(served + "/calendar.ics?back=7&ahead=5")
    assert first.status_code == 200
    assert first.headers["content-type"].startswith("text/calendar")
    events = _events(first.content)
    by_uid = {str(e["UID"]): e for e in events}
    assert len(by_uid) == len(events)                              # one event per send
    for event in events:
        start = event.decoded("DTSTART")
        assert start.utcoffset() == timedelta(0) and b"DTSTART:" in event.to_ical()   # written in UTC
        assert "Z" in event["DTSTART"].to_ical().decode()
    starts = {uid.split("@")[0]: by_uid[uid].decoded("DTSTART") for uid in by_uid}
    # The queue at 10:30 New York time: 14:30Z while daylight-saving time lasts, 15:30Z after.
    assert starts["slots:outbox:20261030T143000Z"] == datetime(2026, 10, 30, 14, 30, tzinfo=UTC)
    assert "slots:outbox:20261101T153000Z" in starts
    assert "slots:outbox:20261101T143000Z" not in starts
    assert starts["sunday-digest:outbox:20261101T140000Z"] == datetime(2026, 11, 1, 14, 0, tzinfo=UTC)
    assert starts[f"publish_at:outbox:{EXTRA}:"] == datetime(2026, 11, 1, 13, 0, tzinfo=UTC)
    # The seed post is out (the ledger's first and last send), so the queue starts with the next.
    past = by_uid[f"sent:outbox:{SEED_SLUG}:@www.rtrwellnesscenter.com"]
    assert past.decoded("DTSTART") == datetime(2026, 10, 27, 13, 0, tzinfo=UTC)
    assert past.decoded("DTEND") == datetime(2026, 10, 27, 13, 4, tzinfo=UTC)
    assert "3 sent" in str(past["SUMMARY"])
    slot = by_uid["slots:outbox:20261030T143000Z@www.rtrwellnesscenter.com"]
    assert "Your First Infusion" in str(slot["SUMMARY"])
    assert str(slot["URL"]) == f"{served}/posts/{INFUSION}"
    # Daily slots until Wednesday 12:00Z (five days ahead): its 10:30 (15:30Z) is past the window.
    assert sorted(k for k in starts if k.startswith("slots:")) == [
        "slots:outbox:20261030T143000Z", "slots:outbox:20261031T143000Z", "slots:outbox:20261101T153000Z",
        "slots:outbox:20261102T153000Z", "slots:outbox:20261103T153000Z"]

    again = _events(httpx.get(served + "/calendar.ics?back=7&ahead=5").content)
    assert {str(e["UID"]) for e in again} == set(by_uid)          # a re-download updates, not adds
    wider = _events(httpx.get(served + "/calendar.ics").content)
    assert set(by_uid) < {str(e["UID"]) for e in wider}

    bad = httpx.get(served + "/calendar.ics?ahead=1000")
    assert bad.status_code == 400 and bad.text == "ahead='1000': give a whole number of days from 0 to 366"


def test_schedule_ics_agrees_with_schedule(project, run_cli, tmp_path):
    # Far ahead of any run of this test, so the window starts at --from whatever the clock says.
    out = tmp_path / "sends.ics"
    frm = "2040-01-01T00:00:00+00:00"
    result = run_cli("--config", project / "config.yaml", "schedule", "--json", "--next", "20",
                     "--from", frm, "--ics", out)
    assert result.returncode == 0, result.stderr
    listed = {item["name"]: [datetime.fromisoformat(f).astimezone(UTC) for f in item["fires"]]
              for item in json.loads(result.stdout)}
    events = _events(out.read_bytes())
    fired: dict[str, list[datetime]] = {}
    for event in events:
        entry = str(event["UID"]).split(":")[0]
        fired.setdefault(entry, []).append(event.decoded("DTSTART"))
    # The digest and the queue: every fire in the window (90 days from --from). `latest` fires that
    # send nothing are left out: its newest post goes at its next fire from now, before the window.
    end = datetime.fromisoformat(frm) + timedelta(days=90)
    assert sorted(fired["weekly-newsletter"]) == [f for f in listed["weekly-newsletter"] if f < end]
    assert sorted(fired["social-slots"])[:20] == listed["social-slots"]
    assert "hourly-latest" not in fired and len(listed["hourly-latest"]) == 20
    assert all(e.decoded("DTSTART").tzinfo is not None and e.decoded("DTSTART").utcoffset() == timedelta(0)
               for e in events)
    assert min(e.decoded("DTSTART") for e in events) >= datetime.fromisoformat(frm)


def test_bad_query_says_what_to_give(served):
    reply = httpx.get(served + "/calendar?start=30-10-2026")
    assert reply.status_code == 400
    assert "start=&#39;30-10-2026&#39;: give a date as YYYY-MM-DD" in reply.text
    reply = httpx.get(served + "/calendar?view=month&start=0001-01-01")
    assert reply.status_code == 400
    assert "start=&#39;0001-01-01&#39;: give a date from 1971 to 2198" in reply.text


def test_an_entry_firing_every_minute_is_cut_with_a_note(project):
    config_path = project / "config.yaml"
    text = config_path.read_text(encoding="utf-8")
    config_path.write_text(text.replace("    every: 1h\n", "    every: 1m\n"), encoding="utf-8")
    config = load_config(config_path)
    # Nothing is waiting for it: `latest` fires only show when they carry a post; a queue's do.
    config = config.model_copy(update={"schedule": [e.model_copy(update={"edition": "queue"})
                                                    if e.name == "hourly-latest" else e
                                                    for e in config.schedule]})
    plan = build_plan(config, [], SentCounts([]), start=NOW, end=NOW + timedelta(days=3), now=NOW)
    minutely = [s for s in plan.sends if s.source == "hourly-latest"]
    assert len(minutely) == MAX_FIRES and minutely[-1].at == NOW + timedelta(minutes=MAX_FIRES)
    assert plan.cut == ("hourly-latest",)
    assert cut_note(plan) == ("hourly-latest: only the first 2000 fires in the window are listed; "
                              "ask for a shorter window")
    events = _events(feed(config, plan, {}, stamp=NOW))
    assert len([e for e in events if str(e["UID"]).startswith("hourly-latest:")]) == MAX_FIRES
