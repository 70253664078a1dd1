"""RSS/Atom intake against a real local HTTP server: entries to Posts, conditional GET, baseline,
backfill, settle time, edited entries, filters, the flood guard, bad feeds, config errors and the
`pipeline fetch` command."""

from __future__ import annotations

import json
import re
import socket
import ssl
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from html import escape
from pathlib import Path

import pytest
import trustme
from pytest_httpserver import HTTPServer
from sqlalchemy import select
from werkzeug import Response

from pipeline.config import load_config
from pipeline.errors import ConfigError
from pipeline.fields import date_in_range
from pipeline.intake import feed_http
from pipeline.intake.feeds import fetch_all
from pipeline.intake.sources import load_all
from pipeline.render.links import footer
from pipeline.store.engine import engine_for
from pipeline.store.feed_entries import ready_posts
from pipeline.store.schema import feeds as feeds_table
from pipeline.timetable.schedule import run_entry
from tests.feed_server import ATOM_TYPE, DripServer, FeedServer, Network, item, rss, with_sources

pytestmark = pytest.mark.state_backends     # each test on SQLite and on PostgreSQL

T0 = datetime(2026, 6, 4, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


@pytest.fixture
def server(httpserver_ipv4: HTTPServer) -> Iterator[FeedServer]:
    yield FeedServer(httpserver_ipv4)


def titles(config, now: datetime) -> list[str]:  # type: ignore[no-untyped-def]
    """Titles of the feed entries ready by `now`, newest first."""
    return [p.title for p in sorted(ready_posts(config, now=now), key=lambda p: p.date, reverse=True)]


# -- entries -> posts ---------------------------------------------------------------------------

def test_rss_entries_become_posts_with_every_field(project, server):
    url = server.fixture("/blog.xml", "blog.rss.xml")
    config = with_sources(project, {"name": "partner", "url": url, "backfill": 10, "settle": "0m",
                                    "tags": ["Partners"], "author": "Partner Clinic"})
    [report] = fetch_all(config, now=T0)
    assert (report.status, report.new, report.baseline, report.error) == ("ok", 3, 0, None)
    posts = {p.title: p for p in ready_posts(config, now=T0)}
    assert set(posts) == {"Sleep & recovery: what the studies say", "Visiting hours change in July",
                          "Welcome to the new blog"}
    sleep = posts["Sleep & recovery: what the studies say"]
    assert sleep.canonical_url == "https://partner.example/blog/sleep-and-recovery/"
    assert sleep.date == datetime(2026, 6, 2, 12, 30, tzinfo=UTC)
    assert sleep.author == "Dr. Ines Moreau"
    assert sleep.tags == ("Partners", "Research", "Sleep")
    assert sleep.image == "https://partner.example/media/sleep.jpg"
    assert sleep.summary == "Three new studies on sleep after treatment, summarized."
    assert sleep.path == "feed:partner:partner-post-103"
    assert re.fullmatch(r"partner-sleep-recovery-what-the-studies-say-[0-9a-f]{8}", sleep.slug)
    # Sanitized, and relative links resolved against the entry's own link.
    assert '<a href="https://partner.example/blog/glossary/#rem">REM sleep</a>' in sleep.body_html
    assert 'src="https://partner.example/blog/sleep-and-recovery/images/chart.png"' in sleep.body_html
    for unsafe in ("<script", "alert(", "onclick", "javascript:"):
        assert unsafe not in sleep.body_html
    assert sleep.body_markdown == sleep.body_html
    hours = posts["Visiting hours change in July"]
    assert (hours.author, hours.tags) == ("Front Desk", ("Partners", "News"))
    assert hours.image == "https://partner.example/media/hours-thumb.png"
    assert hours.body_html == "<p>From July 1 the clinic opens at 8 am on weekdays.</p>"
    assert hours.summary is None            # no content apart from the summary: it is the body
    welcome = posts["Welcome to the new blog"]
    assert (welcome.author, welcome.image) == ("Partner Clinic", None)


def test_atom_entries_become_posts(project, server):
    url = server.fixture("/atom.xml", "news.atom.xml", content_type=ATOM_TYPE)
    config = with_sources(project, {"name": "research", "url": url, "backfill": 5, "settle": "0m"})
    assert [r.new for r in fetch_all(config, now=T0)] == [2]
    plasticity, dosage = sorted(ready_posts(config, now=T0), key=lambda p: p.date, reverse=True)
    assert plasticity.title == "Ketamine and neuroplasticity"
    assert plasticity.canonical_url == "https://research.example/2026/06/neuroplasticity"
    assert plasticity.date == datetime(2026, 6, 3, 13, 0, tzinfo=UTC)     # published, not updated
    assert (plasticity.author, plasticity.tags) == ("Sam Lee", ("Neuroscience", "ketamine"))
    assert plasticity.image == "https://research.example/img/neurons.jpg"
    assert plasticity.summary == "How a single dose may help the brain rewire."
    assert plasticity.body_html == ('<h2>Background</h2><p>See <a href="https://research.example/2026/'
                                    'methods">our methods</a>.</p>')
    assert dosage.date == datetime(2026, 5, 20, 12, 0, tzinfo=UTC)        # only <updated>
    assert dosage.author == "Research Desk"                                # the feed's author
    assert dosage.body_html == "<p>Dosage is set by your physician.</p><p>Never adjust it yourself.</p>"


def test_feed_entry_footer_names_the_site_it_was_published_on(project, server):
    url = server.fixture("/blog.xml", "blog.rss.xml")
    config = with_sources(project, {"name": "partner", "url": url, "backfill": 1, "settle": "0m"})
    fetch_all(config, now=T0)
    [post] = ready_posts(config, now=T0)
    foot = footer(post, config)
    assert foot.text == ("Originally published at https://partner.example/blog/sleep-and-recovery/ "
                         "on June 2, 2026.")
    assert '<a href="https://partner.example/blog/sleep-and-recovery/">partner.example</a>' in foot.html


@pytest.mark.parametrize(("name", "count", "first_title"), [
    ("real-hugo.rss.xml", 8, "Python Basics"),
    ("real-jekyll-fastpages.atom.xml", 3, "Supreme Court Data"),
])
def test_real_world_feeds_parse_into_posts(project, server, name, count, first_title):
    url = server.fixture("/site/index.xml", name)
    config = with_sources(project, {"name": "real", "url": url, "backfill": 100, "settle": "0m",
                                    "author": "Fallback Author"})
    [report] = fetch_all(config, now=T0)
    assert (report.status, report.new, report.warnings) == ("ok", count, ())
    posts = sorted(ready_posts(config, now=T0), key=lambda p: p.date, reverse=True)
    assert len(posts) == count and posts[0].title == first_title
    assert all(p.canonical_url.startswith(("http://", "https://")) and p.body_html for p in posts)
    assert len({p.slug for p in posts}) == count


def test_real_world_hugo_feed_with_relative_links_resolves_them_against_the_feed_url(project, server):
    url = server.fixture("/site/index.xml", "real-hugo.rss.xml")
    config = with_sources(project, {"name": "hugo", "url": url, "backfill": 100, "settle": "0m"})
    fetch_all(config, now=T0)
    newest = max(ready_posts(config, now=T0), key=lambda p: p.date)
    assert newest.canonical_url == server.url("/articles/python_cheatsheet/")
    assert newest.date == datetime(2023, 4, 18, 5, 0, tzinfo=UTC)


def test_real_world_jekyll_feed_keeps_authors_categories_and_media_images(project, server):
    url = server.fixture("/feed.xml", "real-jekyll-fastpages.atom.xml", content_type=ATOM_TYPE)
    config = with_sources(project, {"name": "fastpages", "url": url, "backfill": 100, "settle": "0m",
                                    "author": "Fallback Author"})
    fetch_all(config, now=T0)
    posts = {p.title: p for p in ready_posts(config, now=T0)}
    court = posts["Supreme Court Data"]
    assert (court.author, court.tags) == ("Lily Kohn", ("fastpages", "jupyter"))
    notebook = posts["Fastpages Notebook Blog Post"]
    assert notebook.author == "Fallback Author"                   # <name></name> is no author
    assert notebook.image == "https://lilykohn.github.io/testblog/images/chart-preview.png"
    assert notebook.body_html == "<p>A tutorial of fastpages for Jupyter notebooks.</p>"


def test_a_plain_text_title_keeps_its_angle_brackets_and_an_email_address_alone_is_no_author(project, server):
    url = server.put("/f.xml", rss(item("t", title="Using <div> & <span> well", date=T0)).replace(
        "</guid>", "</guid><author>someone@blog.example</author>"))
    config = with_sources(project, {"name": "blog", "url": url, "backfill": 1, "settle": "0m"})
    fetch_all(config, now=T0)
    [post] = ready_posts(config, now=T0)
    assert (post.title, post.author) == ("Using <div> & <span> well", None)


# -- baseline, backfill, settle, edits ----------------------------------------------------------

def test_first_fetch_is_a_baseline_and_later_entries_are_new(project, server):
    url = server.put("/f.xml", rss(item("b", date=T0 - 24 * HOUR), item("a", date=T0 - 48 * HOUR)))
    config = with_sources(project, {"name": "blog", "url": url, "settle": "0m"})
    [first] = fetch_all(config, now=T0)
    assert (first.new, first.baseline) == (0, 2)
    assert titles(config, T0 + timedelta(days=30)) == []
    server.put("/f.xml", rss(item("c", date=T0 + HOUR), item("b", date=T0 - 24 * HOUR),
                             item("a", date=T0 - 48 * HOUR)))
    [second] = fetch_all(config, now=T0 + 2 * HOUR)
    assert (second.new, second.baseline, second.updated) == (1, 0, 0)
    assert titles(config, T0 + 2 * HOUR) == ["Post c"]


def test_backfill_sends_the_newest_n_of_the_first_fetch(project, server):
    keys = "edcba"
    url = server.put("/f.xml", rss(*(item(k, date=T0 - (i + 1) * HOUR) for i, k in enumerate(keys))))
    config = with_sources(project, {"name": "blog", "url": url, "backfill": 2, "settle": "0m"})
    [report] = fetch_all(config, now=T0)
    assert (report.new, report.baseline) == (2, 3)
    assert titles(config, T0) == ["Post e", "Post d"]


def test_an_entry_without_a_date_is_dated_when_first_seen_and_keeps_that_date(project, server):
    url = server.put("/f.xml", rss(item("undated")))
    config = with_sources(project, {"name": "blog", "url": url, "backfill": 1, "settle": "0m"})
    fetch_all(config, now=T0)
    [again] = fetch_all(config, now=T0 + HOUR)
    assert again.updated == 0
    [post] = ready_posts(config, now=T0 + HOUR)
    assert post.date == T0


def test_settle_time_holds_a_changing_entry_until_it_is_quiet(project, server):
    url = server.put("/f.xml", rss(item("a", date=T0 - HOUR)))
    config = with_sources(project, {"name": "blog", "url": url, "settle": "30m"})
    fetch_all(config, now=T0)
    published = T0 + HOUR
    server.put("/f.xml", rss(item("b", date=published, body="<p>First draft.</p>"),
                             item("a", date=T0 - HOUR)))
    [seen] = fetch_all(config, now=published + timedelta(minutes=1))
    assert (seen.new, seen.held) == (1, 1)
    assert titles(config, published + timedelta(minutes=20)) == []
    server.put("/f.xml", rss(item("b", date=published, title="Post b, fixed", body="<p>Final.</p>"),
                             item("a", date=T0 - HOUR)))
    edited_at = published + timedelta(minutes=25)
    [edit] = fetch_all(config, now=edited_at)
    assert (edit.new, edit.updated, edit.held) == (0, 1, 1)
    assert titles(config, edited_at + timedelta(minutes=29)) == []       # settle counts from the edit
    ready = ready_posts(config, now=edited_at + timedelta(minutes=30))
    assert [(p.title, p.body_html) for p in ready] == [("Post b, fixed", "<p>Final.</p>")]
    assert ready[0].available_at == edited_at + timedelta(minutes=30)


def test_an_edited_entry_updates_the_stored_copy_and_is_not_sent_again(project, server):
    url = server.put("/f.xml", rss(item("a", date=T0 - HOUR)))
    config = with_sources(project, {"name": "blog", "url": url, "settle": "0m"})
    fetch_all(config, now=T0)
    server.put("/f.xml", rss(item("b", date=T0 + HOUR), item("a", date=T0 - HOUR)))
    fetch_all(config, now=T0 + 2 * HOUR)
    latest = next(e for e in config.schedule if e.edition == "latest")
    [report] = run_entry(config, latest, T0 + 2 * HOUR, now=T0 + 2 * HOUR)
    assert report.sent == 4                                  # three snippets and the article
    social = project / "out" / "outbox" / "social.jsonl"
    lines = social.read_text(encoding="utf-8").splitlines()
    [slug] = {json.loads(line)["post"] for line in lines}
    server.put("/f.xml", rss(item("b", date=T0 + HOUR, title="Post b (updated)", body="<p>New.</p>"),
                             item("a", date=T0 - HOUR)))
    [edit] = fetch_all(config, now=T0 + 3 * HOUR)
    assert edit.updated == 1
    [stored] = ready_posts(config, now=T0 + 3 * HOUR)
    assert (stored.slug, stored.title, stored.body_html) == (slug, "Post b (updated)", "<p>New.</p>")
    assert run_entry(config, latest, T0 + 3 * HOUR, now=T0 + 3 * HOUR) == []
    assert social.read_text(encoding="utf-8").splitlines() == lines


# -- conditional GET ----------------------------------------------------------------------------

def test_conditional_get_sends_the_validators_back_and_a_304_changes_nothing(project, server):
    modified = "Wed, 03 Jun 2026 10:00:00 GMT"
    url = server.fixture("/blog.xml", "blog.rss.xml", etag='"v1"', last_modified=modified)
    config = with_sources(project, {"name": "partner", "url": url})
    [first] = fetch_all(config, now=T0)
    [second] = fetch_all(config, now=T0 + HOUR)
    assert (first.status, second.status) == ("ok", "not-modified")
    assert (second.new, second.baseline, second.updated) == (0, 0, 0)
    plain, conditional = server.requests_to("/blog.xml")
    assert "If-None-Match" not in plain and "If-Modified-Since" not in plain
    assert conditional["If-None-Match"] == '"v1"'
    assert conditional["If-Modified-Since"] == modified
    assert conditional["User-Agent"].startswith("pipeline/")
    server.put("/blog.xml", rss(item("fresh", date=T0 + HOUR)), etag='"v2"')
    [third] = fetch_all(config, now=T0 + 2 * HOUR)
    assert (third.status, third.new) == ("ok", 1)
    with engine_for(config).connect() as conn:
        row = conn.execute(select(feeds_table).where(feeds_table.c.name == "partner")).one()
    assert (row.etag, row.last_modified, row.last_status) == ('"v2"', None, "ok")


def test_redirects_are_followed(project, server):
    old = server.redirect("/old.xml", server.fixture("/new/feed.xml", "blog.rss.xml"))
    config = with_sources(project, {"name": "moved", "url": old})
    [report] = fetch_all(config, now=T0)
    assert (report.status, report.baseline) == ("ok", 3)
    assert [p for p, _ in server.requests] == ["/old.xml", "/new/feed.xml"]


def test_a_redirect_loop_is_reported(project, server):
    server.redirect("/a.xml", server.url("/b.xml"))
    config = with_sources(project, {"name": "loop", "url": server.redirect("/b.xml", server.url("/a.xml"))})
    [report] = fetch_all(config, now=T0)
    assert report.error == "more than 5 redirects"


# -- filters and the flood guard ----------------------------------------------------------------

def test_include_and_exclude_patterns_match_title_or_category(project, server):
    url = server.put("/f.xml", rss(
        item("r1", title="Release 1.0", date=T0 - HOUR),
        item("w", title="Weekly notes", categories=("SECURITY",), date=T0 - 2 * HOUR),
        item("r2", title="Release draft notes", date=T0 - 3 * HOUR),
        item("x", title="Random thoughts", categories=("Life",), date=T0 - 4 * HOUR)))
    config = with_sources(project, {"name": "blog", "url": url, "backfill": 10, "settle": "0m",
                                    "include": ["^release", "security"], "exclude": ["draft"]})
    [report] = fetch_all(config, now=T0)
    assert (report.new, report.filtered, report.baseline) == (2, 2, 0)
    assert titles(config, T0) == ["Release 1.0", "Weekly notes"]


def test_a_feed_suddenly_listing_500_old_entries_sends_none_and_warns(project, server):
    recent = [item("b", date=T0 - HOUR), item("a", date=T0 - 2 * HOUR)]
    url = server.put("/f.xml", rss(*recent))
    config = with_sources(project, {"name": "blog", "url": url, "settle": "0m"})
    fetch_all(config, now=T0)
    archive = [item(f"old-{i}", date=datetime(2015, 1, 1, tzinfo=UTC) + i * HOUR) for i in range(500)]
    server.put("/f.xml", rss(*recent, *archive))
    [report] = fetch_all(config, now=T0 + HOUR)
    assert (report.status, report.new, report.skipped) == ("ok", 0, 500)
    assert report.warnings == ("500 unseen entries are dated before this feed was first fetched "
                               "(an archive re-listed?); marked seen, not sent",)
    assert titles(config, T0 + timedelta(days=30)) == []
    [again] = fetch_all(config, now=T0 + 2 * HOUR)          # seen now: no warning the next time
    assert (again.skipped, again.warnings) == (0, ())


def test_more_new_entries_than_max_new_keeps_the_newest(project, server):
    url = server.put("/f.xml", rss(item("a", date=T0 - HOUR)))
    config = with_sources(project, {"name": "blog", "url": url, "settle": "0m", "max_new": 5})
    fetch_all(config, now=T0)
    fresh = [item(f"n{i}", date=T0 + i * timedelta(minutes=1)) for i in range(8, 0, -1)]
    server.put("/f.xml", rss(*fresh, item("a", date=T0 - HOUR)))
    [report] = fetch_all(config, now=T0 + HOUR)
    assert (report.new, report.skipped) == (5, 3)
    assert "8 new entries in one fetch, more than max_new (5)" in report.warnings[0]
    assert titles(config, T0 + HOUR) == [f"Post n{i}" for i in range(8, 3, -1)]


# -- bad feeds ----------------------------------------------------------------------------------

def test_bad_feeds_are_reported_per_feed_and_the_others_go_on(project, server):
    config = with_sources(
        project,
        {"name": "broken", "url": server.fixture("/broken.xml", "malformed.xml")},
        {"name": "home", "url": server.fixture("/", "not-a-feed.html", content_type="text/html")},
        {"name": "down", "url": server.put("/down.xml", "", status=500)},
        {"name": "gone", "url": server.url("/missing.xml")},
        {"name": "partner", "url": server.fixture("/blog.xml", "blog.rss.xml")})
    reports = {r.name: r for r in fetch_all(config, now=T0)}
    assert reports["broken"].error.startswith("malformed XML (")
    assert reports["broken"].error.endswith("); no entry could be read")
    assert reports["home"].error == "not an RSS or Atom feed (got a page that is not a feed)"
    assert reports["down"].error == "HTTP 500 Internal Server Error"
    assert reports["gone"].error == "HTTP 404 Not Found"
    assert (reports["partner"].status, reports["partner"].baseline) == ("ok", 3)
    assert [r.failed for r in reports.values()] == [True, True, True, True, False]
    with engine_for(config).connect() as conn:
        rows = {r.name: r for r in conn.execute(select(feeds_table))}
    assert rows["down"].last_error == "HTTP 500 Internal Server Error"
    assert rows["down"].baseline_at is None                  # the baseline waits for a good fetch


def test_a_server_error_after_the_baseline_keeps_what_is_stored(project, server):
    url = server.put("/f.xml", rss(item("a", date=T0 - HOUR)), etag='"v1"')
    config = with_sources(project, {"name": "blog", "url": url, "backfill": 1, "settle": "0m"})
    fetch_all(config, now=T0)
    server.put("/f.xml", "", status=503)
    [report] = fetch_all(config, now=T0 + HOUR)
    assert report.error == "HTTP 503 Service Unavailable"
    assert titles(config, T0 + HOUR) == ["Post a"]
    with engine_for(config).connect() as conn:
        assert conn.execute(select(feeds_table.c.etag)).scalar() == '"v1"'


def test_a_timeout_is_reported(project):
    with socket.socket() as silent:                  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/feed.xml"
        config = with_sources(project, {"name": "slow", "url": url, "timeout": 0.3})
        [report] = fetch_all(config, now=T0)
    assert report.error == "timed out after 0.3s (raise `timeout:` if the server is slow)"


def test_a_refused_connection_is_reported(project):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]                 # closed again: nothing listens there
    config = with_sources(project, {"name": "nobody", "url": f"http://127.0.0.1:{port}/feed.xml"})
    [report] = fetch_all(config, now=T0)
    assert report.failed and report.error.startswith("cannot fetch (ConnectError: ")


