"""Compliance in every message: List-Id and Feedback-ID, the bounce address (VERP) as envelope
sender, the footer (postal address, view in browser, manage, unsubscribe), the preheader's
padding and dark-mode meta, and what `check` requires before a real email channel sends."""

from __future__ import annotations

import email
import email.policy
import mailbox
import re
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from pipeline.bounces import verp
from pipeline.check import check_all, check_compliance
from pipeline.config import Config, load_config
from pipeline.intake.posts import load_posts
from pipeline.models import Edition, Severity
from pipeline.preview import render_post, sample_values, write_preview
from pipeline.render.digest import render_digest
from pipeline.render.email import render_edition
from pipeline.render.mime import build_message, feedback_id, list_headers
from pipeline.store import subscribers as store
from pipeline.store.engine import engine_for
from tests.conftest import SEED_SLUG, send_through

ADDRESS = "RTR Wellness Center, 12 Main St, Springfield, IL 62701, USA"
BASE = "https://news.example.com"
BOUNCES = "bounces@news.example.com"
LIST_ID = '"RTR Wellness Center" <newsletter.www.rtrwellnesscenter.com>'
# The seed's slug is too long for one Feedback-ID line: cut, with its hash to stay unique.
SEED_FEEDBACK_ID = f"2020-09-01-ketamine-{verp.edition_tag(SEED_SLUG)}:newsletter:www.rtrwellnesscenter.com"
PADDING = "\u034f\u200c&nbsp;"       # CGJ, ZWNJ, no-break space: as the compiled HTML holds them
READERS = {"ada@example.com": "Ada", "bob@example.org": "Bob"}


def configure(project: Path, *, address: bool = True, base_url: str | None = BASE,
              smtp_port: int | None = None, bounces: str = "") -> Config:
    """The shipped config with a postal address, a public `unsubscribe.base_url`, an SMTP channel
    `newsletter` on `smtp_port`, and `bounces` (the lines of a `bounces:` section) added."""
    path = project / "config.yaml"
    text = path.read_text(encoding="utf-8")
    assert text.rstrip().endswith("outbox: {type: outbox, path: out/outbox}")   # channels: comes last
    if smtp_port:
        text += (f"  newsletter: {{type: smtp, host: 127.0.0.1, port: {smtp_port}, security: none, "
                 "retries: 0, timeout: 5}\n")
    if address:
        assert "  permalink: /{slug}/\n" in text
        text = text.replace("  permalink: /{slug}/\n", f'  permalink: /{{slug}}/\n  address: "{ADDRESS}"\n')
    if base_url:
        text += f"\nunsubscribe:\n  base_url: {base_url}\n"
    if bounces:
        text += f"\nbounces:\n{bounces}"
    path.write_text(text, encoding="utf-8")
    return load_config(path)


def subscribe_readers(config: Config) -> dict[str, store.Subscriber]:
    engine = engine_for(config)
    for address, name in READERS.items():
        store.upsert(engine, address, name)
    return {a: store.find(engine, address=a) for a in READERS}


def outbox_messages(project: Path) -> dict[str, tuple[bytes, email.message.EmailMessage]]:
    box = mailbox.Maildir(project / "out" / "outbox" / "mail", create=False)
    raws = [box.get_bytes(k) for k in box.iterkeys()]
    parsed = [email.message_from_bytes(r, policy=email.policy.default) for r in raws]
    return {str(m["To"]): (r, m) for r, m in zip(raws, parsed, strict=True)}


def token_of(url: str) -> str:
    return url.rsplit("/", 1)[1]


# -- headers ------------------------------------------------------------------------------------

