"""Render posts and write what each channel would receive to disk, for a person to look at.

No network access: `pipeline preview` can run anywhere, any time. With feeds in `sources:` it
also reads their stored entries from the state database (what `pipeline fetch` stored).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pipeline.config import Config
from pipeline.errors import PipelineError
from pipeline.intake.posts import LoadResult, load_posts
from pipeline.intake.sources import load_all
from pipeline.models import Post, Problem, Rendered, Severity
from pipeline.render.email import render_edition
from pipeline.render.links import footer
from pipeline.render.personalize import Fill
from pipeline.render.social import snippets, threads

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Batch:
    """Posts rendered, and every problem met on the way (errors skip their post only)."""

    rendered: tuple[Rendered, ...]
    problems: tuple[Problem, ...]

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity is Severity.ERROR]


@dataclass(frozen=True, kw_only=True)
class Articles:
    """What `preview` shows: the posts (and, unless posts only, the feed entries ready to go out),
    the posts of `posts/` alone (the Atom feed lists only those), and how many feed entries are
    still settling."""

    loaded: LoadResult
    local: tuple[Post, ...]
    settling: int = 0


def load_articles(config: Config, *, posts_only: bool = False, now: datetime | None = None) -> Articles:
    """Read `posts/` once, and the stored feed entries unless `posts_only`."""
    now = now or datetime.now(UTC)
    local = load_posts(config)
    if posts_only or not config.feeds:
        return Articles(loaded=local, local=local.posts)
    from pipeline.store.feed_entries import stored_posts

    loaded = load_all(config, now=now, local=local)
    settling = sum(1 for p in stored_posts(config) if p.available_at is not None and p.available_at > now)
    return Articles(loaded=loaded, local=local.posts, settling=settling)


def render_post(post: Post, config: Config) -> Rendered:
    """Email edition, snippets and footer of one post. Raises PipelineError."""
    edition = render_edition(post, config)
    return Rendered(post=post, edition=edition, snippets=snippets(post, config),
                    footer=footer(post, config), threads=threads(post, config))


def render_posts(config: Config, slugs: Sequence[str] = (), *,
                 render: Callable[[Post, Config], Rendered] = render_post,
                 loaded: LoadResult | None = None) -> Batch:
    """Load and render the posts (all, or those whose slug is in `slugs`) with `render`.
    `loaded`: the posts to render instead of those in the posts folder."""
    loaded = loaded if loaded is not None else load_posts(config)
    posts = [p for p in loaded.posts if not slugs or p.slug in slugs]
    missing = [s for s in slugs if s not in {p.slug for p in loaded.posts}]
    # With slugs, other posts' problems are not this command's business, unless a requested
    # post is missing: then the reason may be among them.
    paths = {p.path for p in posts}
    problems = [p for p in loaded.problems if not slugs or missing or p.where in paths]
    problems += [Problem(where=str(config.path(config.posts)), message=f"no post with slug {s!r}")
                 for s in missing]
    rendered = []
    for post in posts:
        try:
            item = render(post, config)
        except PipelineError as exc:
            problems.append(Problem(where=post.path, message=str(exc).removeprefix(post.path + ": ")))
            continue
        rendered.append(item)
        problems.extend(item.edition.lint)
    return Batch(rendered=tuple(rendered), problems=tuple(problems))


def sample_values(config: Config) -> dict[str, str]:
    """The recipient the preview is personalized for (config `preview:`). Its links lead to
    harmless pages of the site, never to a real subscriber's unsubscribe or manage page."""
    return {"name": config.preview.recipient_name, "email": config.preview.recipient_email,
            "unsubscribe_url": f"{config.site.url}/unsubscribe/preview",
            "manage_url": f"{config.site.url}/manage/preview"}


def write_preview(item: Rendered, config: Config, out: Path, *, now: datetime | None = None) -> Path:
    """Write DIR/<slug>/email.html, email.txt, email.eml and snippets.json; returns the folder."""
    from pipeline.render.mime import build_message, list_headers

    folder = out / item.post.slug
    folder.mkdir(parents=True, exist_ok=True)
    values = sample_values(config)
    edition = item.edition
    (folder / "email.html").write_text(Fill.of(edition.html, escape=True)(values), encoding="utf-8")
    (folder / "email.txt").write_text(Fill.of(edition.text, escape=False)(values), encoding="utf-8")
    message = build_message(edition, sender=config.sender, to=values["email"], values=values,
                            domain=config.site.host, date=now or datetime.now(UTC),
                            reply_to=config.email.reply_to, headers=list_headers(config, edition.key))
    (folder / "email.eml").write_bytes(bytes(message))
    snippets_json = {name: {**s.as_json(), **({"thread": [p.as_json() for p in item.threads[name]]}
                                              if name in item.threads else {})}
                     for name, s in item.snippets.items()}
    (folder / "snippets.json").write_text(
        json.dumps(snippets_json, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    log.info("wrote %s", folder)
    return folder
