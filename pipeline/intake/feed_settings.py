"""The `sources:` and `feed:` sections of config.yaml: where articles come from (the posts folder
and RSS/Atom feeds), and the Atom feed the pipeline writes of its own posts.

Kept apart from config.py so the feed modules can import these models without the whole config.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator

from pipeline.fields import http_url
from pipeline.timetable.entries import parse_duration

FEED_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,39}")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PostsSource(_Model):
    """The Markdown posts in the folder named by the `posts:` key."""

    type: Literal["posts"]


class FeedSource(_Model):
    """An RSS or Atom feed whose new entries are sent like posts."""

    type: Literal["feed"]
    name: str
    url: Annotated[str, http_url("https://example.com/feed.xml", base=False)]
    tags: list[str] = []              # added to every entry's own categories
    author: str | None = None         # when an entry names no author
    include: list[str] = []           # regular expressions (case-insensitive) on title or category
    exclude: list[str] = []
    backfill: int = Field(default=0, ge=0)       # the first fetch sends the newest N entries
    settle: str = "15m"               # an entry is sent once its content has not changed this long
    timeout: float = Field(default=20, gt=0)     # seconds for the whole download, redirects included
    max_new: int = Field(default=20, ge=1)       # more new entries than this in one fetch: a flood
    # A feed whose XML is broken but whose entries can still be read has its new entries held (stored,
    # not sent) until a fetch parses cleanly: a broken document may be a truncated or tampered one.
    # `lenient: true` takes such a feed's entries at once (for a feed that is always a little broken).
    lenient: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not FEED_NAME.fullmatch(v):
            raise ValueError("must be 1-40 letters, digits, - or _ starting with a letter or digit "
                             "(it becomes part of each entry's slug), e.g. partner-blog")
        return v

    @field_validator("include", "exclude")
    @classmethod
    def _patterns(cls, v: list[str]) -> list[str]:
        for pattern in v:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a regular expression ({exc})") from None
        return v

    @field_validator("tags", mode="before")
    @classmethod
    def _tags(cls, v: Any) -> Any:
        return [t.strip() for t in v.split(",") if t.strip()] if isinstance(v, str) else v

    @field_validator("settle")
    @classmethod
    def _settle(cls, v: str) -> str:
        parse_duration(v)
        return v

    @property
    def settle_time(self) -> timedelta:
        return parse_duration(self.settle)

    def wanted(self, title: str, categories: Sequence[str]) -> bool:
        """Whether an entry passes `include` (any pattern matches its title or a category; no
        patterns: all pass) and is not caught by `exclude`."""
        def hit(patterns: list[str]) -> bool:
            return any(re.search(p, text, re.IGNORECASE) for p in patterns for text in (title, *categories))

        return (not self.include or hit(self.include)) and not hit(self.exclude)


def _source_kind(value: Any) -> str | None:
    return value.get("type") if isinstance(value, dict) else getattr(value, "type", None)


Source = Annotated[
    Annotated[PostsSource, Tag("posts")] | Annotated[FeedSource, Tag("feed")],
    Discriminator(_source_kind, custom_error_type="source_type",
                  custom_error_message="needs `type: posts` (the posts folder) or `type: feed`"),
]


def check_sources(sources: Sequence[PostsSource | FeedSource]) -> None:
    """Feed names are unique (case-insensitively: they name slugs) and the posts folder is listed
    at most once. Raises ValueError."""
    if sum(isinstance(s, PostsSource) for s in sources) > 1:
        raise ValueError("`type: posts` is listed more than once; keep one")
    seen: set[str] = set()
    for source in sources:
        if isinstance(source, FeedSource):
            if source.name.lower() in seen:
                raise ValueError(f"two feeds are named {source.name!r}; give each a unique name")
            seen.add(source.name.lower())


class FeedOutSettings(_Model):
    """The Atom feed of the posts in `posts/` (`pipeline build-feed`)."""

    out: str = "out/feed.xml"
    limit: int = Field(default=20, gt=0)       # the newest N posts
    # Where the site serves it; default <site.url>/feed.xml.
    url: Annotated[str, http_url("https://example.com/feed.xml", base=False)] | None = None
    title: str | None = None                   # default: site.name