def test_outbox_messages_carry_list_id_feedback_id_and_one_click_unsubscribe(project):
    config = configure(project)
    subscribe_readers(config)
    report = send_through(config, name="outbox")
    assert report.failed == 0
    messages = outbox_messages(project)
    assert sorted(messages) == sorted(READERS)
    for raw, msg in messages.values():
        assert msg["List-Id"] == LIST_ID
        assert msg["Feedback-ID"] == SEED_FEEDBACK_ID
        # Whole on its line (Gmail reads it as written), within RFC 5322's 78 characters.
        line = f"Feedback-ID: {SEED_FEEDBACK_ID}\r\n".encode()
        assert line in raw and len(line) - 2 <= 78
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert re.fullmatch(rf"<{BASE}/unsubscribe/[0-9a-f]{{32}}\.[0-9a-f]{{40}}>", msg["List-Unsubscribe"])
        # The receiving server writes Return-Path from the envelope; the message never has one.
        assert msg["Return-Path"] is None
        assert msg.defects == []


def test_a_short_slug_is_the_feedback_id_as_it_is(project):
    config = configure(project)
    subscribe_readers(config)
    send_through(config, "mood-journal", name="outbox")
    [(_, msg), _] = outbox_messages(project).values()
    assert msg["Feedback-ID"] == "mood-journal:newsletter:www.rtrwellnesscenter.com"


@pytest.mark.parametrize("key, expected", [
    ("mood-journal", "mood-journal:news:example.com"),
    ("a:b c/d", "a-b-c-d:news:example.com"),                 # no colon may split the edition
    ("::", f"{verp.edition_tag('::')}:news:example.com"),    # nothing left: the hash alone
    ("x" * 200, f"{'x' * 39}-{verp.edition_tag('x' * 200)}:news:example.com"),
])
def test_feedback_id_is_safe_and_fits_one_line(key, expected):
    value = feedback_id(key, "news", "example.com")
    assert value == expected
    assert len(f"Feedback-ID: {value}") <= 78


def test_list_id_quotes_the_site_name_and_names_the_host_without_its_port(project):
    path = project / "config.yaml"
    text = path.read_text(encoding="utf-8").replace(
        "  name: RTR Wellness Center\n  url: https://www.rtrwellnesscenter.com\n",
        '  name: \'Anna "AJ" Smith \\ Co\'\n  url: "https://Bücher.example:8443"\n')
    path.write_text(text, encoding="utf-8")
    config = load_config(path)
    headers = list_headers(config, "k")
    assert headers == {"List-Id": '"Anna \\"AJ\\" Smith \\\\ Co" <newsletter.xn--bcher-kva.example>',
                       "Feedback-ID": "k:newsletter:xn--bcher-kva.example"}
    edition = Edition(key="k", subject="S", preheader="", html="<p>x</p>", text="x\n")
    raw = bytes(build_message(edition, sender="a@example.com", to="b@example.com", values={},
                              domain="example.com", date=datetime(2024, 1, 1, tzinfo=UTC), headers=headers))
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed["List-Id"] == headers["List-Id"] and parsed["Feedback-ID"] == headers["Feedback-ID"]


def test_a_site_name_beyond_ascii_is_encoded_in_list_id(project):
    path = project / "config.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace("name: RTR Wellness Center",
                                                             "name: Café Zoë"), encoding="utf-8")
    config = load_config(path)
    edition = Edition(key="k", subject="S", preheader="", html="<p>x</p>", text="x\n")
    raw = bytes(build_message(edition, sender="a@example.com", to="b@example.com", values={},
                              domain="example.com", date=datetime(2024, 1, 1, tzinfo=UTC),
                              headers=list_headers(config, "k")))
    assert raw.isascii()
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed["List-Id"] == '"Café Zoë" <newsletter.www.rtrwellnesscenter.com>'


