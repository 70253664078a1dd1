"""`pipeline check`: config, templates and every post, with every problem found (not the first)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

import jinja2

from pipeline.config import Config
from pipeline.errors import PipelineError
from pipeline.intake.permalinks import site_config
from pipeline.intake.posts import load_posts
from pipeline.intake.sources import load_all
from pipeline.models import Problem
from pipeline.preview import render_posts
from pipeline.render.email import environment


def check_templates(config: Config) -> list[Problem]:
    """Syntax errors in any template under the templates folder."""
    folder = config.path(config.templates)
    if not folder.is_dir():
        return [Problem(where=str(folder), message="templates folder not found (config key `templates`)")]
    env = environment(folder.resolve())
    problems = []
    for name in env.list_templates(filter_func=lambda n: n.endswith(".j2")):
        try:
            env.parse(env.loader.get_source(env, name)[0])  # type: ignore[union-attr]
        except jinja2.TemplateSyntaxError as exc:
            where = f"{config.templates}{name}:{exc.lineno}"
            problems.append(Problem(where=where, message=exc.message or "syntax error"))
    return problems


def check_channels(config: Config) -> list[Problem]:
    """Every channel entry: a known type, valid settings, its environment variables set."""
    from pipeline.channels.registry import channel_settings

    problems = []
    for name in config.channels:
        try:
            channel_settings(config, name)
        except PipelineError as exc:
            problems += [Problem(where=line.split(": ", 1)[0], message=line.split(": ", 1)[-1])
                         for line in str(exc).splitlines()]
    return problems


def check_all(config: Config) -> list[Problem]:
    """Every problem in the channels, the templates and the articles, rendering each fully: the
    posts and the feed entries stored (settled or not; read from the state database, no network),
    so that a slug or canonical URL one of each share is found too."""
    articles = load_all(config, now=datetime.max.replace(tzinfo=UTC))
    return [*check_channels(config), *check_templates(config),
            *render_posts(config, loaded=articles).problems]


@dataclass(frozen=True, kw_only=True)
class UrlRow:
    slug: str
    url: str
    path: str


@dataclass(frozen=True, kw_only=True)
class UrlReport:
    """`check --urls`: where the canonical URLs come from, and each post's."""

    source: str                   # e.g. "Hugo (../blog/hugo.toml)"
    base_url: str
    notes: tuple[str, ...]        # what was read but not understood, or assumed
    rows: tuple[UrlRow, ...]
    problems: tuple[Problem, ...]


def check_urls(config: Config) -> UrlReport:
    """Each post's slug and canonical URL as it will be sent (a `canonical_url:` in its front
    matter, else derived), for the user to compare with the live site."""
    loaded = load_posts(config)
    rows = tuple(UrlRow(slug=p.slug, url=p.canonical_url, path=p.path) for p in loaded.posts)
    if config.site.generator == "none":
        return UrlReport(source=f"site.url + site.permalink ({config.site.permalink})",
                         base_url=config.site.url, notes=(), rows=rows, problems=loaded.problems)
    site = site_config(config)
    files = ", ".join(map(site.shown, site.files)) or f"no config file in {site.shown_root}"
    base = site.base_url or config.site.url
    notes = list(site.notes)
    if _bare_host(base) != _bare_host(config.site.url):
        # UTM tagging (utm.scope: site) and the site's host in the footer go by site.url.
        notes.append(f"site.url is {config.site.url} but {site.name} publishes at {base}; set "
                     "site.url to the same host so links to the site are tagged")
    return UrlReport(source=f"{site.name} ({files})", base_url=base, notes=tuple(notes), rows=rows,
                     problems=loaded.problems)


def _bare_host(url: str) -> str:
    return (urlsplit(url).hostname or "").removeprefix("www.")
