"""posts/*.md -> Post: front matter, slug, dates, Markdown -> sanitized HTML.

A bad post becomes a Problem naming the file and the field; the other posts go on.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import frontmatter
import nh3
import yaml
from markdown_it import MarkdownIt
from mdit_py_plugins.footnote import footnote_plugin
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator
from slugify import slugify

from pipeline.config import Config
from pipeline.errors import PostError
from pipeline.fields import RANGE, date_in_range, is_http_url, year_out_of_range
from pipeline.intake.textfile import NotUtf8, YamlTooLarge, load_yaml, read_utf8
from pipeline.models import Post, Problem, Severity
from pipeline.networks.registry import NETWORKS
from pipeline.render.links import absolute, canonical_url

log = logging.getLogger(__name__)

SUFFIXES = (".md", ".markdown")
DATE_FORMS = "YYYY-MM-DD, or YYYY-MM-DDTHH:MM:SS+HH:MM"
ALLOWED_TAGS = (nh3.ALLOWED_TAGS - {"map", "area", "nav", "header", "footer"})
ALLOWED_ATTRS = {
    "a": {"href", "title"}, "img": {"src", "alt", "title", "width", "height"},
    "td": {"align", "colspan", "rowspan"}, "th": {"align", "colspan", "rowspan"},
    "code": {"class"}, "ol": {"start"}, "abbr": {"title"}, "sup": {"id"}, "li": {"id"},
}
URL_ATTRS = {"href", "src"}
URL_SCHEMES = {"http", "https", "mailto"}   # the only schemes an href or src in an edition may have

_markdown = (MarkdownIt("commonmark", {"html": True, "linkify": True})
             .enable(["table", "strikethrough", "linkify"]).use(footnote_plugin))


class SocialFields(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    x: str | None = None
    mastodon: str | None = None
    bluesky: str | None = None
    thread: bool = False


class FrontMatter(BaseModel):
    """The fields a post's front matter may carry. Unknown fields are warned about, not fatal."""

    model_config = ConfigDict(extra="allow", frozen=True)
    title: str
    date: datetime | date
    canonical_url: str | None = None
    author: str | None = None
    summary: str | None = None
    tags: list[str] = []
    image: str | None = None
    image_alt: str | None = None
    slug: str | None = None
    draft: bool = False
    subject: str | None = None
    social: SocialFields = SocialFields()
    publish_at: datetime | None = None
    channels: list[str] = []

    @field_validator("title", "subject", "summary", "author", "image_alt")
    @classmethod
    def _one_line(cls, v: str | None) -> str | None:
        # Newlines in these fields could reach an email header; collapse all whitespace.
        return " ".join(v.split()) if v is not None else None

    @field_validator("title")
    @classmethod
    def _not_empty(cls, v: str) -> str:
        if not v:
            raise ValueError("is empty")
        return v

    @field_validator("tags", mode="before")
    @classmethod
    def _tags(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [t.strip() for t in v.split(",") if t.strip()]
        if isinstance(v, list):
            return [str(t) for t in v if t is not None and str(t).strip()]
        return v


KNOWN_FIELDS = set(FrontMatter.model_fields)


@dataclass(frozen=True, kw_only=True)
class LoadResult:
    """Posts that loaded, and one problem per file that did not (plus warnings)."""

    posts: tuple[Post, ...]
    problems: tuple[Problem, ...]


def post_files(folder: Path) -> list[Path]:
    """Markdown files in `folder`, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.suffix in SUFFIXES and p.is_file())


def load_posts(config: Config, folder: Path | None = None) -> LoadResult:
    """Load every post in the posts folder. Never raises for a bad post."""
    folder = folder or config.path(config.posts)
    if not folder.is_dir():
        problem = Problem(where=str(folder), message="posts folder not found (config key `posts`)")
        return LoadResult(posts=(), problems=(problem,))
    posts: list[Post] = []
    problems: list[Problem] = []
    for path in post_files(folder):
        try:
            post, warnings = load_post(path, config, display=_display(path, config))
        except PostError as exc:
            problems.extend(Problem(where=exc.path, message=reason) for reason in exc.reasons)
            continue
        posts.append(post)
        problems.extend(warnings)
    _check_unique(posts, problems)
    posts.sort(key=lambda p: (p.date, p.slug))
    return LoadResult(posts=tuple(posts), problems=tuple(problems))


def _display(path: Path, config: Config) -> str:
    try:
        return str(path.resolve().relative_to(config.root.resolve()))
    except ValueError:
        return str(path)


def _check_unique(posts: list[Post], problems: list[Problem]) -> None:
    seen: dict[str, str] = {}
    for post in list(posts):
        if post.slug in seen:
            problems.append(Problem(where=post.path, message=(
                f"slug {post.slug!r} is already used by {seen[post.slug]}; set a different `slug:`")))
            posts.remove(post)
        else:
            seen[post.slug] = post.path


def load_post(path: Path, config: Config, *, display: str | None = None
              ) -> tuple[Post, list[Problem]]:
    """Load one post. Raises PostError naming the file and field; returns warnings alongside."""
    where = display or str(path)
    text = _read_text(path, where)
    meta, body = _split(text, where)
    problems: list[str] = []
    try:
        fm = _validate(meta, where)
    except PostError as exc:
        problems += exc.reasons
    if not body.strip():
        problems.append("empty body: write the article below the front matter")
    if problems:
        raise PostError(where, *problems)
    warnings = [Problem(where=where, severity=Severity.WARNING,
                        message=f"front matter: unknown field {k!r} (ignored)")
                for k in (fm.model_extra or {})]
    return _build(fm, body, path, where, config), warnings


def _read_text(path: Path, where: str) -> str:
    try:
        return read_utf8(path)
    except NotUtf8 as exc:
        raise PostError(where, f"{exc}; save the file as UTF-8") from None


class _FrontMatterLoader(yaml.SafeLoader):
    """SafeLoader that leaves timestamps as strings: dates are parsed by `_parse_date`, so an
    impossible date ("2020-13-01") gets a message naming the field instead of a crash."""


_FrontMatterLoader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}


def _split(text: str, where: str) -> tuple[dict[str, Any], str]:
    handler = frontmatter.YAMLHandler()
    if not handler.detect(text):
        raise PostError(where, "no front matter: start the file with a --- block holding "
                               "title: and date:")
    try:
        fm_text, body = handler.split(text)
    except ValueError:
        raise PostError(where, "front matter is not closed: add a --- line after it") from None
    try:
        meta, _ = load_yaml(fm_text, _FrontMatterLoader)
    except YamlTooLarge as exc:
        raise PostError(where, f"front matter: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise PostError(where, f"{line}front matter is not valid YAML ({problem})") from None
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise PostError(where, "front matter must be key: value lines (a YAML mapping)")
    return meta, body


def _validate(meta: dict[str, Any], where: str) -> FrontMatter:
    """The front matter, validated. Raises PostError with every problem of its fields at once."""
    meta = {str(k): v for k, v in meta.items()}
    problems: list[str] = []
    bad_dates: set[str] = set()
    for key in ("date", "publish_at"):
        if meta.get(key) is not None:
            try:
                meta[key] = _parse_date(meta[key], key, where)
            except PostError as exc:
                problems += exc.reasons
                bad_dates.add(key)
    try:
        fm = FrontMatter.model_validate(meta)
    except ValidationError as exc:
        problems += [_field_problem(err) for err in exc.errors() if err["loc"][0] not in bad_dates]
    if problems:
        raise PostError(where, *problems)
    return fm


def _field_problem(err: Any) -> str:
    """One pydantic error of the front matter as a line naming the field."""
    field = ".".join(str(p) for p in err["loc"])
    if err["type"] == "missing":
        return f"front matter: {field!r} is missing; add `{field}: ...`"
    if err["type"] == "extra_forbidden":
        known = ", ".join(n for n in (*NETWORKS, "thread"))
        return f"front matter: {field!r} is not a known key (known: {known})"
    return f"front matter: {field!r} {err['msg'].lower()} (got {err.get('input')!r})"


def _parse_date(value: Any, field: str, where: str) -> Any:
    """A front matter date (a string, or a date YAML built from an explicit `!!timestamp`), in
    1970-2200: outside it date arithmetic overflows later (year 1 minus a week), so it is refused
    here, where the message can name the file and the field."""
    if value is None:
        return value
    if isinstance(value, datetime | date):
        return _in_range(value, value.isoformat(), field, where)
    text = " ".join(str(value).split())
    for parse in (datetime.fromisoformat,
                  lambda s: datetime.strptime(s, "%Y-%m-%d %H:%M:%S %z"),
                  lambda s: datetime.strptime(s, "%Y-%m-%d %H:%M %z")):
        try:
            parsed = parse(text)
        except ValueError:
            continue
        return _in_range(parsed, text, field, where)
    if year_out_of_range(text):      # 0000-01-01, 99999-01-01: years `datetime` cannot hold
        raise PostError(where, f"front matter: {field!r} is {text}, outside {RANGE}")
    raise PostError(where, f"front matter: {field!r} is {text!r}, not a date ({DATE_FORMS})")


def _in_range(when: datetime | date, shown: str, field: str, where: str) -> datetime | date:
    if not date_in_range(when):
        raise PostError(where, f"front matter: {field!r} is {shown}, outside {RANGE}")
    return when


def _aware(value: datetime | date, tz: ZoneInfo) -> datetime:
    if not isinstance(value, datetime):
        value = datetime.combine(value, time(0, 0))
    return value if value.tzinfo else value.replace(tzinfo=tz)


def _build(fm: FrontMatter, body: str, path: Path, where: str, config: Config) -> Post:
    when = _aware(fm.date, config.tz)
    problems: list[str] = []
    slug = slugify(fm.slug or path.stem)
    if not slug:
        problems.append("slug is empty; set `slug:` to letters and digits")
    canonical = (fm.canonical_url or "").strip() or canonical_url(config.site, slug, when)
    if not is_http_url(canonical):
        problems.append(f"front matter: 'canonical_url' is {canonical!r}, not an absolute http(s) URL")
    image = absolute(fm.image, config.site.url + "/") if fm.image else None
    # Checked after resolving: `absolute` keeps any scheme (javascript:, data:, file:), and only
    # http(s) may reach an edition's <img src>. A path on the site is made absolute, as before.
    if image is not None and not is_http_url(image):
        problems.append(f"front matter: 'image' is {fm.image!r}, not an http(s) URL; give "
                        "https://... or a path on the site such as /images/photo.jpg")
    if problems:
        raise PostError(where, *problems)
    social = {n: getattr(fm.social, n) for n in NETWORKS if getattr(fm.social, n)}
    return Post(
        path=where, slug=slug, title=fm.title, date=when, canonical_url=canonical,
        body_markdown=body, body_html=markdown_to_html(body, base=canonical),
        author=fm.author, summary=fm.summary or None, tags=tuple(fm.tags),
        image=image,
        image_alt=fm.image_alt, draft=fm.draft, subject=fm.subject,
        social=MappingProxyType(social), thread=fm.social.thread,
        publish_at=_aware(fm.publish_at, config.tz) if fm.publish_at else None,
        channels=tuple(fm.channels),
    )


def markdown_to_html(markdown: str, *, base: str) -> str:
    """Markdown -> HTML, sanitized (no scripts, event handlers or javascript: URLs), with
    relative links and images resolved against `base` so they work inside an email."""
    return sanitize(_markdown.render(markdown), rewrite=lambda url: absolute(url, base))


def sanitize(html: str, rewrite: Any = None) -> str:
    """Clean `html` to the allowed tags and attributes; `rewrite(url)` maps each href/src."""
    def attribute_filter(tag: str, attr: str, value: str) -> str | None:
        if attr not in URL_ATTRS:
            return value
        url = rewrite(value) if rewrite is not None else value
        # nh3 checks the scheme before this filter runs, and a rewrite can reveal one: "\xa0javascript:"
        # is relative to nh3, but stripped and resolved it is "javascript:". So check the result.
        return url if _safe_url(url) else None

    return nh3.clean(html, tags=set(ALLOWED_TAGS), attributes=ALLOWED_ATTRS,
                     url_schemes=set(URL_SCHEMES), link_rel=None,
                     attribute_filter=attribute_filter)


def _safe_url(url: str) -> bool:
    """An http(s) or mailto: URL, or a relative one (no scheme, as a browser reads it)."""
    scheme = urlsplit(url).scheme.lower()
    if scheme:
        return scheme in URL_SCHEMES
    # No scheme to Python; a colon before the path, query or fragment could still be one to a reader.
    return ":" not in re.split(r"[/?#]", url.strip(), maxsplit=1)[0]


def words(posts: Iterable[Post]) -> int:
    """Total word count of the posts' Markdown (used by the benchmark and the preview table)."""
    return sum(len(p.body_markdown.split()) for p in posts)
