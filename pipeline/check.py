"""`pipeline check`: config, templates and every post, with every problem found (not the first)."""

from __future__ import annotations

from datetime import UTC, datetime

import jinja2

from pipeline.config import Config
from pipeline.errors import PipelineError
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
