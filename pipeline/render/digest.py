"""Posts -> one digest Edition: several articles in one email, each with its title, byline,
image, summary (or an excerpt), a "Read more" link and its own canonical footer.

Rendered like `render_edition`: Jinja2 fills `digest.template` (MJML), compiled once, CSS inlined;
the text part comes from the `.txt.j2` beside it. Links carry the UTM parameters of `channel`,
with the digest's key as the campaign. Whether an empty digest is sent at all is the caller's
choice (`digest.empty`); rendered with no posts, the digest is the short note.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date
from typing import Any

from babel.dates import format_date
from markupsafe import Markup

from pipeline.config import Config
from pipeline.models import Edition, Post
from pipeline.render.email import compile_mjml, one_line, post_context, render_text, site_context, tagger
from pipeline.render.links import EMAIL_CHANNEL, archive_url, footer
from pipeline.render.lint import lint
from pipeline.render.personalize import Placeholders, neutralize
from pipeline.render.text import plain_text

EMPTY_NOTE = "Nothing new this week."   # the note of a digest with no new articles
ELLIPSIS = "…"
RANGE_FORMAT = "medium"          # the Babel format of {start} and {end} in the subject
_SUBJECT_FIELD = re.compile(r"\{(site|start|end|count)\}")


def render_digest(posts: Sequence[Post], config: Config, *, key: str, start: date, end: date,
                  channel: str = EMAIL_CHANNEL) -> Edition:
    """The digest edition of `posts` (in the order given) for the period `start`–`end`.
    `key` is the edition's key and the UTM campaign; `channel` names the UTM source."""
    tag = tagger(config, channel, key)
    subject = digest_subject(config, start=start, end=end, count=len(posts))
    preheader = one_line(" · ".join(p.title for p in posts) if posts else EMPTY_NOTE)
    site = site_context(config, tag)
    context = {
        "site": site, "subject": neutralize(subject),
        "preheader": neutralize(preheader), "recipient": Placeholders(),
        "note": EMPTY_NOTE, "start": _date(start, config), "end": _date(end, config),
        # "View in browser": the digest's archive page, else (no public `pipeline serve`) the site.
        "view_url": archive_url(config, key) or site["url"],
    }
    items = [_item(post, config, tag) for post in posts]
    template = config.digest.template
    html = compile_mjml(config, template, {
        **context, "posts": [{**item, "footer": Markup(foot_html)} for item, foot_html, _ in items]})
    text = render_text(config, template, {
        **context, "posts": [{**item, "footer": foot_text} for item, _, foot_text in items]})
    return Edition(key=key, subject=subject, preheader=preheader, html=html, text=text,
                   lint=tuple(lint(html, where=f"digest {key}", clip_bytes=config.email.clip_bytes)))


def digest_subject(config: Config, *, start: date, end: date, count: int) -> str:
    """`digest.subject` with {site}, {start}, {end} and {count} filled; always one line. Other
    braces are left as they are."""
    values = {"site": config.site.name, "start": _date(start, config), "end": _date(end, config),
              "count": str(count)}
    return one_line(_SUBJECT_FIELD.sub(lambda m: values[m.group(1)], config.digest.subject))


def excerpt(html: str, words: int) -> str:
    """The first `words` words of the running text of `html`, cut at a word, with "…" when
    anything was cut off."""
    all_words = plain_text(html).split()
    if len(all_words) <= words:
        return " ".join(all_words)
    return " ".join(all_words[:words]).rstrip(" ,;:.–—-") + ELLIPSIS


def _item(post: Post, config: Config, tag: Any) -> tuple[dict[str, Any], str, str]:
    """One article's template context, and its footer in HTML and text (all neutralized)."""
    item = post_context(post, config, tag)
    item["excerpt"] = item["summary"] or neutralize(excerpt(post.body_html,
                                                            config.digest.excerpt_words))
    foot = footer(post, config, href=tag(post.canonical_url))
    return item, neutralize(foot.html), neutralize(foot.text)


def _date(day: date, config: Config) -> str:
    return format_date(day, format=RANGE_FORMAT, locale=config.site.locale)
