"""The preview page over real HTTP (uvicorn in a thread): pages, re-rendering as files change,
broken posts, the Host and form-token guards. The browser tests are in tests/browser/."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from tests.conftest import PREVIEW_NOW, ROOT, SEED_SLUG
from tests.servers import AppServers, wait_healthy
from tests.smtp_sink import free_port


def _touch_later(path: Path) -> None:
    """Make sure the modification time moves even on a coarse file-system clock."""
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))


def test_index_lists_posts_newest_first_with_channel_states(preview_server):
    page = httpx.get(preview_server() + "/").text
    slugs = re.findall(r'<tr data-slug="([^"]+)"', page)
    assert slugs == ["mood-journal", "2024-03-12-your-first-infusion", SEED_SLUG]
    assert page.count('<span class="badge scheduled">scheduled</span>') == 3
    assert "social-slots" in page and "hourly-latest" in page


def test_post_page_has_every_part(preview_server):
    base = preview_server()
    page = httpx.get(f"{base}/posts/{SEED_SLUG}").text
    for part in ('id="inbox"', 'id="email-frame"', 'id="plain-text"', 'data-network="x"',
                 'data-network="mastodon"', 'data-network="bluesky"', 'id="devto-canonical"',
                 'id="send-test-button"', 'id="no-warnings"'):
        assert part in page, part
    assert 'id="canonical">https://www.rtrwellnesscenter.com<' in page
    assert "Hi Alex," in page                        # the text part, personalized for the sample
    html = httpx.get(f"{base}/posts/{SEED_SLUG}/email.html").text
    assert "{{" not in html and '<base target="_blank">' in html
    assert "color-scheme" in httpx.get(f"{base}/posts/{SEED_SLUG}/email.html?theme=dark").text
    assert httpx.get(f"{base}/posts/{SEED_SLUG}/email.txt").text.startswith("Hi Alex,")


def test_lint_warnings_are_shown(preview_server, write_post):
    write_post("2024-06-01-warn.md", """
        ---
        title: Warnings
        date: 2024-06-01
        ---
        ![](https://www.rtrwellnesscenter.com/a.png) [local](http://localhost:8000/x)
        """)
    page = httpx.get(preview_server() + "/posts/2024-06-01-warn").text
    assert "image without alt text" in page
    assert "cannot be reached from a reader" in page
    index = httpx.get(preview_server() + "/").text
    assert "2 warnings" in index


def test_edited_post_is_rendered_again(preview_server, project):
    base = preview_server()
    before = httpx.get(f"{base}/api/version").json()["version"]
    assert "Ketamine’s Potential" in httpx.get(f"{base}/posts/{SEED_SLUG}").text
    path = project / "posts" / f"{SEED_SLUG}.md"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace('title: "Ketamine’s', 'title: "Edited: Ketamine’s'), encoding="utf-8")
    _touch_later(path)
    assert httpx.get(f"{base}/api/version").json()["version"] != before
    assert "Edited: Ketamine’s Potential" in httpx.get(f"{base}/posts/{SEED_SLUG}").text


def test_edited_template_is_rendered_again(preview_server, project):
    base = preview_server()
    assert "You are receiving this" in httpx.get(f"{base}/posts/{SEED_SLUG}/email.html").text
    path = project / "templates" / "email" / "base.mjml.j2"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("You are receiving this", "Template edited: you get this"), encoding="utf-8")
    _touch_later(path)
    html = httpx.get(f"{base}/posts/{SEED_SLUG}/email.html").text
    assert "Template edited: you get this" in html and "You are receiving this" not in html


def test_broken_post_shows_its_error_and_the_others_still_render(preview_server, write_post):
    write_post("2024-07-01-broken.md", "---\ntitle: [unclosed\ndate: 2024-07-01\n---\nbody\n")
    base = preview_server()
    index = httpx.get(f"{base}/")
    assert index.status_code == 200
    assert 'class="broken" data-slug="2024-07-01-broken"' in index.text
    broken = httpx.get(f"{base}/posts/2024-07-01-broken")
    assert 'id="render-error"' in broken.text and "posts/2024-07-01-broken.md" in broken.text
    assert httpx.get(f"{base}/posts/{SEED_SLUG}").status_code == 200


def test_unknown_post_is_404(preview_server):
    assert httpx.get(preview_server() + "/posts/nope").status_code == 404


def test_config_error_is_shown_then_recovered(preview_server, project):
    base = preview_server()
    path = project / "config.yaml"
    good = path.read_text(encoding="utf-8")
    path.write_text(good.replace("timezone: America/New_York", "timezone: Mars/Base"), encoding="utf-8")
    _touch_later(path)
    page = httpx.get(f"{base}/")
    assert page.status_code == 500 and 'id="config-error"' in page.text and "timezone" in page.text
    path.write_text(good, encoding="utf-8")
    _touch_later(path)
    _touch_later(path)
    assert httpx.get(f"{base}/").status_code == 200


def test_other_host_names_are_refused(preview_server):
    """A page on another site that rebinds its name to 127.0.0.1 gets nothing."""
    base = preview_server()
    assert httpx.get(f"{base}/", headers={"Host": "attacker.example"}).status_code == 400
    assert httpx.get(f"{base}/", headers={"Host": "localhost"}).status_code == 200


@pytest.fixture
def wildcard_preview(project: Path) -> Iterator[str]:
    """The preview app as `pipeline preview --serve --host 0.0.0.0` builds it, served (for the
    test) on 127.0.0.1 only; its base URL."""
    from pipeline.web.preview_page import create_preview_app

    servers = AppServers()
    yield servers.start(create_preview_app(project / "config.yaml", host="0.0.0.0", now=PREVIEW_NOW))
    servers.stop()


def test_host_0_0_0_0_answers_the_machines_own_names_and_addresses(wildcard_preview):
    """Served on every interface, the page answers the names and addresses of this machine (what
    someone on the network types) and still refuses other names (DNS rebinding)."""
    base = wildcard_preview
    port = base.rsplit(":", 1)[1]
    hostname = socket.gethostname()
    accepted = ["127.0.0.1", "localhost", "[::1]", "0.0.0.0", hostname, hostname.upper(),
                f"{hostname.split('.')[0]}.local"]
    if sys.platform.startswith("linux"):
        accepted.append("127.0.0.2")            # all of 127/8 is this machine's on Linux
    for host in accepted:
        for value in (f"{host}:{port}", host):
            assert httpx.get(f"{base}/healthz", headers={"Host": value}).status_code == 200, value
    assert SEED_SLUG in httpx.get(f"{base}/", headers={"Host": f"{hostname}:{port}"}).text
    refused = ["evil.example", f"evil.example:{port}", f"{hostname}.evil.example:{port}",
               f"{hostname}evil:{port}", f"192.0.2.1:{port}", f"[2001:db8::1]:{port}", "", "[::1",
               f"localhost:{port}:{port}", "224.0.0.1"]
    for value in refused:
        assert httpx.get(f"{base}/healthz", headers={"Host": value}).status_code == 400, value


def test_default_host_answers_loopback_names_only(preview_server):
    base = preview_server()
    port = base.rsplit(":", 1)[1]
    for value in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"):
        assert httpx.get(f"{base}/healthz", headers={"Host": value}).status_code == 200, value
    for value in (f"{socket.gethostname()}:{port}", f"0.0.0.0:{port}", f"192.0.2.1:{port}"):
        assert httpx.get(f"{base}/healthz", headers={"Host": value}).status_code == 400, value


def test_send_test_needs_the_page_token(preview_server, project):
    base = preview_server()
    response = httpx.post(f"{base}/posts/{SEED_SLUG}/send-test", data={"to": "a@example.com"})
    assert response.status_code == 403
    assert not (project / "out" / "outbox" / "mail").exists()


def test_send_test_from_the_form(preview_server, project):
    base = preview_server()
    with httpx.Client(base_url=base) as client:
        token = re.search(r'name="token" value="([^"]+)"', client.get(f"/posts/{SEED_SLUG}").text)[1]
        bad = client.post(f"/posts/{SEED_SLUG}/send-test", data={"to": "nobody", "token": token})
        assert bad.status_code == 400 and "not an email address" in bad.text
        assert ">nobody</textarea>" in bad.text               # what was typed is kept
        ok = client.post(f"/posts/{SEED_SLUG}/send-test", data={"to": "qa@example.com", "token": token})
    assert ok.status_code == 200 and "Test sent to qa@example.com" in ok.text
    assert len(list((project / "out" / "outbox" / "mail" / "new").iterdir())) == 1


def test_version_is_stable_while_nothing_changes(preview_server):
    base = preview_server()
    first = httpx.get(f"{base}/api/version").json()
    time.sleep(0.05)
    assert httpx.get(f"{base}/api/version").json() == first


def test_pipeline_preview_serve_command(project, tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "preview.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "pipeline", "--config", str(project / "config.yaml"),
                                 "preview", "--serve", "--port", str(port)],
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_healthy(base, lambda: proc.poll() is None)
        assert SEED_SLUG in httpx.get(f"{base}/").text
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert f"Preview page on {base}/" in log.read_text(encoding="utf-8")


def test_saving_one_post_renders_only_that_post_again(project):
    """The other posts' renders are kept while their files, the templates and config stay the same."""
    from pipeline.web.preview_page import Workspace

    workspace = Workspace(project / "config.yaml")
    before = workspace.current()
    path = project / "posts" / f"{SEED_SLUG}.md"
    path.write_text(path.read_text(encoding="utf-8").replace('title: "Ketamine’s', 'title: "New: Ketamine’s'),
                    encoding="utf-8")
    _touch_later(path)
    after = workspace.current()
    assert after.version != before.version
    assert after.item(SEED_SLUG).post.title.startswith("New: ")
    assert after.item("mood-journal") is before.item("mood-journal")
    template = project / "templates" / "email" / "base.mjml.j2"
    _touch_later(template)
    assert workspace.current().item("mood-journal") is not before.item("mood-journal")


def test_next_digest_lists_its_articles_and_shows_the_edition(preview_server, write_post):
    write_post("2026-11-25-fresh.md", "---\ntitle: Fresh this week\ndate: 2026-11-25\n---\nNew.\n")
    base = preview_server()
    index = httpx.get(f"{base}/").text
    assert 'data-entry="weekly-newsletter"' in index and "1: Fresh this week" in index
    page = httpx.get(f"{base}/digests/weekly-newsletter/outbox")
    assert page.status_code == 200
    assert "Mon 2026-11-30 09:00 EST" in page.text
    assert '<a href="/posts/2026-11-25-fresh">Fresh this week</a>' in page.text
    assert 'id="email-frame"' in page.text and "RTR Wellness Center: new articles" in page.text
    html = httpx.get(f"{base}/digests/weekly-newsletter/outbox/email.html").text
    assert "Fresh this week" in html and "{{" not in html
    assert httpx.get(f"{base}/digests/nope/outbox").status_code == 404


def test_a_digest_without_articles_says_it_is_skipped(preview_server):
    base = preview_server()
    assert "none yet" in httpx.get(f"{base}/").text
    page = httpx.get(f"{base}/digests/weekly-newsletter/outbox").text
    assert 'id="digest-empty"' in page and "nothing is sent" in page
    assert httpx.get(f"{base}/digests/weekly-newsletter/outbox/email.html").status_code == 404


def test_feed_entries_are_in_the_next_digest_preview(project, httpserver_ipv4, preview_server):
    from pipeline.intake.feeds import fetch_all
    from tests.feed_server import FeedServer, item, rss, with_sources

    feed = FeedServer(httpserver_ipv4)
    url = feed.put("/feed.xml", rss(item("a", title="Partner news", date=PREVIEW_NOW - timedelta(days=1))))
    config = with_sources(project, {"name": "partner", "url": url, "backfill": 1, "settle": "0m"})
    [report] = fetch_all(config, now=PREVIEW_NOW - timedelta(hours=1))
    assert report.new == 1
    page = httpx.get(preview_server() + "/digests/weekly-newsletter/outbox").text
    assert "Partner news <span class=\"muted\">(feed entry:" in page
    assert "https://blog.example/a/" in page


def test_send_test_of_the_next_digest_from_its_page(preview_server, project, write_post):
    write_post("2026-11-25-fresh.md", "---\ntitle: Fresh this week\ndate: 2026-11-25\n---\nNew.\n")
    base = preview_server()
    with httpx.Client(base_url=base) as client:
        page = client.get("/digests/weekly-newsletter/outbox").text
        token = re.search(r'name="token" value="([^"]+)"', page)[1]
        assert 'action="/digests/weekly-newsletter/outbox/send-test"' in page
        ok = client.post("/digests/weekly-newsletter/outbox/send-test",
                         data={"to": "qa@example.com", "token": token})
    assert ok.status_code == 200 and "Test sent to qa@example.com" in ok.text
    [name] = os.listdir(project / "out" / "outbox" / "mail" / "new")
    raw = (project / "out" / "outbox" / "mail" / "new" / name).read_text(encoding="utf-8")
    assert "Subject: [TEST] RTR Wellness Center: new articles" in raw


def test_feed_entries_have_pages_and_settling_ones_say_until_when(project, httpserver_ipv4, preview_server):
    from pipeline.intake.feeds import fetch_all
    from tests.feed_server import FeedServer, item, rss, with_sources

    feed = FeedServer(httpserver_ipv4)
    old = item("a", title="Partner news", date=PREVIEW_NOW - timedelta(days=1))
    url = feed.put("/feed.xml", rss(old))
    config = with_sources(project, {"name": "partner", "url": url, "backfill": 1, "settle": "2h"})
    fetch_all(config, now=PREVIEW_NOW - timedelta(hours=3))
    base = preview_server()
    index = httpx.get(f"{base}/").text
    slug = re.search(r'<tr data-slug="(partner-[^"]+)"', index)[1]
    assert "from feed partner" in index
    page = httpx.get(f"{base}/posts/{slug}").text
    assert 'data-network="bluesky"' in page and "https://blog.example/a/" in page
    assert '<span class="badge scheduled">' in page            # settled: in the queue
    # A new entry fetched just now is settling for two hours; the page picks it up by itself.
    version = httpx.get(f"{base}/api/version").json()["version"]
    feed.put("/feed.xml", rss(item("b", title="Hot off the press", date=PREVIEW_NOW), old))
    fetch_all(config, now=PREVIEW_NOW)
    assert httpx.get(f"{base}/api/version").json()["version"] != version
    index = httpx.get(f"{base}/").text
    fresh = re.search(r'<tr data-slug="(partner-hot[^"]+)"', index)[1]
    page = httpx.get(f"{base}/posts/{fresh}").text
    assert '<span class="badge settling">settling</span>' in page and "2026-11-27 09:00 EST" in page
