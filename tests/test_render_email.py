"""Email editions: golden seed output, UTM, sanitization, header safety, lint, placeholders."""

from __future__ import annotations

import email
import email.policy
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.errors import RenderError
from pipeline.intake.posts import load_posts
from pipeline.models import Post, Severity
from pipeline.render.email import render_edition, tagger
from pipeline.render.links import body_url, email_links
from pipeline.render.lint import lint
from pipeline.render.mime import build_message, message_id
from pipeline.render.personalize import Fill
from tests.conftest import SEED_SLUG

VALUES = {"name": "Ada <Lovelace>", "email": "ada@example.com",
          "unsubscribe_url": "https://news.example.com/unsubscribe/TOKEN",
          "manage_url": "https://news.example.com/manage/TOKEN"}


def _post(config, slug=SEED_SLUG) -> Post:
    return next(p for p in load_posts(config).posts if p.slug == slug)


def test_seed_edition_matches_golden(config, golden):
    edition = render_edition(_post(config), config)
    golden("seed/email.html", edition.html)
    golden("seed/email.txt", edition.text)


def test_seed_edition_has_every_paragraph_footer_and_sources(config):
    edition = render_edition(_post(config), config)
    assert "Originally published at https://www.rtrwellnesscenter.com on September 1, 2020." \
        in edition.text
    assert re.search(r'Originally published at <a href="https://www\.rtrwellnesscenter\.com/\?utm_source='
                     r'newsletter&amp;utm_medium=email&amp;utm_campaign=2020-09-01-ketamine-neurological-'
                     r'damage"[^>]*>www\.rtrwellnesscenter\.com</a> on September 1, 2020\.', edition.html)
    for url in ("https://www.ncbi.nlm.nih.gov/pmc/articles/PMC4810965/",
                "https://www.mayoclinic.org/diseases-conditions/depression/symptoms-causes/syc-20356007"):
        assert f'href="{url}"' in edition.html
        assert url in edition.text
    assert edition.subject == "Ketamine’s Potential Ability to Heal Neurological Damage"
    assert edition.preheader.startswith("In recent years, ketamine has been shown")
    assert edition.preheader.endswith("symptoms.")
    assert edition.lint == ()


def test_placeholders_survive_mjml_and_fill_per_recipient(config):
    edition = render_edition(_post(config), config)
    assert "{{ recipient.unsubscribe_url }}" in edition.html
    assert "{{ recipient.name }}" in edition.html
    html = Fill.of(edition.html, escape=True)(VALUES)
    text = Fill.of(edition.text, escape=False)(VALUES)
    assert "Hi Ada &lt;Lovelace&gt;," in html and "{{ recipient" not in html
    assert 'href="https://news.example.com/unsubscribe/TOKEN"' in html
    assert text.startswith("Hi Ada <Lovelace>,")
    assert "Unsubscribe: https://news.example.com/unsubscribe/TOKEN" in text


def test_post_cannot_inject_a_placeholder(config, write_post):
    write_post("inject.md", """
        ---
        title: "Hi {{ recipient.email }}"
        date: 2024-01-01
        ---
        Your address is {{ recipient.email }} and `{{ recipient.unsubscribe_url }}`.
    """)
    edition = render_edition(_post(config, "inject"), config)
    filled = Fill.of(edition.html, escape=True)(VALUES)
    assert "ada@example.com" not in filled
    assert "ada@example.com" not in Fill.of(edition.text, escape=False)(VALUES)


def test_utm_on_site_links_keeps_existing_query_and_fragment(config, write_post):
    write_post("utm.md", """
        ---
        title: UTM
        date: 2024-01-01
        ---
        [a](https://www.rtrwellnesscenter.com/page?ref=home&x=1#part)
        [b](https://elsewhere.example.org/?q=2)
        [c](/relative/path)
        [d](https://www.rtrwellnesscenter.com/?utm_source=mine)
    """)
    html = render_edition(_post(config, "utm"), config, channel="weekly").html
    assert ('href="https://www.rtrwellnesscenter.com/page?ref=home&amp;x=1&amp;utm_source=weekly'
            '&amp;utm_medium=email&amp;utm_campaign=utm#part"') in html
    assert 'href="https://elsewhere.example.org/?q=2"' in html
    assert ('href="https://www.rtrwellnesscenter.com/relative/path?utm_source=weekly&amp;utm_medium'
            '=email&amp;utm_campaign=utm"') in html
    assert ('href="https://www.rtrwellnesscenter.com/?utm_source=mine&amp;utm_medium=email'
            '&amp;utm_campaign=utm"') in html