# -- config -------------------------------------------------------------------------------------

def _bad(project: Path, feed: dict[str, object], *more: dict[str, object]) -> tuple[str, str, int]:
    """Write the sources, load the config; returns (message, config path, line of `feed`)."""
    cfg = project / "config.yaml"
    with pytest.raises(ConfigError) as info:
        with_sources(project, feed, *more)
    lines = cfg.read_text(encoding="utf-8").splitlines()
    line = next(n for n, text in enumerate(lines, 1) if json.dumps({"type": "feed", **feed}) in text)
    return str(info.value), str(cfg), line


@pytest.mark.parametrize(("feed", "key", "expected"), [
    ({"url": "https://x.example/f.xml"}, "sources.1.name", "entry '#2': required key is missing"),
    ({"name": "blog", "url": "ftp://x.example/f"}, "sources.1.url",
     "entry 'blog': must be an absolute http(s) URL, e.g. https://example.com/feed.xml (got 'ftp://x.example/f')"),
    ({"name": "blog", "url": "https://x.example/f", "include": ["("]}, "sources.1.include",
     "entry 'blog': '(' is not a regular expression (missing ), "),
    ({"name": "blog", "url": "https://x.example/f", "settle": "soon"}, "sources.1.settle",
     "entry 'blog': 'soon' is not a duration; write e.g. 90s, 15m, 6h, 1h30m, 2d or 1w (got 'soon')"),
    ({"name": "blog", "url": "https://x.example/f", "backfil": 3}, "sources.1.backfil",
     "entry 'blog': unknown key; remove it or check its spelling (see README, config reference)"),
    ({"name": "blog", "url": "https://x.example/f", "max_new": 0}, "sources.1.max_new",
     "entry 'blog': Input should be greater than or equal to 1 (got 0)"),
    ({"name": "my blog", "url": "https://x.example/f"}, "sources.1.name",
     "must be 1-40 letters, digits, - or _ starting with a letter or digit (it becomes part of each entry's "
     "slug), e.g. partner-blog (got 'my blog')"),
])
def test_bad_feed_config_names_file_line_and_key(project, feed, key, expected):
    message, cfg, line = _bad(project, feed)
    assert "\n" not in message
    assert message.startswith(f"{cfg}:{line}: {key}: {expected}")


