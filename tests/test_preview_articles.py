"""`pipeline preview` shows what will go out: the posts and the feed entries ready to be sent
(with how many are still settling), `--posts-only` the posts alone; `posts/` is read once."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import update

from pipeline.config import load_config
from pipeline.preview import load_articles
from pipeline.store.engine import engine_for
from pipeline.store.schema import feed_entries
from tests.feed_server import with_sources
from tests.test_sources_check import FEED, SHIPPED, store_entry


def _feed_project(project):
    config = with_sources(project, {**FEED, "settle": "1h"})
    store_entry(config, "ready", date="2024-05-01T10:00:00+00:00")
    store_entry(config, "fresh", date="2024-05-02T10:00:00+00:00")
    with engine_for(config).begin() as conn:      # edited just now: settles in an hour
        conn.execute(update(feed_entries).where(feed_entries.c.entry_id == "fresh")
                     .values(changed_at=datetime.now(UTC)))
    return config


def test_preview_writes_feed_entries_ready_to_go_and_counts_those_settling(project, run_cli, tmp_path):
    _feed_project(project)
    result = run_cli("preview", "--out", tmp_path / "out", cwd=project)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted([*SHIPPED, "partner-ready"])
    email = (tmp_path / "out" / "partner-ready" / "email.txt").read_text(encoding="utf-8")
    assert "Body of ready." in email and "https://partner.example/ready/" in email
    assert "1 feed entry is still settling" in result.stdout


def test_preview_posts_only_leaves_feed_entries_out(project, run_cli, tmp_path):
    _feed_project(project)
    result = run_cli("preview", "--posts-only", "--out", tmp_path / "out", cwd=project)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(SHIPPED)
    assert "settling" not in result.stdout


def test_the_atom_feed_lists_the_posts_only(project, run_cli):
    _feed_project(project)
    assert run_cli("preview", cwd=project).returncode == 0
    feed = (project / "out" / "feed.xml").read_text(encoding="utf-8")
    assert "partner.example" not in feed and "mood-journal" in feed


def test_load_articles_reads_the_posts_folder_once(project, monkeypatch):
    """The preview and the Atom feed share one reading of `posts/`."""
    import pipeline.intake.posts as posts

    config = load_config(_feed_project(project).source)
    calls = []
    real = posts.load_post
    monkeypatch.setattr(posts, "load_post", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    articles = load_articles(config)
    assert sorted(p.name for p in calls) == sorted(p.name for p in (project / "posts").iterdir())
    assert {p.slug for p in articles.local} == set(SHIPPED)
    assert {p.slug for p in articles.loaded.posts} == {*SHIPPED, "partner-ready"}
    assert articles.settling == 1
