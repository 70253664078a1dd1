"""A post's canonical URL, derived the way the user's site generator derives it, so that the
footer's "Originally published at" and every cross-post's canonical link are the article's real
address.

`site.generator: none` (the default) keeps the pipeline's own pattern: `site.url` +
`site.permalink`. Otherwise the generator's config under `site.root` (read once, see
`site_config`) and the post's file, front matter and date give its path, as in
`pipeline.intake.generators`. See `post_url` and `derive`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from pipeline.config import Config
from pipeline.errors import ConfigError, PipelineError
from pipeline.render.links import canonical_url

# The generators' modules are imported only for a blog that names one (`site.generator`).
if TYPE_CHECKING:
    from pipeline.intake.site_config import SiteConfig

log = logging.getLogger(__name__)


class PermalinkError(PipelineError):
    """This post's canonical URL cannot be derived. One line naming no file: the loader, which
    names the post as the user knows it, puts it before the message."""


@dataclass(frozen=True, kw_only=True)
class DerivedUrl:
    """A post's canonical URL and what the user should check about it (one line each)."""

    url: str
    notes: tuple[str, ...] = ()


def post_url(config: Config, *, slug: str, date: datetime, path: Path,
             categories: Sequence[str] = (), meta: Mapping[str, Any] | None = None) -> str:
    """The canonical URL of the post at `path` (its file), with its slug, date, categories and
    front matter (`meta`), as the site publishes it. Raises PermalinkError when this post's URL
    cannot be derived, ConfigError when the generator's config cannot be read; what is only
    doubtful (a template permalink) is logged as a warning."""
    derived = derive(config, slug=slug, date=date, path=path, categories=categories, meta=meta)
    for note in derived.notes:
        log.warning("%s: %s", _display(path, config), note)
    return derived.url


def derive(config: Config, *, slug: str, date: datetime, path: Path,
           categories: Sequence[str] = (), meta: Mapping[str, Any] | None = None) -> DerivedUrl:
    """`post_url` with its notes: what a caller may show as warnings next to the post."""
    if config.site.generator == "none":
        return DerivedUrl(url=canonical_url(config.site, slug, date))
    from pipeline.intake.generators.common import PostFile, UrlProblem
    from pipeline.intake.site_config import GENERATORS
    from pipeline.intake.slugs import url_path

    site = site_config(config)
    file, root = Path(os.path.abspath(path)), site.root
    if not file.is_relative_to(root):        # the same folder through a symbolic link, perhaps
        file, root = file.resolve(), root.resolve()
    try:
        rel = PurePosixPath(file.relative_to(root).as_posix())
    except ValueError:
        raise PermalinkError(f"canonical URL: the file is not inside site.root ({site.shown_root}), "
                             f"so its {site.name} URL is unknown; set canonical_url:") from None
    post = PostFile(rel=rel, file=file, date=date, meta=MappingProxyType(dict(meta or {})),
                    categories=tuple(str(c) for c in categories))
    try:
        derived = GENERATORS[site.generator].derive(site.settings, post)
    except UrlProblem as exc:
        raise PermalinkError(f"canonical URL ({site.name}): {exc}") from None
    base = site.base_url or config.site.url
    return DerivedUrl(url=base.rstrip("/") + url_path(derived.path), notes=derived.notes)


def site_config(config: Config) -> SiteConfig:
    """The blog's generator config (cached; see `site_config.read_site_config`). Raises
    ConfigError, one line naming the file, if it cannot be read (e.g. deleted since loading)."""
    from pipeline.intake.site_config import SiteConfigError, read_site_config

    try:
        return read_site_config(config.site.generator, config.path(config.site.root),
                                file=config.site.generator_config, shown_root=config.site.root)
    except SiteConfigError as exc:
        raise ConfigError(f"{config.where('site', exc.key)}: {exc}" if exc.key else str(exc)) from None


def _display(path: Path, config: Config) -> str:
    """The post's file as the loader names it: relative to config.yaml's folder when inside it."""
    try:
        return str(Path(path).resolve().relative_to(config.root.resolve()))
    except ValueError:
        return str(path)
