"""Feeds end to end: a config naming a feed, a weekly digest and a `latest` social slot; each
scheduler run fetches before planning; new entries reach the outbox in the digest and as
snippets, once each."""

from __future__ import annotations

import json
import logging
import mailbox
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.header import decode_header, make_header
from email.message import Message
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from pytest_httpserver import HTTPServer

from pipeline.config import Config, load_config
from pipeline.intake.feeds import fetch_all
from pipeline.intake.sources import load_all
from pipeline.store import subscribers as store
from pipeline.store.engine import engine_for
from pipeline.timetable.schedule import run_once
from tests.feed_server import FeedServer, item, rss, with_sources

pytestmark = pytest.mark.state_backends     # each test on SQLite and on PostgreSQL

NY = ZoneInfo("America/New_York")
SATURDAY = datetime(2026, 6, 6, 12, 0, tzinfo=NY)
MONDAY = datetime(2026, 6, 8, 9, 5, tzinfo=NY)         # the digest is due at 09:00
SCHEDULE = """schedule:
  - {name: weekly, channels: [outbox], cron: "0 9 * * mon", edition: digest, max_lateness: 6h}
  - {name: social, channels: [outbox], cron: "0 * * * *", edition: latest, max_lateness: 1h}
"""


@pytest.fixture
def server(httpserver_ipv4: HTTPServer) -> Iterator[FeedServer]:
    yield FeedServer(httpserver_ipv4)


def feed_project(project: Path, url: str, **settings: object) -> Config:
    """The project with the feed (and its `settings`) as a source, the timetable above, and one
    subscriber."""
    with_sources(project, {"name": "partner", "url": url, **settings})
    path = project / "config.yaml"
    path.write_text(path.read_text(encoding="utf-8") + SCHEDULE, encoding="utf-8")   # the last wins
    config = load_config(path)
    store.upsert(engine_for(config), "ada@example.com", "Ada")
    return config


def mails(project: Path) -> dict[str, Message]:
    box = mailbox.Maildir(project / "out" / "outbox" / "mail", create=True)
    return {str(make_header(decode_header(m["Subject"]))).replace("\n", ""): m for m in box}


def html_part(message: Message) -> str:
    part = next(p for p in message.walk() if p.get_content_type() == "text/html")
    return part.get_payload(decode=True).decode("utf-8")


def social_lines(project: Path) -> list[dict[str, object]]:
    path = project / "out" / "outbox" / "social.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_new_feed_entries_go_out_in_the_digest_and_as_snippets_once_each(project, server):
    archived = item("archived", title="Archived article", date=SATURDAY - timedelta(days=2))
    url = server.put("/feed.xml", rss(archived), etag='"1"')
    config = feed_project(project, url)
    assert [r.baseline for r in fetch_all(config, now=SATURDAY)] == [1]       # the first fetch sends none
    sunday = datetime(2026, 6, 7, 20, 0, tzinfo=NY)
    server.put("/feed.xml", rss(item("second", title="Second new article", date=sunday + timedelta(hours=1)),
                                item("first", title="First new article", date=sunday), archived), etag='"2"')

    done = run_once(config, now=MONDAY)              # fetches, then fires both entries
    assert sorted(done) == ["social", "weekly"]
    [digest] = [m for s, m in mails(project).items() if s.startswith("RTR Wellness Center: new articles")]
    body = html_part(digest)
    for title, link in (("First new article", "https://blog.example/first/"),
                        ("Second new article", "https://blog.example/second/")):
        assert body.count(title) >= 1 and f'href="{link}"' in body
    assert "Archived article" not in body
    assert "Originally published at" in body and ">blog.example</a>" in body
    snippets = social_lines(project)
    assert sorted(s["network"] for s in snippets) == ["bluesky", "mastodon", "x"]
    assert {s["link"] for s in snippets} == {"https://blog.example/second/"}
    assert all("Second new article" in str(s["text"]) for s in snippets)
    sent_mails = set(mails(project))

    again = run_once(config, now=MONDAY + timedelta(hours=1))      # the next slot: nothing new
    assert sorted(again) == ["social"] and again["social"] == []
    assert server.requests_to("/feed.xml")[-1]["If-None-Match"] == '"2"'
    next_week = run_once(config, now=MONDAY + timedelta(days=7))
    assert [r.sent for r in next_week["weekly"]] == [0]           # already in last week's digest
    assert set(mails(project)) == sent_mails
    assert len(social_lines(project)) == 3


def test_a_failing_feed_is_logged_and_the_run_goes_on_with_what_is_stored(project, server, caplog):
    url = server.put("/feed.xml", rss(item("a", title="Stored article", date=SATURDAY)))
    config = feed_project(project, url)
    fetch_all(config, now=SATURDAY - timedelta(days=1))                 # baseline: nothing
    server.put("/feed.xml", rss(item("b", title="Fresh article", date=SATURDAY + timedelta(hours=1)),
                                item("a", title="Stored article", date=SATURDAY)))
    fetch_all(config, now=SATURDAY + timedelta(hours=2))
    server.put("/feed.xml", "", status=502)
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        done = run_once(config, now=MONDAY)
    assert ("feed partner not refreshed (HTTP 502 Bad Gateway); planning with the entries stored"
            in caplog.text)
    assert [r.sent for r in done["weekly"]] == [1]
    [digest] = [m for s, m in mails(project).items() if s.startswith("RTR Wellness Center: new articles")]
    assert "Fresh article" in html_part(digest)


def test_entries_dated_year_1_or_9999_never_stop_the_runs(project, server):
    url = server.put("/feed.xml", rss(
        item("end", title="Never expires", date=datetime(9999, 12, 31, 23, 59, tzinfo=UTC)),
        item("start", title="Year one", date=datetime(1, 1, 1, tzinfo=UTC))))
    config = feed_project(project, url, backfill=5, settle="0m")
    done = run_once(config, now=MONDAY)              # the first fetch sends both (backfill), then fires
    assert sorted(done) == ["social", "weekly"]
    [digest] = [m for s, m in mails(project).items() if s.startswith("RTR Wellness Center: new articles")]
    assert "Never expires" in html_part(digest) and "Year one" in html_part(digest)
    posts = [p for p in load_all(config, now=MONDAY).posts if p.path.startswith("feed:")]
    assert sorted(p.title for p in posts) == ["Never expires", "Year one"]
    assert all(p.date == MONDAY for p in posts)                       # dated when first seen
    later = run_once(config, now=MONDAY + timedelta(days=7))          # and the runs after it go on
    assert [r.sent for r in later["weekly"]] == [0]
