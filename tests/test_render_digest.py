"""Digest editions: golden output, one footer per article, subject and preheader, placeholders,
UTM campaign, the empty-digest note, lint, and placeholder injection."""

from __future__ import annotations

import dataclasses
import re
from datetime import date
from pathlib import Path

import pytest

from pipeline.config import Config, load_config
from pipeline.errors import ConfigError
from pipeline.intake.posts import load_posts
from pipeline.models import Post
from pipeline.render.digest import EMPTY_NOTE, excerpt, render_digest
from pipeline.render.personalize import Fill

KEY = "digest-weekly-newsletter-2026-11-30"
START, END = date(2026, 11, 23), date(2026, 11, 30)
VALUES = {"name": "Ada <Lovelace>", "email": "ada@example.com",
          "unsubscribe_url": "https://news.example.com/unsubscribe/TOKEN",
          "manage_url": "https://news.example.com/manage/TOKEN"}


def _posts(config: Config) -> tuple[Post, ...]:
    return load_posts(config).posts


def _digest(posts, config, **kwargs):
    return render_digest(posts, config, **{"key": KEY, "start": START, "end": END, **kwargs})


def _with_digest(project: Path, settings: str) -> Config:
    """The shipped config with a `digest:` section (YAML lines, indented by two) appended."""
    path = project / "config.yaml"
    path.write_text(path.read_text(encoding="utf-8") + "\ndigest:\n" + settings, encoding="utf-8")
    return load_config(path)


def test_digest_of_shipped_posts_matches_golden(config, golden):
    edition = _digest(_posts(config), config)
    golden("digest/email.html", edition.html)
    golden("digest/email.txt", edition.text)


def test_every_article_has_title_link_byline_excerpt_and_its_own_footer(config):
    posts = _posts(config)
    assert len(posts) == 3
    edition = _digest(posts, config)
    assert edition.key == KEY
    assert edition.html.count("Originally published at ") == len(posts)
    assert edition.text.count("Originally published at ") == len(posts)
    assert edition.html.count("Read more") == len(posts)
    assert edition.text.count("Read more: https://") == len(posts)
    assert "3 new articles from RTR Wellness Center" in edition.html
    assert "3 new articles from RTR Wellness Center" in edition.text
    for post in posts:
        tagged = (post.canonical_url.rstrip("/") + "/?utm_source=newsletter&amp;utm_medium=email"
                  f"&amp;utm_campaign={KEY}")
        assert re.search(r'Originally published at <a href="' + re.escape(tagged) + r'"[^>]*>'
                         r'www\.rtrwellnesscenter\.com</a> on \w+ \d+, \d{4}\.', edition.html)
        assert f"Originally published at {post.canonical_url} on " in edition.text
        assert edition.html.count(f'href="{tagged}"') >= 3     # title, "Read more", footer
        assert post.title in edition.text
    # Articles appear in the order given.
    titles = [edition.text.index(p.title) for p in posts]
    assert titles == sorted(titles)
    assert "Dr. Renée Alvarez · March 12, 2024" in edition.text
    # The image keeps its alt text; a summary is used as is, a post without one gets an excerpt.
    assert 'alt="A quiet treatment room with a reclining chair, a blanket and soft window light"' \
        in edition.html
    assert "A first ketamine infusion is calmer than most people expect." in edition.html
    assert "Serial infusions have been performed 3 times per week, but…" in edition.html
    assert "## Sources" not in edition.text and "PMC4810965" not in edition.html


def test_excerpt_is_cut_at_a_word_with_an_ellipsis(config, project):
    assert excerpt("<p>one two, three four</p>", 2) == "one two…"
    assert excerpt("<p>one two</p><ul><li>three</li></ul>", 3) == "one two three"
    assert excerpt("<p>Zürich,   São\nPaulo</p>", 10) == "Zürich, São Paulo"
    short = _with_digest(project, "  excerpt_words: 5\n")
    text = _digest(_posts(short)[:1], short).text
    assert "In recent years, ketamine has…" in text


def test_subject_has_the_date_range_and_is_configurable(config, project):
    edition = _digest(_posts(config), config)
    assert edition.subject == "RTR Wellness Center: new articles, Nov 23, 2026 – Nov 30, 2026"
    assert f"<title>{edition.subject}</title>" in edition.html
    custom = _with_digest(project, '  subject: "{count} new at {site} ({start} to {end}) {other}"\n')
    assert _digest(_posts(custom), custom).subject == \
        "3 new at RTR Wellness Center (Nov 23, 2026 to Nov 30, 2026) {other}"


def test_subject_dates_follow_the_site_locale(project):
    path = project / "config.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace("locale: en_US", "locale: fr_FR"),
                    encoding="utf-8")
    config = load_config(path)
    edition = _digest(_posts(config), config)
    assert edition.subject == "RTR Wellness Center: new articles, 23 nov. 2026 – 30 nov. 2026"
    assert "Publié" not in edition.text and "1 septembre 2020" in edition.text


def test_subject_with_a_newline_is_a_config_error(project):
    with pytest.raises(ConfigError, match=r"digest\.subject: must be a single line"):
        _with_digest(project, '  subject: "New\\nBcc: victim@example.com"\n')


