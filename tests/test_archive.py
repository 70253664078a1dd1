"""`GET /archive/<key>` on a real `pipeline serve` (uvicorn on loopback): the "View in browser"
page of a post or a digest, with no subscriber's data, unknown and unsafe keys, drafts, and a
page rendered again when its post changes."""

from __future__ import annotations

import email
import email.policy
import mailbox
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from pipeline.config import Config, load_config
from pipeline.intake.posts import load_posts
from pipeline.render.email import render_edition
from pipeline.render.personalize import Fill
from pipeline.store import subscribers as store
from pipeline.store.engine import engine_for
from pipeline.store.runs import record_run
from pipeline.timetable.schedule import digest_key, run_entry
from pipeline.web.archive import public_values
from pipeline.web.server import build_server
from tests.conftest import SEED_SLUG, send_through
from tests.servers import AppServers
from tests.smtp_sink import free_port

BASE = "https://news.example.com"
READERS = ("ada@example.com", "bob@example.org")
MOOD = "mood-journal"


def public(project: Path) -> Config:
    """The shipped config, its links on a public `pipeline serve`."""
    path = project / "config.yaml"
    path.write_text(path.read_text(encoding="utf-8") + f"\nunsubscribe:\n  base_url: {BASE}\n",
                    encoding="utf-8")
    return load_config(path)


@pytest.fixture
def serve() -> Iterator[Callable[[Config], str]]:
    """start(config) -> the base URL of `pipeline serve` for `config`, on a free loopback port."""
    servers = AppServers()
    yield lambda config: servers.run(build_server(config, port=free_port()))
    servers.stop()


def mailed(project: Path) -> list[email.message.EmailMessage]:
    box = mailbox.Maildir(project / "out" / "outbox" / "mail", create=False)
    return [email.message_from_bytes(box.get_bytes(k), policy=email.policy.default) for k in box.iterkeys()]


def view_link(message: email.message.EmailMessage) -> str:
    html = message.get_body(("html",)).get_content()
    [url] = re.findall(r'<a href="([^"]+)"[^>]*>View in browser</a>', html)
    return url


def test_the_view_in_browser_link_shows_the_edition_without_personal_data(project, serve):
    config = public(project)
    engine = engine_for(config)
    for address in READERS:
        store.upsert(engine, address, "Ada Lovelace")
    send_through(config, name="outbox")
    messages = mailed(project)
    assert len(messages) == len(READERS)
    link = view_link(messages[0])
    assert link == f"{BASE}/archive/{SEED_SLUG}"
    base = serve(config)
    response = httpx.get(link.replace(BASE, base))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "public, max-age=300"
    assert response.headers["x-robots-tag"] == "noindex"
    page = response.text
    # Exactly the email, filled in for nobody.
    post = next(p for p in load_posts(config).posts if p.slug == SEED_SLUG)
    assert page == Fill.of(render_edition(post, config).html, escape=True)(public_values(config))
    assert "Ketamine’s Potential Ability to Heal Neurological Damage" in page and "Hi there," in page
    assert f'<a href="{BASE}/subscribe" style="color: #486581;">Manage subscription</a>' in page
    assert f'<a href="{BASE}/subscribe" style="color: #486581;">Unsubscribe</a>' in page
    # No reader's address, name, uid or token: not theirs, nor anyone's.
    secret = store.state_secret(engine)
    for address in READERS:
        reader = store.find(engine, address=address)
        assert reader is not None
        for private in (address, reader.uid, store.token(reader.uid, reader.email, secret), "Ada Lovelace"):
            assert private not in page
    assert "/unsubscribe/" not in page and "/manage/" not in page and "{{ recipient" not in page


