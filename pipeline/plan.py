"""What is due: which posts may be sent, and the deterministic key of each delivery. Pure."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from pipeline.errors import PipelineError
from pipeline.models import Post

DRY_RUN_PREFIX = "dry-run:"


def publishable(posts: Sequence[Post], now: datetime) -> list[Post]:
    """Posts that any channel may send: not drafts, not dated in the future, oldest first."""
    return [p for p in posts if not p.draft and p.date <= now]


def select_posts(posts: Sequence[Post], slugs: Sequence[str], now: datetime) -> list[Post]:
    """The posts a `publish` names, or the newest publishable post. Raises PipelineError for a
    slug that does not exist, a draft, or a post dated in the future."""
    if not slugs:
        ready = publishable(posts, now)
        if not ready:
            raise PipelineError("no post to publish: every post is a draft or dated in the future")
        return [ready[-1]]
    by_slug = {p.slug: p for p in posts}
    chosen = []
    for slug in slugs:
        post = by_slug.get(slug)
        if post is None:
            raise PipelineError(f"no post with slug {slug!r} (see `pipeline preview` for the slugs)")
        if post.draft:
            raise PipelineError(f"{post.path}: is a draft (draft: true); it is never sent")
        if post.date > now:
            raise PipelineError(f"{post.path}: is dated {post.date.isoformat()}, in the future; "
                                "it is not sent before then")
        chosen.append(post)
    return chosen


def key_prefix(channel: str, edition: str, *, dry_run: bool) -> str:
    """`[dry-run:]<channel>:<edition>:`; an email key adds the address, a social key the network."""
    return f"{DRY_RUN_PREFIX if dry_run else ''}{channel}:{edition}:"


def email_key(channel: str, edition: str, address: str, *, dry_run: bool = False) -> str:
    """e.g. `newsletter:2020-09-01-ketamine:reader@example.com`."""
    return key_prefix(channel, edition, dry_run=dry_run) + address.lower()


def social_key(channel: str, edition: str, network: str, part: int = 0, *, dry_run: bool = False) -> str:
    """e.g. `mastodon:2020-09-01-ketamine:mastodon`, and `...:2` for a thread's second part."""
    return key_prefix(channel, edition, dry_run=dry_run) + network + (f":{part}" if part > 1 else "")


def article_key(channel: str, edition: str, *, dry_run: bool = False) -> str:
    """e.g. `devto:2020-09-01-ketamine:article`."""
    return key_prefix(channel, edition, dry_run=dry_run) + "article"