@pytest.mark.parametrize("settings", ["  empty: send\n", "  excerpt_words: 0\n", "  extra: 1\n"])
def test_bad_digest_settings_are_config_errors(project, settings):
    with pytest.raises(ConfigError, match=r"digest\."):
        _with_digest(project, settings)


def test_subject_and_preheader_are_single_lines(config):
    posts = [dataclasses.replace(p, title=f"Line one\r\nBcc: victim{i}@example.com\u2028x")
             for i, p in enumerate(_posts(config))]
    odd_site = config.model_copy(update={"site": config.site.model_copy(update={"name": "A\nB"})})
    for cfg in (config, odd_site):
        for items in (posts, []):
            edition = _digest(items, cfg)
            for value in (edition.subject, edition.preheader):
                assert value == " ".join(value.split()), value
    edition = _digest(posts, config)
    assert edition.preheader.count(" · ") == len(posts) - 1
    assert edition.preheader.startswith("Line one Bcc: victim0@example.com x · Line one")


def test_preheader_lists_the_titles(config):
    posts = _posts(config)
    edition = _digest(posts, config)
    assert edition.preheader == " · ".join(p.title for p in posts)
    assert edition.preheader in edition.html


def test_placeholders_survive_and_fill_per_recipient(config):
    edition = _digest(_posts(config), config)
    for part in (edition.html, edition.text):
        assert "{{ recipient.name }}" in part
        assert "{{ recipient.unsubscribe_url }}" in part
    html = Fill.of(edition.html, escape=True)(VALUES)
    text = Fill.of(edition.text, escape=False)(VALUES)
    assert "Hi Ada &lt;Lovelace&gt;," in html and "{{ recipient" not in html
    assert 'href="https://news.example.com/unsubscribe/TOKEN"' in html
    assert text.startswith("Hi Ada <Lovelace>,")
    assert "Unsubscribe: https://news.example.com/unsubscribe/TOKEN" in text


def test_site_links_carry_utm_of_the_channel_with_the_digest_key_as_campaign(config):
    edition = _digest(_posts(config), config, channel="weekly")
    site_links = [u for u in re.findall(r'href="([^"]+)"', edition.html)
                  if u.startswith("https://www.rtrwellnesscenter.com")]
    assert len(site_links) >= 10
    for url in site_links:
        assert url.endswith(f"?utm_source=weekly&amp;utm_medium=email&amp;utm_campaign={KEY}"), url
    # Images are files, not visits: their src never carries UTM parameters.
    images = re.findall(r'<img[^>]*src="([^"]+)"', edition.html)
    assert images == ["https://www.rtrwellnesscenter.com/images/infusion-room.jpg"]
    assert "utm_campaign=2020-09-01" not in edition.html + edition.text
    for url in re.findall(r"https://www\.rtrwellnesscenter\.com\S*utm_\S*", edition.text):
        assert url.endswith(f"utm_source=weekly&utm_medium=email&utm_campaign={KEY}"), url


def test_empty_digest_renders_the_note(config):
    edition = _digest([], config)
    assert edition.preheader == EMPTY_NOTE
    assert EMPTY_NOTE in edition.html and EMPTY_NOTE in edition.text
    assert "Originally published" not in edition.html + edition.text
    assert "Read more" not in edition.html + edition.text
    assert "{{ recipient.unsubscribe_url }}" in edition.html
    assert "Unsubscribe: {{ recipient.unsubscribe_url }}" in edition.text
    assert edition.lint == ()


def test_one_article_is_singular(config):
    edition = _digest(_posts(config)[:1], config)
    assert "1 new article from RTR Wellness Center" in edition.text
    assert edition.text.count("Originally published at ") == 1


def test_shipped_posts_lint_clean(config):
    assert _digest(_posts(config), config).lint == ()


def test_post_without_image_alt_is_linted(config):
    posts = [dataclasses.replace(p, image_alt=None) for p in _posts(config)]
    messages = [p.message for p in _digest(posts, config).lint]
    assert any(m.startswith("image without alt text: https://www.rtrwellnesscenter.com/images/")
               for m in messages)


def test_post_cannot_inject_a_placeholder(config, write_post):
    write_post("inject.md", """
        ---
        title: "Hi {{ recipient.email }}"
        author: "{{ recipient.unsubscribe_url }}"
        date: 2024-01-01
        image: /x.png
        image_alt: "{{ recipient.name }}"
        ---
        Your address is {{ recipient.email }} and `{{ recipient.unsubscribe_url }}`.
    """)
    write_post("inject-summary.md", """
        ---
        title: Summary
        summary: "Mail {{ recipient.email }}"
        date: 2024-01-02
        ---
        Body.
    """)
    posts = [p for p in _posts(config) if p.slug.startswith("inject")]
    assert len(posts) == 2
    edition = _digest(posts, config)
    for part, escape in ((edition.html, True), (edition.text, False)):
        filled = Fill.of(part, escape=escape)(VALUES)
        assert "ada@example.com" not in filled
        assert filled.count("/unsubscribe/TOKEN") == 1     # the unsubscribe link only
        assert filled.count("Ada") == 1                     # "Hi Ada," only
