"""A post's canonical URL, derived the way the user's site generator derives it.

Today: `site.url` + `site.permalink` (the pipeline's own pattern). See `post_url`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from pipeline.config import Config
from pipeline.render.links import canonical_url


def post_url(config: Config, *, slug: str, date: datetime, path: Path,
             categories: Sequence[str] = (), meta: Mapping[str, Any] | None = None) -> str:
    """The canonical URL of the post at `path` (its file), with its slug, date, categories and
    front matter (`meta`), as the site publishes it."""
    return canonical_url(config.site, slug, date)