@pytest.mark.parametrize("use_verp", [True, False])
def test_smtp_envelope_sender_is_the_bounce_address(project, sink, use_verp):
    config = configure(project, smtp_port=sink.port,
                       bounces=f"  address: {BOUNCES}\n  verp: {str(use_verp).lower()}\n")
    readers = subscribe_readers(config)
    report = send_through(config, name="newsletter")
    assert (report.sent, report.failed, report.error) == (2, 0, None)
    assert sorted(r.rcpt_tos[0] for r in sink.received) == sorted(READERS)
    for received in sink.received:
        reader = readers[received.rcpt_tos[0]]
        if use_verp:
            # Every bounce names its subscriber and edition, whatever its report says.
            assert verp.decode(received.mail_from, BOUNCES) == (reader.uid, verp.edition_tag(SEED_SLUG))
        else:
            assert received.mail_from == BOUNCES
        msg = received.message
        assert msg["From"] == "RTR Wellness Center <news@example.com>"     # the From stays the sender's
        assert msg["List-Id"] == LIST_ID and msg["Feedback-ID"] == SEED_FEEDBACK_ID
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_without_a_bounce_address_the_envelope_sender_is_the_from_address(project, sink):
    config = configure(project, smtp_port=sink.port)
    subscribe_readers(config)
    send_through(config, name="newsletter")
    assert {r.mail_from for r in sink.received} == {"news@example.com"}


# -- the footer ---------------------------------------------------------------------------------

def test_footer_has_address_view_in_browser_manage_and_unsubscribe_in_both_parts(project):
    config = configure(project)
    readers = subscribe_readers(config)
    send_through(config, name="outbox")
    engine = engine_for(config)
    secret = store.state_secret(engine)
    archive = f"{BASE}/archive/{SEED_SLUG}"
    for address, (_, msg) in outbox_messages(project).items():
        html = msg.get_body(("html",)).get_content()
        text = msg.get_body(("plain",)).get_content().replace("\r\n", "\n")
        unsubscribe = msg["List-Unsubscribe"].strip("<>")
        manage = f"{BASE}/manage/{token_of(unsubscribe)}"
        assert f"RTR Wellness Center · {ADDRESS}" in html
        assert f'<a href="{archive}" style="color: #486581;">View in browser</a>' in html
        assert f'<a href="{manage}" style="color: #486581;">Manage subscription</a>' in html
        assert f'<a href="{unsubscribe}" style="color: #486581;">Unsubscribe</a>' in html
        assert text.endswith(
            "You are receiving this because you subscribed to RTR Wellness Center.\n"
            f"RTR Wellness Center · {ADDRESS}\n"
            f"View in browser: {archive}\n"
            f"Manage subscription: {manage}\n"
            f"Unsubscribe: {unsubscribe}\n")
        # The manage link is the reader's own: its token resolves to them, and to no one else.
        owner = store.resolve_token(engine, token_of(manage), secret)
        assert owner is not None and owner.uid == readers[address].uid and owner.email == address
    tokens = {token_of(m["List-Unsubscribe"].strip("<>")) for _, m in outbox_messages(project).values()}
    assert len(tokens) == len(READERS)


def test_demo_footer_omits_the_address_and_views_the_post_while_serve_is_local(config):
    assert config.site.address is None and config.unsubscribe.base_url == "http://127.0.0.1:8080"
    post = next(p for p in load_posts(config).posts if p.slug == "mood-journal")
    edition = render_edition(post, config)
    view = ("https://www.rtrwellnesscenter.com/mood-journal/?utm_source=newsletter&utm_medium=email"
            "&utm_campaign=mood-journal")
    assert edition.text.endswith(
        "You are receiving this because you subscribed to RTR Wellness Center.\n"
        f"View in browser: {view}\n"
        "Manage subscription: {{ recipient.manage_url }}\n"
        "Unsubscribe: {{ recipient.unsubscribe_url }}\n")
    assert "127.0.0.1" not in edition.html and edition.lint == ()