def test_unknown_source_type_and_duplicate_names_are_errors(project):
    cfg = project / "config.yaml"
    original = cfg.read_text(encoding="utf-8")
    cfg.write_text(original.replace("\nchannels:\n", "\nsources:\n  - {type: rss, url: https://x/f}\n"
                                    "\nchannels:\n"), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"sources\.0: entry '#1': needs `type: posts` \(the posts "
                                          r"folder\) or `type: feed`"):
        load_config(cfg)
    cfg.write_text(original, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"config.yaml:\d+: sources: two feeds are named 'Blog'"):
        with_sources(project, {"name": "blog", "url": "https://a.example/f"},
                     {"name": "Blog", "url": "https://b.example/f"})


def test_default_sources_are_the_posts_folder(config):
    assert [s.type for s in config.sources] == ["posts"] and config.feeds == []


# -- the CLI ------------------------------------------------------------------------------------

def _row(stdout: str, name: str) -> list[str]:
    line = next(line for line in stdout.splitlines() if f" {name} " in line)
    return [cell.strip() for cell in line.strip().strip("│").split("│")]


def test_cli_fetch_prints_a_row_per_feed_and_exits_1_when_one_failed(project, server, run_cli):
    with_sources(project, {"name": "partner", "url": server.fixture("/blog.xml", "blog.rss.xml")},
                 {"name": "down", "url": server.put("/down.xml", "", status=503)})
    result = run_cli("fetch", cwd=project)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert _row(result.stdout, "partner") == ["partner", "ok", "0", "0", "3", "0", ""]
    assert _row(result.stdout, "down") == ["down", "error", "0", "0", "0", "0",
                                           "HTTP 503 Service Unavailable"]
    assert f"error: feed down ({server.url('/down.xml')}): HTTP 503 Service Unavailable" in result.stderr