def test_utm_can_be_disabled_or_applied_to_every_link(project, write_post):
    write_post("utm.md", "---\ntitle: U\ndate: 2024-01-01\n---\n[b](https://other.example.org/x)\n")
    off = load_config_text(project, "utm:\n  enabled: true\n", "utm:\n  enabled: false\n")
    assert "utm_" not in render_edition(_post(off, "utm"), off).html
    every = load_config_text(project, "utm:\n  enabled: false\n", "utm:\n  scope: all\n")
    assert 'href="https://other.example.org/x?utm_source=newsletter&amp;utm_medium=email' \
        in render_edition(_post(every, "utm"), every).html


def load_config_text(project: Path, old: str, new: str):
    path = project / "config.yaml"
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new), encoding="utf-8")
    return load_config(path)


def test_post_html_is_sanitized(config, write_post):
    write_post("xss.md", """
        ---
        title: XSS
        date: 2024-01-01
        ---
        <script>alert(1)</script>
        <p onclick="steal()">click</p>
        <a href="javascript:alert(1)">js</a> <img src="x.png" onerror="boom()" alt="x">
        <iframe src="https://evil.example"></iframe>
    """)
    html = render_edition(_post(config, "xss"), config).html.lower()
    for bad in ("<script", "alert(1)", "onclick", "steal()", "javascript:", "onerror", "<iframe"):
        assert bad not in html


def test_subject_override_and_header_injection(config, write_post):
    write_post("subj.md", """
        ---
        title: "Title"
        subject: "Line one\\r\\nBcc: victim@example.com"
        date: 2024-01-01
        ---
        Body.
    """)
    edition = render_edition(_post(config, "subj"), config)
    assert edition.subject == "Line one Bcc: victim@example.com"
    msg = build_message(edition, sender="A <a@example.com>", to="b@example.com", values=VALUES,
                        domain="example.com", date=datetime(2024, 1, 1, tzinfo=UTC))
    parsed = email.message_from_bytes(bytes(msg), policy=email.policy.default)
    assert parsed["Bcc"] is None
    assert parsed["Subject"] == "Line one Bcc: victim@example.com"


def test_eml_is_multipart_alternative_with_deterministic_message_id(config):
    edition = render_edition(_post(config), config)
    msg = build_message(edition, sender=config.sender, to="ada@example.com", values=VALUES,
                        domain="news.example.com", date=datetime(2024, 1, 1, tzinfo=UTC))
    parsed = email.message_from_bytes(bytes(msg), policy=email.policy.default)
    assert parsed.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in parsed.iter_parts()] == ["text/plain", "text/html"]
    assert parsed["Message-ID"] == message_id(edition.key, "ada@example.com", "news.example.com")
    assert message_id("k", "ADA@example.com", "d") == message_id("k", "ada@example.com", "d")
    assert message_id("k", "ada@example.com", "d") != message_id("k2", "ada@example.com", "d")
    assert "Hi Ada <Lovelace>," in parsed.get_body(("plain",)).get_content()


def test_text_part_keeps_structure(config):
    post = _post(config, "2024-03-12-your-first-infusion")
    text = render_edition(post, config).text
    assert "Before the day\n--------------" in text
    assert "- a list of the medicines you take, with doses;" in text
    assert "1. Check-in takes about ten minutes;" in text
    assert "> “I expected something dramatic." in text
    assert "call the front desk [1]" in text
    assert "[1] https://www.rtrwellnesscenter.com/contact/?utm_source=newsletter" in text
    code = render_edition(_post(config, "mood-journal"), config).text
    assert "    weeks = defaultdict(list)" in code
    assert "        for row in csv.DictReader(f):" in code


def test_lint_reports_clip_size_missing_alt_relative_link_and_unsubscribe():
    html = ('<img src="https://x/a.png"><a href="/relative">r</a>'
            '<a href="{{ recipient.unsubscribe_url }}">u</a>' + "x" * 103_000)
    messages = [p.message for p in lint(html, where="posts/a.md")]
    assert any("Gmail clips" in m for m in messages)
    assert any("image without alt text: https://x/a.png" in m for m in messages)
    assert any("relative link '/relative'" in m for m in messages)
    assert not any("unsubscribe" in m for m in messages)
    assert all(p.severity is Severity.WARNING for p in lint(html, where="x"))
    assert any("no unsubscribe link" in p.message for p in lint("<p>hi</p>", where="x"))


