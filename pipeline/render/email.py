"""Post -> Edition: Jinja2 fills the MJML template, mjml-python compiles it once, css-inline
inlines the CSS, and the plain-text part is made from the same sanitized content."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import css_inline
import jinja2
from babel.dates import format_date
from markupsafe import Markup
from mjml import mjml2html

from pipeline.config import Config
from pipeline.errors import RenderError
from pipeline.fields import is_http_url
from pipeline.intake.posts import sanitize
from pipeline.models import Edition, Post
from pipeline.render.links import EMAIL_CHANNEL, archive_url, email_links, footer, tag_url, utm_params
from pipeline.render.lint import lint
from pipeline.render.personalize import Placeholders, neutralize
from pipeline.render.references import strip_markers
from pipeline.render.text import first_sentence, html_to_text

_inliner = css_inline.CSSInliner(load_remote_stylesheets=False, keep_style_tags=True)


@lru_cache(maxsize=4)
def environment(templates: Path) -> jinja2.Environment:
    """The Jinja2 environment over the templates folder: autoescape for MJML/HTML, strict."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates),
        autoescape=jinja2.select_autoescape(["mjml", "mjml.j2", "html", "html.j2"],
                                            default_for_string=False),
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


def render_edition(post: Post, config: Config, *, channel: str = EMAIL_CHANNEL) -> Edition:
    """The email edition of one post, for `channel` (which names the UTM source)."""
    tag = tagger(config, channel, post.slug)
    subject = one_line(post.subject or post.title)
    # Like a snippet, a preheader cannot be followed to a note: no "[1]" in it (see references).
    preheader = one_line(strip_markers(post.summary) if post.summary
                         else first_sentence(post.body_html, _language(config)))
    body_html = neutralize(email_links(sanitize(post.body_html), page=post.canonical_url, tag=tag))
    foot = footer(post, config, href=tag(post.canonical_url))
    context = {
        "site": site_context(config, tag), "subject": neutralize(subject),
        "preheader": neutralize(preheader),
        "recipient": Placeholders(),
        # "View in browser": the edition's archive page, else (no public `pipeline serve`) the post.
        "view_url": archive_url(config, post.slug) or tag(post.canonical_url),
    }
    item = post_context(post, config, tag)
    html = compile_mjml(config, config.email.template,
                        {**context, "post": {**item, "body": Markup(body_html)},
                         "footer": Markup(neutralize(foot.html))})
    text = render_text(config, config.email.template,
                       {**context, "post": {**item, "body": neutralize(html_to_text(body_html))},
                        "footer": neutralize(foot.text)})
    return Edition(key=post.slug, subject=subject, preheader=preheader, html=html, text=text,
                   lint=tuple(lint(html, where=post.path, clip_bytes=config.email.clip_bytes,
                                   post=post)))


def compile_mjml(config: Config, template: str, context: dict[str, Any]) -> str:
    """Fill an MJML template, compile it, and inline its CSS."""
    mjml_source = _fill(config, template, context)
    try:
        html = mjml2html(mjml_source, disable_comments=True, fonts={})
    except Exception as exc:   # mjml raises a bare exception type from Rust
        raise RenderError(f"{template}: MJML does not compile ({exc})") from None
    return _inliner.inline(html)


def render_text(config: Config, template: str, context: dict[str, Any]) -> str:
    """Fill the text template that sits beside an MJML template (`x.mjml.j2` -> `x.txt.j2`)."""
    text = _fill(config, template.replace(".mjml.j2", ".txt.j2"), context)
    return "\n".join(line.rstrip() for line in text.strip().splitlines()) + "\n"


def one_line(text: str) -> str:
    """Whitespace (newlines included) collapsed: safe for a Subject or any other header."""
    return " ".join(text.split())


def _fill(config: Config, template: str, context: dict[str, Any]) -> str:
    env = environment(config.path(config.templates).resolve())
    try:
        return env.get_template(template).render(context)
    except jinja2.TemplateNotFound as exc:
        raise RenderError(f"{config.templates}{exc.name}: template not found") from None
    except jinja2.TemplateSyntaxError as exc:
        raise RenderError(f"{config.templates}{exc.name}:{exc.lineno}: {exc.message}") from None
    except jinja2.UndefinedError as exc:
        raise RenderError(f"{config.templates}{template}: {exc.message}") from None


def tagger(config: Config, channel: str, slug: str) -> Callable[[str], str]:
    """URL -> the URL with the UTM parameters of `channel`; `slug` names the campaign."""
    params = utm_params(config, channel, slug, "email")
    return lambda url: tag_url(url, params, config)


def _language(config: Config) -> str:
    return config.site.locale.split("_")[0]


def site_context(config: Config, tag: Any) -> dict[str, str]:
    """What templates see as `site`; `address` is "" when `site.address` is not set."""
    return {"name": config.site.name, "url": tag(config.site.url + "/"), "host": config.site.host,
            "language": _language(config), "address": neutralize(config.site.address or "")}


def post_context(post: Post, config: Config, tag: Any) -> dict[str, Any]:
    """What templates see as `post` (template-safe: text fields are neutralized)."""
    return {
        "title": neutralize(post.title), "author": neutralize(post.author or ""),
        "date": format_date(post.date.date(), format=config.footer.date_format,
                            locale=config.site.locale),
        "date_iso": post.date.isoformat(), "url": tag(post.canonical_url),
        # Intake lets only http(s) images through; checked again where the value meets the
        # template, since a stored feed entry written by an older version was never checked.
        # Not tagged: UTM parameters belong on links (the image's own link, post.url, has them).
        "canonical_url": post.canonical_url,
        "image": post.image if post.image and is_http_url(post.image) else None,
        "image_alt": neutralize(post.image_alt or ""), "tags": post.tags,
        "summary": neutralize(post.summary or ""), "slug": post.slug,
    }
