"""The preview page in a real browser: what a marketer sees and clicks."""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import SEED_SLUG, add_channel, ledger_rows

pytestmark = pytest.mark.browser


def _open_post(page: Page, base: str, slug: str = SEED_SLUG) -> None:
    page.goto(f"{base}/posts/{slug}")
    expect(page.locator("#title")).to_be_visible()
    page.frame_locator("#email-frame").locator("body").wait_for()


def _frame_metrics(page: Page) -> dict[str, float]:
    frame = page.frame(url=re.compile(r"/email\.html"))
    assert frame is not None
    return frame.evaluate("""() => ({
        scrollWidth: document.documentElement.scrollWidth,
        clientWidth: document.documentElement.clientWidth,
        innerWidth: window.innerWidth,
        background: getComputedStyle(document.body).backgroundColor})""")


def test_index_and_seed_post_load(page, preview_server):
    base = preview_server()
    page.goto(base + "/")
    expect(page.locator("#posts tbody tr")).to_have_count(3)
    page.get_by_role("link", name="Ketamine’s Potential Ability to Heal Neurological Damage").click()
    expect(page.locator("#title")).to_have_text("Ketamine’s Potential Ability to Heal Neurological Damage")
    expect(page.locator("#subject")).to_have_text("Ketamine’s Potential Ability to Heal Neurological Damage")
    expect(page.locator("#preheader")).to_contain_text("In recent years, ketamine")
    frame = page.frame_locator("#email-frame")
    expect(frame.locator("h1")).to_contain_text("Ketamine’s Potential Ability")
    expect(frame.get_by_text("Originally published at")).to_be_visible()
    expect(page.locator("#plain-text")).to_contain_text("Hi Alex,")


def test_email_at_375px_has_no_horizontal_scroll_and_widths_switch(page, preview_server):
    _open_post(page, preview_server())
    assert _frame_metrics(page)["innerWidth"] == 600
    page.click("#width-mobile")
    expect(page.locator("#width-mobile")).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#width-desktop")).to_have_attribute("aria-pressed", "false")
    page.wait_for_function("document.getElementById('email-frame').contentWindow.innerWidth === 375")
    metrics = _frame_metrics(page)
    assert metrics["scrollWidth"] <= metrics["clientWidth"], metrics
    # The measure does see an overflow: a 700 px block makes the email scroll sideways.
    frame = page.frame(url=re.compile(r"/email\.html"))
    frame.evaluate("""() => { const d = document.createElement('div');
                              d.style.width = '700px'; d.style.height = '1px';
                              document.body.appendChild(d); }""")
    wide = _frame_metrics(page)
    assert wide["scrollWidth"] > wide["clientWidth"], wide
    assert "width=mobile" in page.url                 # a reload keeps the view
    page.reload()
    page.wait_for_function("document.getElementById('email-frame').contentWindow.innerWidth === 375")
    page.click("#width-desktop")
    page.wait_for_function("document.getElementById('email-frame').contentWindow.innerWidth === 600")
    height = page.eval_on_selector("#email-frame", "f => f.getBoundingClientRect().height")
    assert height > 600                                 # sized to the email, not a scroll box


WIDE = ("---\ntitle: Wide things\ndate: 2024-08-01\n---\n\n```\n" + "x" * 600 + "\n```\n\n"
        "| a | b | c | d | e | f |\n|---|---|---|---|---|---|\n| "
        + " | ".join(["averyveryverylongwordwithoutanybreaks"] * 6) + " |\n\nhttps://example.com/"
        + "a" * 300 + "\n")


@pytest.mark.parametrize("slug", ["mood-journal", "2024-03-12-your-first-infusion", "2024-08-01-wide"])
def test_every_shipped_post_and_wide_content_fit_375px(page, preview_server, write_post, slug):
    write_post("2024-08-01-wide.md", WIDE)
    _open_post(page, preview_server(), slug)
    page.click("#width-mobile")
    page.wait_for_function("document.getElementById('email-frame').contentWindow.innerWidth === 375")
    metrics = _frame_metrics(page)
    assert metrics["scrollWidth"] <= metrics["clientWidth"], metrics


def test_dark_background(page, preview_server):
    _open_post(page, preview_server())
    page.check("#dark")
    expect(page.locator("#canvas")).to_have_class(re.compile(r"\bdark\b"))
    page.wait_for_function("""() => {
        const d = document.getElementById('email-frame').contentDocument;
        return d && d.body && getComputedStyle(d.body).backgroundColor === 'rgb(18, 18, 18)'; }""")
    page.uncheck("#dark")
    page.wait_for_function("""() => {
        const d = document.getElementById('email-frame').contentDocument;
        return d && d.body && getComputedStyle(d.body).backgroundColor !== 'rgb(18, 18, 18)'; }""")


