"""What every article source hands on, and what `pipeline check` says about it: dates outside
1970-2200 (in a post, or in a row of the state database) are refused where they are read and never
crash a run; a slug or canonical URL two sources share is a warning naming both."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert

from pipeline.config import Config, load_config
from pipeline.intake.sources import load_all
from pipeline.store import subscribers
from pipeline.store.engine import engine_for
from pipeline.store.runs import digested, record_run
from pipeline.store.schema import feed_entries
from pipeline.timetable.schedule import run_entry
from tests.feed_server import with_sources

# A feed no test fetches: `run --once` tries it, is refused at once, and plans with what is stored.
FEED = {"name": "partner", "url": "http://127.0.0.1:9/feed.xml", "settle": "0m"}
NOW = datetime.now(UTC)
SHIPPED = ("2020-09-01-ketamine-neurological-damage", "2024-03-12-your-first-infusion", "mood-journal")


def _lines_naming(text: str, name: str) -> list[str]:
    return [line for line in text.splitlines() if name in line]


def store_entry(config: Config, key: str, *, date: str, slug: str | None = None,
                canonical_url: str | None = None) -> str:
    """Write an accepted (`new`) entry of the feed `partner` straight into the state database,
    as an older version (or a hand edit) may have left it; returns its path."""
    slug = slug or f"partner-{key}"
    path = f"feed:partner:{key}"
    post = {"path": path, "slug": slug, "title": f"Entry {key}", "date": date,
            "canonical_url": canonical_url or f"https://partner.example/{key}/",
            "body_markdown": f"<p>Body of {key}.</p>", "body_html": f"<p>Body of {key}.</p>",
            "author": None, "summary": None, "tags": [], "image": None}
    past = NOW - timedelta(days=2)
    with engine_for(config).begin() as conn:
        conn.execute(insert(feed_entries).values(
            feed="partner", id_hash=key.ljust(64, "0"), entry_id=key, slug=slug, status="new",
            content_hash="0" * 64, post=json.dumps(post), first_seen=past, changed_at=past,
            updated_at=past))
    return path


def cross_posted(project: Path) -> list[str]:
    """Slugs the outbox holds as cross-posted articles (sent with no subscribers needed)."""
    folder = project / "out" / "outbox" / "articles"
    return sorted(p.stem for p in folder.iterdir()) if folder.is_dir() else []


# -- 1. dates outside 1970-2200 -----------------------------------------------------------------

def test_check_names_a_post_dated_year_1_on_one_line_and_the_others_still_preview(
        project, write_post, run_cli, tmp_path):
    write_post("ancient.md", "---\ntitle: Ancient\ndate: 0001-01-01\n---\n\nBody.\n")
    check = run_cli("check", cwd=project)
    assert check.returncode == 1
    assert "Traceback" not in check.stderr
    assert _lines_naming(check.stderr, "ancient.md") == [
        "error: posts/ancient.md: front matter: 'date' is 0001-01-01, outside 1970-2200"]
    preview = run_cli("preview", "--out", tmp_path / "out", cwd=project)
    assert preview.returncode == 1 and "Traceback" not in preview.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(SHIPPED)


def test_run_once_reports_posts_dated_out_of_range_and_sends_the_others(project, write_post, run_cli):
    write_post("ancient.md", "---\ntitle: Ancient\ndate: 0001-01-01T00:00:00+05:00\n---\n\nBody.\n")
    write_post("timed.md", "---\ntitle: Timed\ndate: 2024-01-01\npublish_at: 0001-01-01T00:00:00+05:00\n"
                           "---\n\nBody.\n")
    result = run_cli("run", "--once", "--dry-run", cwd=project)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert [line.split(" WARNING ")[-1] for line in _lines_naming(result.stderr, "posts/")] == [
        "pipeline.timetable.schedule: posts/ancient.md: front matter: 'date' is "
        "0001-01-01T00:00:00+05:00, outside 1970-2200 (not sent)",
        "pipeline.timetable.schedule: posts/timed.md: front matter: 'publish_at' is "
        "0001-01-01T00:00:00+05:00, outside 1970-2200 (not sent)"]
    assert "hourly-latest:\noutbox: 4 sent" in result.stdout           # the newest good post
    assert "publish_at" not in result.stdout
    assert cross_posted(project) == ["mood-journal"]


def test_stored_feed_entry_dated_year_1_is_skipped_with_a_warning(project, caplog):
    config = with_sources(project, FEED)
    store_entry(config, "good", date="2026-01-05T10:00:00+00:00")
    store_entry(config, "ancient", date="0001-01-01T00:00:00+00:00")
    store_entry(config, "far", date="9999-12-31T23:59:59-05:00")
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        loaded = load_all(config, now=NOW)
    assert [p.slug for p in loaded.posts if p.path.startswith("feed:")] == ["partner-good"]
    warnings = sorted(r.getMessage() for r in caplog.records if r.name == "pipeline.store.feed_entries")
    assert warnings == [
        "feed partner: stored entry partner-ancient is dated 0001-01-01T00:00:00+00:00, outside "
        "1970-2200; skipped",
        "feed partner: stored entry partner-far is dated 9999-12-31T23:59:59-05:00, outside "
        "1970-2200; skipped"]


def test_run_once_and_check_go_on_past_a_stored_feed_entry_dated_year_1(project, run_cli):
    config = with_sources(project, FEED)
    store_entry(config, "good", date=(NOW - timedelta(hours=1)).isoformat())
    store_entry(config, "ancient", date="0001-01-01T00:00:00+00:00")
    for command in (["run", "--once", "--dry-run"], ["check"], ["schedule"]):
        result = run_cli(*command, cwd=project)
        assert result.returncode == 0, (command, result.stderr)
        assert "Traceback" not in result.stderr
        [line] = _lines_naming(result.stderr, "partner-ancient")       # logged once per run
        assert line.endswith("WARNING pipeline.store.feed_entries: feed partner: stored entry "
                             "partner-ancient is dated 0001-01-01T00:00:00+00:00, outside 1970-2200; skipped")
    assert cross_posted(project) == ["partner-good"]      # the newest article: the good entry


def test_stored_feed_entry_linking_javascript_is_skipped(project, caplog):
    config = with_sources(project, FEED)
    store_entry(config, "js", date="2026-01-05T10:00:00+00:00", canonical_url="javascript:alert(1)")
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        assert not [p for p in load_all(config, now=NOW).posts if p.path.startswith("feed:")]
    assert ("feed partner: stored entry partner-js links to 'javascript:alert(1)', not an http(s) URL; "
            "skipped") in caplog.messages


def test_digest_after_a_stored_run_dated_year_1_covers_the_week_before(project):
    path = project / "config.yaml"
    path.write_text(path.read_text(encoding="utf-8") + 'schedule:\n  - {name: weekly, channels: [outbox], '
                    'cron: "0 9 * * mon", edition: digest}\n', encoding="utf-8")
    config = load_config(path)
    [entry] = config.schedule
    subscribers.upsert(engine_for(config), "ada@example.com", "Ada")
    record_run(engine_for(config), "weekly", datetime(1, 1, 1, tzinfo=UTC), "ran")
    monday = datetime(2024, 5, 20, 13, tzinfo=UTC)      # 09:00 in New York; a post is dated that day
    [report] = run_entry(config, entry, monday, now=monday)
    assert (report.sent, report.error) == (1, None)
    assert digested(engine_for(config), "outbox") == {"mood-journal"}


# -- 13. one slug or canonical URL, two sources ----------------------------------------------

def test_check_warns_when_a_feed_entry_has_the_slug_of_a_post_naming_both(project, run_cli):
    config = with_sources(project, FEED)
    path = store_entry(config, "dup", date="2026-01-05T10:00:00+00:00", slug="mood-journal")
    result = run_cli("check", cwd=project)
    assert result.returncode == 0, result.stderr
    assert _lines_naming(result.stderr, "mood-journal") == [
        f"warning: {path}: slug 'mood-journal' is also the slug of "
        "posts/2024-05-20-mood-journal-spreadsheet.md; this entry is not sent"]
    assert "(1 warning(s))" in result.stdout
    strict = run_cli("check", "--strict", cwd=project)
    assert strict.returncode == 1


def test_check_warns_when_two_posts_share_a_canonical_url_naming_both(project, write_post, run_cli):
    for name in ("a-first.md", "b-second.md"):
        write_post(name, f"---\ntitle: {name}\ndate: 2024-01-0{len(name) % 5 + 1}\n"
                         "canonical_url: https://medium.com/@rtr/the-article\n---\n\nBody.\n")
    result = run_cli("check", cwd=project)
    assert result.returncode == 0, result.stderr
    assert _lines_naming(result.stderr, "canonical URL") == [
        "warning: posts/b-second.md: canonical URL https://medium.com/@rtr/the-article is also that of "
        "posts/a-first.md; both are sent: set a different `canonical_url:` or drop one"]


def test_check_warns_when_a_feed_entry_has_the_canonical_url_of_a_post(project, write_post, run_cli):
    write_post("syndicated.md", "---\ntitle: Syndicated\ndate: 2024-01-01\n"
                                "canonical_url: https://partner.example/shared/\n---\n\nBody.\n")
    config = with_sources(project, FEED)
    # The same page written another way: host case, no trailing slash, a fragment.
    path = store_entry(config, "shared", date="2026-01-05T10:00:00+00:00",
                       canonical_url="https://Partner.Example/shared#top")
    result = run_cli("check", cwd=project)
    assert result.returncode == 0, result.stderr
    assert _lines_naming(result.stderr, "canonical URL") == [
        f"warning: {path}: canonical URL https://Partner.Example/shared#top is also that of "
        "posts/syndicated.md; both are sent: set a different `canonical_url:` or drop one"]


def test_a_draft_sharing_a_canonical_url_is_not_a_warning(config, write_post):
    for name, draft in (("a.md", "false"), ("b.md", "true")):
        write_post(name, f"---\ntitle: {name}\ndate: 2024-01-01\ndraft: {draft}\n"
                         "canonical_url: https://medium.com/@rtr/x\n---\n\nBody.\n")
    assert load_all(config).problems == ()