@pytest.mark.parametrize("url, why", [
    ("https://www.example.com/a b", "contains a space"),
    ("https:///path", "has no host name"),
    ("http://intranet/page", "is not a domain name"),
    ("http://localhost:8000/x", "cannot be reached from a reader"),
    ("https://shop.test/x", "cannot be reached from a reader"),
    ("https://example.com:99999/", "is malformed"),
    ("mailto:", "needs an address"),
])
def test_lint_reports_links_that_cannot_work(url, why):
    html = f'<a href="{url}">x</a><a href="{{{{ recipient.unsubscribe_url }}}}">u</a>'
    [problem] = lint(html, where="posts/a.md")
    assert f"link {url!r} cannot work: " in problem.message and why in problem.message


@pytest.mark.parametrize("url", ["https://www.example.com/a%20b?x=1#top", "mailto:a@example.com",
                                 "tel:+15551234", "#section", "http://[2001:db8::1]/x"])
def test_lint_accepts_links_that_may_work(url):
    assert list(lint(f'<a href="{url}">x</a><a href="{{{{ recipient.unsubscribe_url }}}}">u</a>',
                     where="x")) == []


def test_template_without_unsubscribe_is_linted(project, config):
    base = project / "templates" / "email" / "base.mjml.j2"
    base.write_text(base.read_text(encoding="utf-8").replace("{{ recipient.unsubscribe_url }}", "#"),
                    encoding="utf-8")
    messages = [p.message for p in render_edition(_post(config), config).lint]
    assert any("no unsubscribe link" in m for m in messages)


def test_broken_template_is_a_render_error_naming_file_and_line(project, config):
    article = project / "templates" / "email" / "article.mjml.j2"
    article.write_text(article.read_text(encoding="utf-8").replace("{% endblock %}", "{% endblok %}"),
                       encoding="utf-8")
    with pytest.raises(RenderError, match=r"templates/email/article\.mjml\.j2:\d+: "):
        render_edition(_post(config), config)


def test_footer_wording_date_format_and_locale(project, write_post):
    cfg = load_config_text(project, '  text: "Originally published at {site} on {date}."\n'
                           '  date_format: long\n',
                           '  text: "Publié sur {site} le {date}."\n  date_format: long\n')
    cfg = load_config_text(project, "locale: en_US", "locale: fr_FR")
    edition = render_edition(_post(cfg), cfg)
    assert "Publié sur https://www.rtrwellnesscenter.com le 1 septembre 2020." in edition.text
    assert cfg.footer.text.startswith("Publié")


HOSTILE_BODY = """
<a href="javascript:alert(1)">a</a> <a href=" JaVaScRiPt:alert(2)">b</a>
<a href="&#x20;javascript:alert(3)">c</a> <a href="\u00a0javascript:alert(4)">d</a>
<a href="java&#x09;script:alert(5)">e</a> <a href="vbscript:msgbox(6)">f</a>
<img src="data:image/svg+xml;base64,PHN2Zz4=" alt="g"> <img src="\u00a0data:text/html,x" alt="h">
[i](javascript:alert(7)) <a href="//cdn.example.com/j">j</a> <a href="mailto:team@example.com">k</a>
"""


def test_no_edition_holds_a_hostile_url_and_every_href_and_src_is_http_or_mailto(config, write_post):
    write_post("hostile.md", "---\ntitle: Hostile\ndate: 2024-01-01\nimage: /images/cover.jpg\n"
                             "image_alt: Cover\n---\n" + HOSTILE_BODY)
    edition = render_edition(_post(config, "hostile"), config)
    html = edition.html.lower().replace("&nbsp;", "").replace("\u00a0", "")
    for scheme in ("javascript:", "vbscript:", "data:"):
        assert f'="{scheme}' not in html and f"='{scheme}" not in html
    urls = re.findall(r'(?:href|src)="([^"]*)"', edition.html)
    assert urls and all(u.startswith(("https://", "http://", "mailto:", "{{")) for u in urls), urls
    # The text part's footnote-style links hold only what the HTML links to.
    text_links = re.findall(r"^\[\d+\] (\S+)", edition.text, re.M)
    assert text_links and all(u.startswith(("https://", "http://", "mailto:")) for u in text_links)
    # The post's own image: an <img src> on the site, over http(s).
    [cover] = re.findall(r'<img[^>]*src="([^"]*cover\.jpg[^"]*)"', edition.html)
    assert cover.startswith("https://www.rtrwellnesscenter.com/images/cover.jpg")