def test_snippet_counters_match_snippets_json(page, preview_server, project, run_cli):
    assert run_cli("--config", project / "config.yaml", "preview", SEED_SLUG).returncode == 0
    expected = json.loads((project / "out" / "preview" / SEED_SLUG / "snippets.json").read_text("utf-8"))
    _open_post(page, preview_server())
    for network, snippet in expected.items():
        parts = snippet.get("thread") or [snippet]
        counters = page.locator(f'.card[data-network="{network}"] .counter')
        expect(counters).to_have_text([f"{p['length']} / {p['limit']}" for p in parts])
        text = page.locator(f'.card[data-network="{network}"] .part .text').first.inner_text()
        assert text == parts[0]["text"]


def test_broken_post_shows_its_error_and_the_others_render(page, preview_server, write_post):
    write_post("2024-07-01-broken.md", "---\ntitle: [unclosed\ndate: 2024-07-01\n---\nbody\n")
    base = preview_server()
    page.goto(base + "/")
    expect(page.locator("tr.broken")).to_contain_text("posts/2024-07-01-broken.md")
    page.click("tr.broken a")
    expect(page.locator("#render-error")).to_be_visible()
    page.goto(base + "/")
    page.get_by_role("link", name=re.compile("Your First Infusion")).click()
    expect(page.frame_locator("#email-frame").locator("h1")).to_contain_text("Your First Infusion")


def test_page_reloads_itself_when_the_post_changes(page, preview_server, project):
    _open_post(page, preview_server())
    path = project / "posts" / f"{SEED_SLUG}.md"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace('title: "Ketamine’s', 'title: "Live: Ketamine’s'), encoding="utf-8")
    expect(page.locator("#title")).to_have_text(re.compile("^Live: Ketamine’s"), timeout=15_000)


def test_send_test_reaches_smtp_marked_test_and_leaves_the_ledger(page, preview_server, project, sink):
    config = add_channel(project, "newsletter", "smtp", {"host": "127.0.0.1", "port": sink.port,
                                                         "security": "none", "timeout": 5})
    _open_post(page, preview_server())
    page.fill("#to", "qa@example.com, lead@example.com")
    page.click("#send-test-button")
    expect(page.locator("#send-test-result")).to_contain_text("Test sent to qa@example.com, lead@example.com")
    # A real email channel is preferred to the outbox that comes first in the config (#14).
    assert sorted(r for m in sink.received for r in m.rcpt_tos) == ["lead@example.com", "qa@example.com"]
    assert not (project / "out" / "outbox" / "mail").exists()
    subject = sink.received[0].message["Subject"]
    assert subject == "[TEST] Ketamine’s Potential Ability to Heal Neurological Damage"
    assert ledger_rows(config, dry_run=None) == []


def test_next_digest_page_shows_the_digest_email(page, preview_server, write_post):
    write_post("2026-11-25-fresh.md", "---\ntitle: Fresh this week\ndate: 2026-11-25\n---\nNew.\n")
    base = preview_server()
    page.goto(base + "/")
    page.get_by_role("link", name="weekly-newsletter").click()
    expect(page.locator("#title")).to_have_text("Next digest: weekly-newsletter")
    frame = page.frame_locator("#email-frame")
    expect(frame.get_by_text("Fresh this week").filter(visible=True).first).to_be_visible()
    page.click("#width-mobile")
    page.wait_for_function("document.getElementById('email-frame').contentWindow.innerWidth === 375")
    metrics = _frame_metrics(page)
    assert metrics["scrollWidth"] <= metrics["clientWidth"], metrics


def test_send_test_of_the_next_digest_reaches_smtp(page, preview_server, project, sink, write_post):
    write_post("2026-11-25-fresh.md", "---\ntitle: Fresh this week\ndate: 2026-11-25\n---\nNew.\n")
    add_channel(project, "newsletter", "smtp", {"host": "127.0.0.1", "port": sink.port,
                                                "security": "none", "timeout": 5})
    text = (project / "config.yaml").read_text(encoding="utf-8")
    (project / "config.yaml").write_text(text.replace(
        "channels:\n", "preview:\n  test_channel: newsletter\n\nchannels:\n", 1), encoding="utf-8")
    page.goto(preview_server() + "/digests/weekly-newsletter/outbox")
    page.fill("#to", "qa@example.com")
    page.click("#send-test-button")
    expect(page.locator("#send-test-result")).to_contain_text("Test sent to qa@example.com")
    [received] = sink.received
    assert received.message["Subject"].startswith("[TEST] RTR Wellness Center: new articles")
    assert "Fresh this week" in received.message.get_body(("html",)).get_content()
