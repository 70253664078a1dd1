"""`pipeline check`: config, templates and every post, with every problem found (not the first)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

import jinja2

from pipeline.config import Config
from pipeline.errors import ConfigError, PipelineError
from pipeline.intake.permalinks import site_config
from pipeline.intake.posts import load_posts
from pipeline.intake.sources import load_all
from pipeline.models import Problem, Severity
from pipeline.preview import render_posts
from pipeline.render.email import environment
from pipeline.render.links import private_host


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
    from pipeline.channels.base import network_problem
    from pipeline.channels.registry import channel_settings

    problems = []
    for name in config.channels:
        try:
            cls, settings = channel_settings(config, name)
        except PipelineError as exc:
            problems += [_problem(line) for line in str(exc).splitlines()]
            continue
        # A social channel whose network is off would post nothing: no snippet is rendered for it.
        own = getattr(settings, "network", None)        # a webhook names its network
        network = own or getattr(cls, "network", None)
        if isinstance(network, str) and (line := network_problem(config, name, network,
                                                                 key="network" if own else None)):
            problems.append(_problem(line))
    return problems


def _problem(line: str) -> Problem:
    """A `file:LINE: key: message` line as a Problem."""
    where, _, message = line.partition(": ")
    return Problem(where=where, message=message)


def email_channels(config: Config) -> list[str]:
    """The channels that send email to real inboxes: every channel type that sends email except
    the outbox (which writes files). Unknown types are `check_channels`' business."""
    from pipeline.channels.registry import CHANNELS

    return [name for name, entry in config.channels.items()
            if entry.get("type") in CHANNELS and entry["type"] != "outbox"
            and "email" in CHANNELS[entry["type"]].kinds]


def check_compliance(config: Config) -> list[Problem]:
    """What sending to real inboxes needs (CAN-SPAM, the bulk senders' rules): the postal address
    in the footer, unsubscribe and manage links readers can open (https, a public host), and a
    bounce address. Nothing to say while only the outbox sends email."""
    channels = email_channels(config)
    if not channels:
        return []
    named = ", ".join(channels)
    problems = []
    if not config.site.address:
        problems.append(Problem(where=_where(config, "site", "address"), message=(
            f"required when a real email channel ({named}) is configured: the postal address readers "
            "can write to (CAN-SPAM)")))
    base = config.unsubscribe.base_url
    reasons = [*(["is not https"] if urlsplit(base).scheme != "https" else []),
               *([f"is {why}"] if (why := private_host(base)) else [])]
    if reasons:
        problems.append(Problem(where=_where(config, "unsubscribe", "base_url"), message=(
            f"{base}{'' if ('unsubscribe',) in config.key_lines else ' (the default)'} "
            f"{' and '.join(reasons)}, yet every email of {named} links to it (unsubscribe, "
            "manage subscription, view in browser) for readers to open; set it to the public https "
            "URL where `pipeline serve` answers, e.g. https://news.example.com")))
    if not config.bounces.address:
        problems.append(Problem(where=_where(config, "bounces", "address"), severity=Severity.WARNING,
                                message=(f"not set: bounces of {named} go to the From address and "
                                         "nothing reads them, so addresses that no longer exist stay "
                                         "on the list; set it to a mailbox that `pipeline bounces` "
                                         "reads (bounces.imap or bounces.maildir)")))
    return problems


def check_webhooks(config: Config) -> list[Problem]:
    """The ESP webhooks of `bounces.webhooks` can be built (a SendGrid key that is no key is found
    now, not when `pipeline serve` starts)."""
    if all(settings is None for _, settings in config.bounces.webhooks):
        return []     # none configured: their modules (and cryptography) need not load
    from pipeline.bounces.esp.registry import configured_providers

    try:
        configured_providers(config)
    except ConfigError as exc:
        return [Problem(where=line.split(": ", 1)[0], message=line.split(": ", 1)[-1])
                for line in str(exc).splitlines()]
    return []


def _where(config: Config, *key: str) -> str:
    """`config.yaml:LINE: a.b` for a key whose section is in the file; a section left out (its
    defaults apply) has no line of its own to name."""
    if (key[0],) in config.key_lines:
        return config.where(*key)
    return f"{config.source}: {'.'.join(key)}"


def check_all(config: Config) -> list[Problem]:
    """Every problem in the channels, the templates and the articles, rendering each fully: the
    posts and the feed entries stored (settled or not; read from the state database, no network),
    so that a slug or canonical URL one of each share is found too; and what sending to real
    inboxes requires."""
    articles = load_all(config, now=datetime.max.replace(tzinfo=UTC))
    return [*check_channels(config), *check_compliance(config), *check_webhooks(config),
            *check_templates(config),
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