@pytest.mark.parametrize("path", [
    "/archive/no-such-post", "/archive/", "/archive/a/b", "/archive/..%2Fconfig.yaml",
    "/archive/%2e%2e/config.yaml", "/archive/.hidden", "/archive/x%00y", "/archive/" + "a" * 301,
    "/archive/digest-weekly-newsletter-2024-05-27",     # a digest that never went out
])
def test_unknown_or_unsafe_keys_get_the_not_found_page(project, serve, path):
    base = serve(public(project))
    response = httpx.get(base + path)
    assert response.status_code == 404
    assert "There is no edition at this address." in response.text
    assert response.headers["cache-control"] == "no-store"
    assert "site:" not in response.text and "Traceback" not in response.text


def test_drafts_and_posts_dated_in_the_future_are_not_shown(project, serve, write_post):
    write_post("draft.md", "---\ntitle: Secret plans\ndate: 2024-01-01\ndraft: true\n---\nNot yet.\n")
    write_post("future.md", "---\ntitle: Next year\ndate: 2199-01-01\n---\nLater.\n")
    base = serve(public(project))
    assert httpx.get(f"{base}/archive/{MOOD}").status_code == 200
    for slug in ("draft", "future"):
        response = httpx.get(f"{base}/archive/{slug}")
        assert response.status_code == 404 and "Secret plans" not in response.text


def test_a_changed_post_is_rendered_again(project, serve, write_post):
    write_post("changing.md", "---\ntitle: First title\ndate: 2024-01-01\n---\nBody.\n")
    base = serve(public(project))
    assert "First title" in httpx.get(f"{base}/archive/changing").text
    write_post("changing.md", "---\ntitle: A second, longer title\ndate: 2024-01-01\n---\nBody.\n")
    page = httpx.get(f"{base}/archive/changing").text
    assert "A second, longer title" in page and "First title" not in page


def test_a_template_that_breaks_gets_an_error_page_not_a_traceback(project, serve):
    base = serve(public(project))
    assert httpx.get(f"{base}/archive/{MOOD}").status_code == 200
    article = project / "templates" / "email" / "article.mjml.j2"
    article.write_text(article.read_text(encoding="utf-8").replace("{% endblock %}", "{% endblok %}"),
                       encoding="utf-8")
    response = httpx.get(f"{base}/archive/{MOOD}")
    assert response.status_code == 500
    assert "This edition cannot be shown right now." in response.text
    assert "endblok" not in response.text and "Traceback" not in response.text


def test_a_digest_is_shown_as_it_was_sent(project, serve):
    config = public(project)
    config = config.model_copy(update={"schedule": [e for e in config.schedule
                                                    if e.name == "weekly-newsletter"]})
    [entry] = config.schedule
    store.upsert(engine_for(config), "ada@example.com", "Ada")
    fire = datetime(2024, 5, 22, 13, 0, tzinfo=UTC)          # two days after the newest post
    assert record_run(engine_for(config), entry.name, fire, "ran")
    [report] = run_entry(config, entry, fire, now=fire)
    assert report.sent == 1
    key = digest_key(config, entry, fire)
    assert key == "digest-weekly-newsletter-2024-05-22"
    [message] = mailed(project)
    assert view_link(message) == f"{BASE}/archive/{key}"
    response = httpx.get(view_link(message).replace(BASE, serve(config)))
    assert response.status_code == 200
    page = response.text
    assert "Un journal d’humeur: track your mood in five minutes a day 🌿" in page
    assert "1 new article from RTR Wellness Center" in page
    assert f"<title>{message['Subject']}</title>" in page       # the subject it went out with
    assert "ada@example.com" not in page and "Hi there," in page
    # The sent HTML and the page differ only where the reader's own values went.
    sent = message.get_body(("html",)).get_content().replace("\r\n", "\n")
    reader = store.find(engine_for(config), address="ada@example.com")
    tok = store.token(reader.uid, reader.email, store.state_secret(engine_for(config)))
    assert sent.replace("Hi Ada,", "Hi there,").replace(f"{BASE}/manage/{tok}", f"{BASE}/subscribe") \
        .replace(f"{BASE}/unsubscribe/{tok}", f"{BASE}/subscribe") == page
