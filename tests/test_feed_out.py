"""`pipeline build-feed` (and `preview`): the Atom feed of the posts, read back with feedparser
and checked element by element as Atom 1.0."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import feedparser
import pytest

from pipeline.config import load_config
from pipeline.errors import ConfigError
from pipeline.feed_out import build_feed, feed_posts
from tests.conftest import SEED_SLUG

ATOM = "{http://www.w3.org/2005/Atom}"
SITE = "https://www.rtrwellnesscenter.com"
NEWEST_FIRST = [f"{SITE}/mood-journal/", f"{SITE}/2024-03-12-your-first-infusion/", SITE]


@pytest.fixture
def built(project, run_cli, tmp_path):
    """`build-feed --out FILE` on the shipped project: (result, the file's bytes)."""
    target = tmp_path / "site" / "feed.xml"
    result = run_cli("build-feed", "--out", target, cwd=project)
    assert result.returncode == 0, result.stderr
    return result, target.read_bytes()


def test_build_feed_lists_the_posts_newest_first_with_canonical_links(built):
    result, data = built
    assert "Wrote the Atom feed (3 entries) to" in result.stdout
    feed = feedparser.parse(data)
    assert (feed.bozo, feed.version) == (False, "atom10")
    assert [e.link for e in feed.entries] == NEWEST_FIRST
    dates = [e.published_parsed for e in feed.entries]
    assert dates == sorted(dates, reverse=True)
    assert feed.feed.title == "RTR Wellness Center"
    assert {(lk.rel, lk.href) for lk in feed.feed.links} == {("alternate", f"{SITE}/"),
                                                              ("self", f"{SITE}/feed.xml")}
    seed = feed.entries[2]
    assert seed.id == f"tag:www.rtrwellnesscenter.com,2020:{SEED_SLUG}"
    assert seed.title == "Ketamine’s Potential Ability to Heal Neurological Damage"
    assert seed.content[0].type == "text/html" and "<p>" in seed.content[0].value
    assert seed.summary


def test_build_feed_is_well_formed_atom_with_the_required_elements(built):
    _, data = built
    root = ET.fromstring(data)
    assert root.tag == f"{ATOM}feed"
    for required in ("id", "title", "updated", "author"):
        assert root.find(f"{ATOM}{required}") is not None, required
    assert root.findtext(f"{ATOM}updated") == "2024-05-20T00:00:00-04:00"       # the newest post
    entries = root.findall(f"{ATOM}entry")
    assert len(entries) == 3
    for entry in entries:
        for required in ("id", "title", "updated", "published", "author/{ns}name", "summary", "content"):
            assert entry.find(f"{ATOM}{required}".replace("{ns}", ATOM)) is not None, required
        [link] = entry.findall(f"{ATOM}link")
        assert (link.get("rel"), link.get("type")) == ("alternate", "text/html")
        assert entry.find(f"{ATOM}content").get("type") == "html"
    terms = [c.get("term") for c in entries[1].findall(f"{ATOM}category")]
    assert terms and all(terms)


def test_drafts_future_posts_and_the_limit_are_respected(project, write_post):
    write_post("draft.md", "---\ntitle: Draft\ndate: 2024-06-01\ndraft: true\n---\nBody.\n")
    write_post("later.md", "---\ntitle: Later\ndate: 2099-01-01\n---\nBody.\n")
    cfg = project / "config.yaml"
    text = cfg.read_text(encoding="utf-8")
    cfg.write_text(text.replace("\nchannels:\n", "\nfeed: {limit: 2}\n\nchannels:\n"), encoding="utf-8")
    config = load_config(cfg)
    posts = feed_posts(config, now=datetime(2025, 1, 1, tzinfo=UTC))
    assert [p.canonical_url for p in posts] == NEWEST_FIRST[:2]
    assert [e.title for e in feedparser.parse(build_feed(config, posts)).entries] == [p.title for p in posts]


def test_build_feed_writes_out_feed_xml_by_default_and_preview_writes_it_too(project, run_cli, tmp_path):
    result = run_cli("build-feed", cwd=project)
    assert result.returncode == 0, result.stderr
    written = project / "out" / "feed.xml"
    assert len(feedparser.parse(written.read_bytes()).entries) == 3
    written.unlink()
    previewed = run_cli("preview", cwd=project)
    assert previewed.returncode == 0, previewed.stderr
    assert feedparser.parse(written.read_bytes()).entries[0].link == NEWEST_FIRST[0]
    assert "Wrote the Atom feed (3 entries) to" in previewed.stdout




def test_feed_settings_are_validated(project):
    cfg = project / "config.yaml"
    cfg.write_text(cfg.read_text(encoding="utf-8").replace(
        "\nchannels:\n", "\nfeed: {url: /feed.xml, limit: 0}\n\nchannels:\n"), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    lines = str(info.value).splitlines()
    assert any(": feed.url: must be an absolute http(s) URL" in line for line in lines)
    assert any(": feed.limit: Input should be greater than 0 (got 0)" in line for line in lines)