def test_digest_footer_links_its_archive_page(project):
    config = configure(project)
    edition = render_digest(load_posts(config).posts, config, key="digest-weekly-newsletter-2026-11-30",
                            start=date(2026, 11, 23), end=date(2026, 11, 30))
    archive = f"{BASE}/archive/digest-weekly-newsletter-2026-11-30"
    assert f'<a href="{archive}" style="color: #486581;">View in browser</a>' in edition.html
    assert f"View in browser: {archive}\n" in edition.text
    assert ADDRESS in edition.html and ADDRESS in edition.text
    assert "{{ recipient.manage_url }}" in edition.html and "{{ recipient.manage_url }}" in edition.text


def test_preview_fills_the_manage_link_with_a_harmless_url_and_has_the_list_headers(project, config):
    post = next(p for p in load_posts(config).posts if p.slug == SEED_SLUG)
    folder = write_preview(render_post(post, config), config, project / "out" / "preview",
                           now=datetime(2024, 1, 1, tzinfo=UTC))
    assert sample_values(config)["manage_url"] == "https://www.rtrwellnesscenter.com/manage/preview"
    html = (folder / "email.html").read_text(encoding="utf-8")
    assert 'href="https://www.rtrwellnesscenter.com/manage/preview"' in html and "{{ recipient" not in html
    msg = email.message_from_bytes((folder / "email.eml").read_bytes(), policy=email.policy.default)
    assert msg["List-Id"] == LIST_ID and msg["Feedback-ID"] == SEED_FEEDBACK_ID


def test_build_message_takes_every_field_for_a_template_that_uses_none(config):
    # A transactional message (the sign-up confirmation) fills no recipient placeholder.
    edition = Edition(key="confirm", subject="Confirm", preheader="", html="<p>Confirm: <a href="
                      '"https://news.example.com/confirm/x">yes</a></p>', text="Confirm: https://x\n")
    values = {**sample_values(config), "email": "ada@example.com"}
    msg = build_message(edition, sender=config.sender, to="ada@example.com", values=values,
                        domain="example.com", date=datetime(2024, 1, 1, tzinfo=UTC))
    parsed = email.message_from_bytes(bytes(msg), policy=email.policy.default)
    assert parsed.get_body(("plain",)).get_content().replace("\r\n", "\n") == "Confirm: https://x\n"


# -- the preheader and dark mode ----------------------------------------------------------------

@pytest.mark.parametrize("kind", ["article", "digest"])
def test_preheader_padding_and_color_scheme_meta_are_in_the_compiled_html(config, kind):
    posts = load_posts(config).posts
    edition = (render_edition(posts[0], config) if kind == "article" else
               render_digest(posts, config, key="d", start=date(2026, 1, 1), end=date(2026, 1, 8)))
    html = edition.html
    head, body = html.split("</head>", 1)
    # The hidden preview text: the preheader, then ~120 invisible characters (40 x 3), nothing else.
    hidden = re.search(r'<div style="display:none;[^"]*">(.*?)</div>', body, re.S)
    assert hidden is not None and hidden.group(1) == edition.preheader.replace("&", "&amp;") + PADDING * 40
    assert 90 <= len(PADDING.replace("&nbsp;", " ") * 40) <= 150
    for meta in ('<meta name="x-apple-disable-message-reformatting">',
                 '<meta name="color-scheme" content="light dark">',
                 '<meta name="supported-color-schemes" content="light dark">'):
        assert meta in head
    # Dark-mode styles: in the head's <style>, never inlined into the light-mode markup.
    dark = re.search(r"@media \(prefers-color-scheme: dark\) \{(.*?)\n\s*\}", head, re.S)
    assert dark is not None
    assert "background-color: #121212 !important" in dark.group(1)
    assert ".card a, .article a { color: #7bdcb5 !important; }" in dark.group(1)
    assert "#121212" not in body and "#7bdcb5" not in body
    assert 'class="card"' in body and 'class="canvas"' in body


# -- check --------------------------------------------------------------------------------------

def test_demo_config_passes_check_with_no_compliance_problem(config):
    assert check_compliance(config) == []
    assert [p for p in check_all(config) if p.severity is Severity.ERROR] == []