def test_cli_fetch_exits_0_and_shows_304_on_the_second_run(project, server, run_cli):
    url = server.fixture("/blog.xml", "blog.rss.xml", etag='"abc"')
    with_sources(project, {"name": "partner", "url": url})
    assert run_cli("fetch", cwd=project).returncode == 0
    again = run_cli("fetch", cwd=project)
    assert again.returncode == 0, again.stderr
    assert _row(again.stdout, "partner")[:2] == ["partner", "304"]


def test_cli_fetch_without_feeds_says_so(project, run_cli):
    result = run_cli("fetch", cwd=project)
    assert (result.returncode, result.stdout) == (0, "No feeds in `sources:`; nothing to fetch.\n")


# -- hostile input (#12) ------------------------------------------------------------------------

def test_entries_dated_outside_1970_to_2200_are_dated_when_first_seen_with_a_warning(project, server):
    url = server.fixture("/news.xml", "out-of-range-dates.rss.xml")
    config = with_sources(project, {"name": "news", "url": url, "backfill": 10, "settle": "0m"})
    [report] = fetch_all(config, now=T0)
    assert (report.status, report.new, report.error) == ("ok", 3, None)
    assert report.warnings == (
        "entry 1 'Dated year one': published date 0001-01-01T00:00:00+00:00 is outside 1970-2200; "
        "dated when first seen",
        "entry 2 'Dated the end of time': published date 9999-12-31T23:59:59+00:00 is outside 1970-2200; "
        "dated when first seen",
        "entry 3 'Updated past year 9999': updated date 9999-12-31T23:59:59-05:00 is outside 1970-2200; "
        "dated when first seen",
    )
    posts = ready_posts(config, now=T0)
    assert sorted((p.title, p.date) for p in posts) == [("Dated the end of time", T0), ("Dated year one", T0),
                                                        ("Updated past year 9999", T0)]
    loaded = load_all(config, now=T0)
    assert {p.title for p in loaded.posts} >= {p.title for p in posts}
    assert all(date_in_range(p.date) for p in loaded.posts)
    [again] = fetch_all(config, now=T0 + HOUR)             # stable: not an edit, same date
    assert (again.updated, [p.date for p in ready_posts(config, now=T0 + HOUR)]) == (0, [T0] * 3)


