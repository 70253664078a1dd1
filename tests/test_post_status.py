"""Each post's state per channel, as the preview page lists it: from the ledger (sent, failed...),
else from `publish_at` and the timetable (scheduled at...), else not scheduled."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pipeline.intake.posts import load_posts
from pipeline.models import Status
from pipeline.preview import render_post
from pipeline.publish import publish_rendered
from pipeline.store.engine import engine_for
from pipeline.store.ledger import Ledger
from pipeline.store.subscribers import upsert
from pipeline.timetable.entries import fire_times
from pipeline.timetable.schedule import run_entry
from pipeline.web.post_status import post_states
from tests.conftest import PREVIEW_NOW, SEED_SLUG

pytestmark = pytest.mark.state_backends     # each test on SQLite and on PostgreSQL

NOW = PREVIEW_NOW          # Friday 2026-11-27 07:00 in New York
INFUSION, MOOD = "2024-03-12-your-first-infusion", "mood-journal"


def _states(config, now=NOW):  # type: ignore[no-untyped-def]
    return {slug: {s.channel: s for s in states}
            for slug, states in post_states(config, load_posts(config).posts, now=now).items()}


def _only(config, name):  # type: ignore[no-untyped-def]
    return config.model_copy(update={"schedule": [e for e in config.schedule if e.name == name]})


def _entry(config, name):  # type: ignore[no-untyped-def]
    return next(e for e in config.schedule if e.name == name)


def test_queue_positions_map_to_successive_slots(config):
    config = _only(config, "social-slots")
    slots = fire_times(_entry(config, "social-slots"), config.timezone, NOW, 3)
    states = _states(config)
    assert [(states[s]["outbox"].state, states[s]["outbox"].at) for s in (SEED_SLUG, INFUSION, MOOD)] == \
        [("scheduled", slots[0]), ("scheduled", slots[1]), ("scheduled", slots[2])]
    assert str(states[SEED_SLUG]["outbox"].at.tzinfo) == "America/New_York"
    assert states[SEED_SLUG]["outbox"].detail == "social-slots"


def test_latest_schedules_only_the_newest_post(config):
    config = _only(config, "hourly-latest")
    states = _states(config)
    assert states[MOOD]["outbox"].state == "scheduled"
    hourly = fire_times(_entry(config, "hourly-latest"), config.timezone, NOW, 1)
    assert states[MOOD]["outbox"].at == hourly[0]
    assert states[SEED_SLUG]["outbox"].state == "not scheduled"


def test_sent_posts_come_from_the_ledger(config):
    rendered = [render_post(p, config) for p in load_posts(config).posts if p.slug == SEED_SLUG]
    report = publish_rendered(config, rendered, "outbox", dry_run=False, now=NOW)
    state = _states(config)[SEED_SLUG]["outbox"]
    assert state.state == "sent"
    assert state.detail == f"{report.sent} of {report.sent}"
    assert state.at is not None
    # Rows left failed show as failed, with the counts.
    ledger = Ledger(engine_for(config))
    try:
        row = ledger.rows(channel="outbox", edition=SEED_SLUG)[0]
        ledger.fail(row.key, "boom", status=Status.FAILED)
    finally:
        ledger.close()
    state = _states(config)[SEED_SLUG]["outbox"]
    assert state.state == "failed" and state.detail.endswith(", 1 failed")


def test_digest_membership_and_the_next_digest(config, write_post):
    write_post("2026-11-25-fresh.md", "---\ntitle: Fresh\ndate: 2026-11-25\n---\nNew this week.\n")
    config = _only(config, "weekly-newsletter")
    monday = fire_times(_entry(config, "weekly-newsletter"), config.timezone, NOW, 1)[0]
    state = _states(config)["2026-11-25-fresh"]["outbox"]
    assert (state.state, state.at, state.detail) == ("scheduled", monday, "weekly-newsletter")
    assert _states(config)[SEED_SLUG]["outbox"].state == "not scheduled"     # too old for a digest
    run_entry(config, _entry(config, "weekly-newsletter"), monday, now=monday + timedelta(minutes=1))
    state = _states(config, now=monday + timedelta(hours=1))["2026-11-25-fresh"]["outbox"]
    assert (state.state, state.detail) == ("in digest", f"digest-weekly-newsletter-{monday:%Y-%m-%d}, "
                                                        "which had no recipients")
    upsert(engine_for(config), "ada@example.com", "Ada")
    later = monday + timedelta(days=7)
    write_post("2026-12-01-fresher.md", "---\ntitle: Fresher\ndate: 2026-12-01\n---\nNewer.\n")
    run_entry(config, _entry(config, "weekly-newsletter"), later, now=later + timedelta(minutes=1))
    state = _states(config, now=later + timedelta(hours=1))["2026-12-01-fresher"]["outbox"]
    assert state.state == "sent"
    assert state.detail == f"1 of 1 in digest-weekly-newsletter-{later:%Y-%m-%d}"


def test_publish_at_drafts_and_future_posts(config, write_post):
    write_post("2026-11-01-later.md", "---\ntitle: Later\ndate: 2026-11-01\n"
                                      "publish_at: 2026-11-27T08:15:00-05:00\n---\nSoon.\n")
    write_post("2026-11-02-draft.md", "---\ntitle: Draft\ndate: 2026-11-02\ndraft: true\n---\nNo.\n")
    write_post("2026-12-24-future.md", "---\ntitle: Future\ndate: 2026-12-24\n---\nLater.\n")
    config = config.model_copy(update={"schedule": []})
    states = _states(config)
    later = states["2026-11-01-later"]["outbox"]
    assert (later.state, later.detail) == ("scheduled", "publish_at")
    assert later.at == datetime(2026, 11, 27, 13, 15, tzinfo=UTC)
    assert states["2026-11-02-draft"]["outbox"].state == "draft"
    assert states["2026-12-24-future"]["outbox"].state == "future"
    assert states[SEED_SLUG]["outbox"].state == "not scheduled"