def test_real_email_channel_needs_the_postal_address_and_a_public_https_base_url(project):
    config = configure(project, address=False, base_url=None, smtp_port=2525)
    site_line = config.key_lines[("site",)]
    problems = [str(p) for p in check_compliance(config) if p.severity is Severity.ERROR]
    assert problems == [
        f"{config.source}:{site_line}: site.address: required when a real email channel (newsletter) "
        "is configured: the postal address readers can write to (CAN-SPAM)",
        # No `unsubscribe:` section: its default applies, and has no line to name.
        f"{config.source}: unsubscribe.base_url: http://127.0.0.1:8080 (the default) is not https and is a "
        "loopback address, yet every email of newsletter links to it (unsubscribe, manage subscription, "
        "view in browser) for readers to open; set it to the public https URL where `pipeline serve` "
        "answers, e.g. https://news.example.com",
    ]


@pytest.mark.parametrize("url, why", [
    ("https://localhost:8443", "localhost"),
    ("https://127.0.0.2", "a loopback address"),
    ("https://[::1]:8080", "a loopback address"),
    ("https://10.1.2.3", "a private address"),
    ("https://172.16.0.9", "a private address"),
    ("https://172.31.255.1", "a private address"),
    ("https://192.168.1.20", "a private address"),
])
def test_base_url_on_a_loopback_or_private_host_is_an_error(project, url, why):
    config = configure(project, base_url=url, smtp_port=2525, bounces=f"  address: {BOUNCES}\n")
    [problem] = check_compliance(config)
    assert problem.severity is Severity.ERROR
    assert problem.where == config.where("unsubscribe", "base_url")
    assert problem.message.startswith(f"{url} is {why}, yet every email of newsletter links to it")


def test_public_http_base_url_is_an_error_and_a_public_https_one_is_not(project):
    config = configure(project, base_url="http://news.example.com", smtp_port=2525,
                       bounces=f"  address: {BOUNCES}\n")
    assert [p.message.split(",")[0] for p in check_compliance(config)] == [
        "http://news.example.com is not https"]
    assert [p.where for p in check_compliance(config)] == [config.where("unsubscribe", "base_url")]
    (project / "config.yaml").write_text(
        (project / "config.yaml").read_text(encoding="utf-8").replace("http://news.example.com", BASE),
        encoding="utf-8")
    assert check_compliance(load_config(project / "config.yaml")) == []


def test_real_email_channel_without_a_bounce_address_is_a_warning(project):
    config = configure(project, smtp_port=2525)
    [problem] = check_compliance(config)
    assert problem.severity is Severity.WARNING
    assert str(problem) == (
        f"{config.source}: bounces.address: not set: bounces of newsletter go to the From address "
        "and nothing reads them, so addresses that no longer exist stay on the list; set it to a "
        "mailbox that `pipeline bounces` reads (bounces.imap or bounces.maildir)")


def test_check_command_reports_the_compliance_errors(project, run_cli):
    configure(project, address=False, base_url=None, smtp_port=2525)
    result = run_cli("check", cwd=project)
    assert result.returncode == 1, result.stdout
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if "config.yaml" in line]
    assert any(re.fullmatch(r"error: config\.yaml:\d+: site\.address: required when a real email channel "
                            r"\(newsletter\) is configured: the postal address readers can write to "
                            r"\(CAN-SPAM\)", line) for line in lines), lines
    assert [line for line in lines if "unsubscribe.base_url" in line] == [
        "error: config.yaml: unsubscribe.base_url: http://127.0.0.1:8080 (the default) is not https and is "
        "a loopback address, yet every email of newsletter links to it (unsubscribe, manage subscription, "
        "view in browser) for readers to open; set it to the public https URL where `pipeline serve` "
        "answers, e.g. https://news.example.com"]
    assert "warning: config.yaml: bounces.address: not set: bounces of newsletter go to the From address" \
        in result.stderr