def test_a_feed_that_drips_its_answer_times_out_after_timeout_seconds_in_all(project):
    body = rss(*(item(f"k{i}", date=T0) for i in range(50))).encode()
    with DripServer(body, interval=0.05) as slow:        # the whole body would take over 20 s
        config = with_sources(project, {"name": "drip", "url": slow.url, "timeout": 1})
        started = time.monotonic()
        [report] = fetch_all(config, now=T0)
        took = time.monotonic() - started
    assert report.error == "timed out after 1s (raise `timeout:` if the server is slow)"
    assert took < 5                                       # generous: the deadline is 1 s


def test_the_timeout_covers_every_redirect_hop_together(project, server):
    def slow_hop(request):  # type: ignore[no-untyped-def]
        time.sleep(0.4)                                   # each hop well within a per-read timeout
        hop = int(request.path.rsplit("/", 1)[1])
        if hop == 3:                                      # 4 answers, 1.6 s in all
            return Response(rss(item("a", date=T0)), content_type="application/rss+xml")
        return Response("moved", status=302, headers={"Location": server.url(f"/hop/{hop + 1}")})

    server.http.clear_all_handlers()
    server.http.expect_request(re.compile(r"/hop/\d+")).respond_with_handler(slow_hop)
    config = with_sources(project, {"name": "hops", "url": server.url("/hop/0"), "timeout": 1})
    started = time.monotonic()
    [report] = fetch_all(config, now=T0)
    assert report.error == "timed out after 1s (raise `timeout:` if the server is slow)"
    assert time.monotonic() - started < 5