def test_image_that_is_not_http_never_reaches_the_template(config):
    # A Post built elsewhere (a stored feed entry written by an older version) is checked again.
    post = Post(path="feed:old:1", slug="old-1", title="Old", date=datetime(2024, 1, 1, tzinfo=UTC),
                canonical_url="https://partner.example/old/", body_markdown="B", body_html="<p>B</p>",
                image="javascript:alert(1)")
    html = render_edition(post, config).html.lower()
    assert "javascript:" not in html
    assert "<img" not in html


FOOTNOTED = """
    ---
    title: Footnotes
    date: 2024-06-01
    image: /images/cover.jpg
    image_alt: Cover
    ---
    Ketamine works fast[^1]; see [the guide](/guide/) and ![A chart](/images/chart.png).

    [^1]: A note, with [a source](https://elsewhere.example.org/paper).
    """
TAGGED = "utm_source=newsletter&amp;utm_medium=email&amp;utm_campaign=footnotes"


def test_footnotes_stay_in_the_email_and_only_links_carry_utm(config, write_post):
    write_post("footnotes.md", FOOTNOTED)
    edition = render_edition(_post(config, "footnotes"), config)
    html = edition.html
    # The reference jumps to the note inside the email: untagged, not sent to the web page.
    assert re.search(r'<a href="#fn1"[^>]*>\[1\]</a>', html)
    assert re.search(r'<li id="fn1"[^>]*>', html)
    # The note's way back has no target in the email (sanitizing drops a link's id): the page.
    assert f'href="https://www.rtrwellnesscenter.com/footnotes/?{TAGGED}#fnref1"' in html
    assert f'href="https://www.rtrwellnesscenter.com/guide/?{TAGGED}"' in html
    assert 'href="https://elsewhere.example.org/paper"' in html
    # Images are files, not visits: no UTM on any src, the header image's own link keeps it.
    sources = re.findall(r'<img[^>]*\ssrc="([^"]*)"', html)
    assert sorted(sources) == ["https://www.rtrwellnesscenter.com/images/chart.png",
                               "https://www.rtrwellnesscenter.com/images/cover.jpg"]
    assert re.search(f'<a href="https://www.rtrwellnesscenter.com/footnotes/\\?{TAGGED}"[^>]*><img', html)
    assert edition.lint == ()
    # The text part shows the reference as it reads, and the note without its "↩" link back;
    # its list of links holds only links that lead somewhere.
    assert "Ketamine works fast[1]; see the guide [1]" in edition.text
    assert "1. A note, with a source [2]." in edition.text and "↩" not in edition.text
    links = re.findall(r"^\[\d+\] (\S+)", edition.text, re.M)
    assert len(links) == 2 and not any("#" in url for url in links)
    assert edition.preheader.startswith("Ketamine works fast; see the guide")


def test_email_links_keep_a_fragment_whose_target_the_email_holds(config):
    page = "https://www.rtrwellnesscenter.com/post/"
    body = ('<p><a href="#fn1">1</a> <a href="#gone">g</a> <a href="https://www.rtrwellnesscenter.com/post#fn1">'
            'o</a> <a href="https://www.rtrwellnesscenter.com/other/#fn1">x</a> '
            '<img src="https://www.rtrwellnesscenter.com/a.png"></p><ol><li id="fn1">n</li></ol>')
    out = email_links(body, page=page, tag=tagger(config, "newsletter", "post"))
    utm = "utm_source=newsletter&amp;utm_medium=email&amp;utm_campaign=post"
    assert out.count('href="#fn1"') == 2              # bare, and the post's own URL with it
    assert f'href="https://www.rtrwellnesscenter.com/post/?{utm}#gone"' in out
    assert f'href="https://www.rtrwellnesscenter.com/other/?{utm}#fn1"' in out   # another page
    assert '<img src="https://www.rtrwellnesscenter.com/a.png">' in out


def test_body_url_keeps_a_link_within_the_post():
    base = "https://www.rtrwellnesscenter.com/post/"
    assert body_url("#fn1", base) == "#fn1"
    assert body_url(" #section ", base) == "#section"
    assert body_url("/guide/", base) == "https://www.rtrwellnesscenter.com/guide/"
    assert body_url("other/#x", base) == "https://www.rtrwellnesscenter.com/post/other/#x"


def test_preheader_from_a_summary_leaves_out_typed_markers(config, write_post):
    write_post("summary.md", '---\ntitle: S\ndate: 2024-01-01\n'
                             'summary: "Fast relief[1] for most.[2]"\n---\nBody.\n')
    assert render_edition(_post(config, "summary"), config).preheader == "Fast relief for most."