# -- internal addresses (SSRF) ------------------------------------------------------------------

PUBLIC = "93.184.216.34"             # what the test network says feeds.example.test is


@pytest.fixture
def network(monkeypatch: pytest.MonkeyPatch, server: FeedServer) -> Network:
    """The feeds' resolver and connector, replaced: feeds.example.test is a public-looking
    address that is really the local test server; nothing leaves 127.0.0.0/8."""
    net = Network(names={"feeds.example.test": [PUBLIC]},
                  routes={PUBLIC: ("127.0.0.1", server.http.port)})
    monkeypatch.setattr(feed_http, "resolve", net.resolve)
    monkeypatch.setattr(feed_http, "connect", net.connect)
    return net


def test_a_feed_on_an_internal_address_may_redirect_to_other_internal_addresses(project, server, network):
    network.names["intranet.test"] = ["127.0.0.1"]      # the operator's own network: their choice
    moved = server.fixture("/new/feed.xml", "blog.rss.xml")
    server.redirect("/old.xml", moved)
    config = with_sources(project,
                          {"name": "by-address", "url": server.url("/old.xml")},
                          {"name": "by-name", "url": f"http://intranet.test:{server.http.port}/old.xml"})
    reports = fetch_all(config, now=T0)
    assert [(r.status, r.baseline, r.error) for r in reports] == [("ok", 3, None)] * 2
    assert [p for p, _ in server.requests] == ["/old.xml", "/new/feed.xml"] * 2


@pytest.mark.parametrize(("target", "why"), [
    ("http://169.254.169.254/latest/meta-data", "169.254.169.254 is a link-local address"),
    ("http://127.0.0.1:{port}/secret.xml", "127.0.0.1 is a loopback address"),
    ("http://[::ffff:127.0.0.1]:{port}/secret.xml", "::ffff:127.0.0.1 is a loopback address"),
    ("http://0.0.0.0:{port}/secret.xml", "0.0.0.0 is an unspecified address"),
    ("http://internal.example.test:{port}/secret.xml",
     "internal.example.test is 10.0.0.5, a private address"),
    ("http://cgnat.example.test/secret.xml",
     "cgnat.example.test is 100.100.100.200, a non-public address"),
])
def test_a_redirect_to_an_internal_address_is_refused_and_nothing_is_fetched_from_it(
        project, server, network, target, why):
    network.names.update({"internal.example.test": ["10.0.0.5"], "cgnat.example.test": ["100.100.100.200"]})
    target = target.format(port=server.http.port)
    server.fixture("/secret.xml", "blog.rss.xml")
    server.redirect("/feed.xml", target)
    config = with_sources(project, {"name": "partner", "url": "http://feeds.example.test/feed.xml"})
    [report] = fetch_all(config, now=T0)
    assert report.error == (f"refused a redirect to {target} ({why}; a feed may reach internal "
                            "addresses only when its own url is on one)")
    assert [p for p, _ in server.requests] == ["/feed.xml"]
    assert network.connected == [(PUBLIC, 80)]            # the refused address: not even a connection
    assert ready_posts(config, now=T0 + timedelta(days=30)) == []


def test_each_connection_goes_to_the_address_that_was_checked(project, server, network):
    network.names["cdn.example.test"] = ["93.184.216.35"]
    network.routes["93.184.216.35"] = ("127.0.0.1", server.http.port)
    server.redirect("/feed.xml", "http://cdn.example.test/blog.xml")
    server.fixture("/blog.xml", "blog.rss.xml")
    config = with_sources(project, {"name": "partner", "url": "http://feeds.example.test/feed.xml"})
    [report] = fetch_all(config, now=T0)
    assert (report.status, report.baseline) == ("ok", 3)
    assert network.connected == [(PUBLIC, 80), ("93.184.216.35", 80)]
    assert [h["Host"] for _, h in server.requests] == ["feeds.example.test", "cdn.example.test"]


def test_a_name_that_turns_internal_between_lookups_is_refused(project, server, network):
    network.rebind["feeds.example.test"] = [[PUBLIC], ["127.0.0.1"]]     # DNS rebinding
    server.fixture("/feed.xml", "blog.rss.xml")
    config = with_sources(project, {"name": "partner", "url": "http://feeds.example.test/feed.xml"})
    [report] = fetch_all(config, now=T0)
    assert report.error == ("refused http://feeds.example.test/feed.xml (feeds.example.test is "
                            "127.0.0.1, a loopback address; a feed may reach internal addresses only "
                            "when its own url is on one)")
    assert network.connected == [] and server.requests == []


def test_an_https_feed_is_verified_against_its_host_name_while_connected_by_address(
        project, network, monkeypatch, tmp_path):
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("feeds.example.test").configure_cert(context)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))      # trust the test CA
    tls = HTTPServer(host="127.0.0.1", port=0, ssl_context=context)
    tls.start()
    try:
        FeedServer(tls).fixture("/feed.xml", "blog.rss.xml")
        network.names["impostor.example.test"] = ["93.184.216.36"]     # same server, not its name
        network.routes.update({PUBLIC: ("127.0.0.1", tls.port), "93.184.216.36": ("127.0.0.1", tls.port)})
        config = with_sources(project, {"name": "secure", "url": "https://feeds.example.test/feed.xml"},
                              {"name": "impostor", "url": "https://impostor.example.test/feed.xml"})
        secure, impostor = fetch_all(config, now=T0)
    finally:
        tls.stop()
    assert (secure.status, secure.baseline, secure.error) == ("ok", 3, None)
    assert impostor.error.startswith("cannot fetch (ConnectError: [SSL: CERTIFICATE_VERIFY_FAILED]")
    assert network.connected == [(PUBLIC, 443), ("93.184.216.36", 443)]


def test_a_name_that_does_not_resolve_is_reported(project, network):
    config = with_sources(project, {"name": "gone", "url": "https://gone.example.test/feed.xml"})
    [report] = fetch_all(config, now=T0)
    assert report.error == ("cannot fetch (ConnectError: cannot resolve gone.example.test (test network: "
                            "no such host 'gone.example.test'))")
    assert network.connected == []


@pytest.mark.parametrize(("addresses", "allowed"), [
    (["93.184.216.34"], True),
    (["2606:2800:220:1:248:1893:25c8:1946"], True),
    (["93.184.216.34", "10.1.2.3"], False),           # one internal address is enough to refuse
    (["127.0.0.2"], False), (["::1"], False), (["::ffff:10.0.0.1"], False),
    (["::ffff:169.254.169.254"], False), (["fe80::1"], False), (["fc00::1"], False),
    (["192.168.1.1"], False), (["172.16.0.1"], False),
    (["224.0.0.1"], False), (["ff02::1"], False), (["240.0.0.1"], False), (["255.255.255.255"], False),
    (["0.0.0.0"], False), (["::"], False), (["100.64.0.1"], False),
])
def test_check_address_refuses_every_kind_of_internal_address(addresses, allowed):
    if allowed:
        feed_http.check_address("feeds.example.test", addresses, allow_internal=False)
    else:
        with pytest.raises(feed_http.AddressRefused,
                           match=r"^feeds\.example\.test is .+, an? [a-z-]+ address$"):
            feed_http.check_address("feeds.example.test", addresses, allow_internal=False)
    feed_http.check_address("feeds.example.test", addresses, allow_internal=True)     # the operator's choice


# -- entries that are not what they claim -------------------------------------------------------

def test_entries_with_template_syntax_or_a_link_that_is_not_http_are_refused(project, server):
    def linked(key: str, link: str) -> str:
        return item(key, date=T0).replace(f"<link>https://blog.example/{key}/</link>",
                                          f"<link>{escape(link)}</link>")

    url = server.put("/f.xml", rss(
        item("fine", date=T0),
        item("braces", title="Hello {{ recipient.email }}", date=T0),
        item("tags", title="Deal {% if true %}now{% endif %}", date=T0),
        linked("in-link", "https://blog.example/{{ recipient.unsubscribe_url }}/"),
        linked("script", "javascript:alert(1)"),
        linked("mail", "mailto:someone@blog.example"),
        linked("data", "data:text/html,<p>hi</p>"),
        item("also-fine", title="Braces { alone } are fine", date=T0)))
    config = with_sources(project, {"name": "blog", "url": url, "backfill": 10, "settle": "0m"})
    [report] = fetch_all(config, now=T0)
    assert (report.status, report.new) == ("ok", 2)
    assert report.warnings == (
        "entry 2: title 'Hello {{ recipient.email }}' holds template syntax; skipped",
        "entry 3: title 'Deal {% if true %}now{% endif %}' holds template syntax; skipped",
        "entry 4: link 'https://blog.example/{{ recipient.unsubscribe_url }}/' holds template syntax; "
        "skipped",
        "entry 5: link 'javascript:alert(1)' is not an absolute http(s) URL; skipped",
        "entry 6: link 'mailto:someone@blog.example' is not an absolute http(s) URL; skipped",
        "entry 7: link 'data:text/html,<p>hi</p>' is not an absolute http(s) URL; skipped",
    )
    assert sorted(titles(config, T0)) == ["Braces { alone } are fine", "Post fine"]


# -- feeds read only leniently ------------------------------------------------------------------

def broken(document: str) -> str:
    """`document` with its first title made malformed XML (a bare &) that feedparser reads leniently."""
    return document.replace("<title>Post ", "<title>Fish & chips ", 1)


def test_new_entries_of_a_feed_read_only_leniently_wait_for_a_clean_fetch(project, server):
    url = server.put("/f.xml", rss(item("a", date=T0 - HOUR)))
    config = with_sources(project, {"name": "blog", "url": url, "settle": "0m"})
    fetch_all(config, now=T0)                                                 # baseline
    server.put("/f.xml", broken(rss(item("b", date=T0 + HOUR), item("junk", date=T0 + HOUR),
                                    item("a", date=T0 - HOUR))))
    [lenient] = fetch_all(config, now=T0 + 2 * HOUR)
    assert (lenient.status, lenient.new, lenient.held) == ("ok", 2, 2)
    malformed, held = lenient.warnings
    assert re.fullmatch(r"malformed XML \(.*not well-formed.*\); read 3 entries leniently", malformed)
    assert held == "2 new entries held until the feed parses cleanly (or set `lenient: true`)"
    assert titles(config, T0 + timedelta(days=30)) == []                     # stored, never ready
    server.put("/f.xml", rss(item("b", date=T0 + HOUR), item("a", date=T0 - HOUR)))   # fixed; junk gone
    [clean] = fetch_all(config, now=T0 + 3 * HOUR)
    assert (clean.status, clean.new, clean.held) == ("ok", 0, 0)
    assert clean.warnings == ("the feed parses cleanly again: 1 held entry released, 1 that only a "
                              "malformed document listed dropped",)
    assert titles(config, T0 + 3 * HOUR) == ["Post b"]
    latest = next(e for e in config.schedule if e.edition == "latest")
    assert [r.sent for r in run_entry(config, latest, T0 + 3 * HOUR, now=T0 + 3 * HOUR)] == [4]
    [again] = fetch_all(config, now=T0 + 4 * HOUR)
    assert (again.new, again.held, again.warnings) == (0, 0, ())
    assert titles(config, T0 + timedelta(days=30)) == ["Post b"]              # junk stays held
    assert run_entry(config, latest, T0 + 4 * HOUR, now=T0 + 4 * HOUR) == []  # sent once


def test_a_feed_read_only_leniently_does_not_edit_stored_entries(project, server):
    url = server.put("/f.xml", rss(item("a", date=T0 - HOUR)))
    config = with_sources(project, {"name": "blog", "url": url, "backfill": 1, "settle": "0m"})
    fetch_all(config, now=T0)
    server.put("/f.xml", broken(rss(item("a", date=T0 - HOUR, body="<p>Half a page</p>"))))
    [lenient] = fetch_all(config, now=T0 + HOUR)
    assert (lenient.updated, lenient.warnings[1:]) == (0, ("1 changed entry not updated until the feed "
                                                           "parses cleanly (or set `lenient: true`)",))
    assert [(p.title, p.body_html) for p in ready_posts(config, now=T0 + HOUR)] == [
        ("Post a", "<p>Body of a.</p>")]


def test_lenient_true_takes_the_entries_of_a_feed_read_only_leniently_at_once(project, server):
    url = server.put("/f.xml", rss(item("a", date=T0 - HOUR)))
    config = with_sources(project, {"name": "blog", "url": url, "settle": "0m", "lenient": True})
    fetch_all(config, now=T0)
    server.put("/f.xml", broken(rss(item("b", date=T0 + HOUR), item("a", date=T0 - HOUR))))
    [report] = fetch_all(config, now=T0 + 2 * HOUR)
    assert (report.new, report.held) == (1, 0)
    [warning] = report.warnings
    assert re.fullmatch(r"malformed XML \(.*not well-formed.*\); read 2 entries leniently", warning)
    assert titles(config, T0 + 2 * HOUR) == ["Fish & chips b"]
