"""The posts folder -> Posts: front matter of any format, slug, dates, body -> sanitized HTML.

Posts are read as their own generator reads them: Markdown (`.md`, `.markdown`, `.mdx`) with
YAML, TOML, JSON or Pelican front matter (`front_matter`), reStructuredText (`rst`), keys mapped
from each generator's names (`post_fields`), dates in their forms or from the file name
(`post_dates`), the folder read recursively with page bundles (`post_folder`). A bad post becomes
a Problem naming the file and the field; the other posts go on. Nothing is skipped silently.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time
from functools import cache, partial
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo

import nh3
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator
from slugify import slugify

from pipeline.config import Config
from pipeline.errors import ConfigError, PipelineError, PostError
from pipeline.fields import RANGE, date_in_range, is_http_url, year_out_of_range
from pipeline.intake import front_matter
from pipeline.intake.leftovers import clean_body
from pipeline.intake.permalinks import post_url
from pipeline.intake.post_dates import DATE_FORMS, NotADate, name_date, parse_date
from pipeline.intake.post_fields import map_fields
from pipeline.intake.post_folder import POST_SUFFIXES, PostFile, scan
from pipeline.intake.textfile import NotUtf8, read_utf8
from pipeline.models import Post, Problem, Severity
from pipeline.networks.registry import NETWORKS
from pipeline.render.links import absolute, body_url

if TYPE_CHECKING:
    from markdown_it import MarkdownIt

log = logging.getLogger(__name__)

SUFFIXES = POST_SUFFIXES
ALLOWED_TAGS = (nh3.ALLOWED_TAGS - {"map", "area", "nav", "header", "footer"})
ALLOWED_ATTRS = {
    "a": {"href", "title"}, "img": {"src", "alt", "title", "width", "height"},
    "td": {"align", "colspan", "rowspan"}, "th": {"align", "colspan", "rowspan"},
    "code": {"class"}, "ol": {"start"}, "abbr": {"title"}, "sup": {"id"}, "li": {"id"},
}
URL_ATTRS = {"href", "src"}
URL_SCHEMES = {"http", "https", "mailto"}   # the only schemes an href or src in an edition may have
MISSING_DATE = ("front matter: 'date' is missing; add `date: ...` "
                "(or start the file name with it: 2024-03-12-name.md)")


@cache
def _markdown() -> MarkdownIt:
    """The Markdown parser, made on the first body converted: building it (linkify-it's patterns
    too) takes some 10 ms, which the modules that import this one for `sanitize` never need."""
    from markdown_it import MarkdownIt
    from mdit_py_plugins.footnote import footnote_plugin

    return (MarkdownIt("commonmark", {"html": True, "linkify": True})
            .enable(["table", "strikethrough", "linkify"]).use(footnote_plugin))


class SocialFields(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    x: str | None = None
    mastodon: str | None = None
    bluesky: str | None = None
    linkedin: str | None = None
    threads: str | None = None
    telegram: str | None = None
    facebook: str | None = None
    thread: bool = False


class FrontMatter(BaseModel):
    """The pipeline's fields of a post, once `post_fields` has mapped the generator's keys."""

    model_config = ConfigDict(extra="ignore", frozen=True)
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


@dataclass(frozen=True, kw_only=True)
class LoadResult:
    """Posts that loaded, and one problem per file that did not (plus warnings and notes)."""

    posts: tuple[Post, ...]
    problems: tuple[Problem, ...]


@dataclass(frozen=True, kw_only=True)
class _Source:
    """A post file read: its front matter, and its body as Markdown (cleaned of template and MDX
    leftovers) or, for reStructuredText, as the HTML docutils wrote (`markdown` False)."""

    meta: dict[str, Any]
    written: Mapping[str, Any]
    body: str
    markdown: bool
    notes: list[str]


def post_files(folder: Path) -> list[Path]:
    """The post files under `folder` (recursively), sorted by path."""
    return [item.path for item in scan(folder).posts]


def load_posts(config: Config, folder: Path | None = None) -> LoadResult:
    """Load every post under the posts folder. Never raises for a bad post; every file that is
    not read is named too."""
    folder = folder or config.path(config.posts)
    if not folder.is_dir():
        problem = Problem(where=str(folder), message="posts folder not found (config key `posts`)")
        return LoadResult(posts=(), problems=(problem,))
    found = scan(folder)
    posts: list[Post] = []
    problems: list[Problem] = []
    for item in found.posts:
        try:
            post, warnings = load_post(item.path, config, display=_display(item.path, config),
                                       bundle=item.bundle)
        except PostError as exc:
            problems.extend(Problem(where=exc.path, message=reason) for reason in exc.reasons)
            continue
        posts.append(post)
        problems.extend(warnings)
    problems.extend(Problem(where=_display(u.path, config), message=u.reason, severity=u.severity)
                    for u in found.unread)
    _check_unique(posts, problems)
    posts.sort(key=lambda p: (p.date, p.slug))
    return LoadResult(posts=tuple(posts), problems=tuple(problems))


def _display(path: Path, config: Config) -> str:
    # The folder resolved, not the file: a linked post is shown where it is linked.
    try:
        return (path.parent.resolve() / path.name).relative_to(config.root.resolve()).as_posix()
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


def load_post(path: Path, config: Config, *, display: str | None = None, bundle: bool = False
              ) -> tuple[Post, list[Problem]]:
    """Load one post. Raises PostError naming the file and field; returns warnings alongside.
    `bundle`: the file is its folder's page (Hugo's NAME/index.md): named after the folder."""
    where = display or str(path)
    item = PostFile(path=path, bundle=bundle)
    source = _read(path, where)
    mapped = map_fields(source.meta, source.written)
    fields, keys = dict(mapped.fields), dict(mapped.keys)
    problems: list[str] = []
    if "date" not in fields:
        problems += _name_date(item.name, fields, keys)
    notes = list(source.notes)
    if "title" not in fields and (found := _fallback_title(source)):
        fields["title"], keys["title"] = found[0], "title"
        notes.append(f"no `title:`; using {found[0]!r} ({found[1]}); set `title:` to choose")
    fm = None
    try:
        fm = _validate(fields, keys, where, skip={"date"} if problems else set())
    except PostError as exc:
        problems += exc.reasons
    if not _has_text(source):
        problems.append("empty body: write the article below the front matter")
    if problems or fm is None:
        raise PostError(where, *problems)
    post = _build(fm, source, item, where, config, categories=mapped.categories)
    warnings = [Problem(where=where, severity=Severity.WARNING, message=m)
                for m in (*mapped.warnings, *notes)]
    return post, warnings


def _read_text(path: Path, where: str) -> str:
    try:
        return read_utf8(path)
    except NotUtf8 as exc:
        raise PostError(where, f"{exc}; save the file as UTF-8") from None
    except OSError as exc:          # a dangling link, a file without read permission
        raise PostError(where, f"cannot be read ({exc.strerror or exc})") from None


def _read(path: Path, where: str) -> _Source:
    """The file's front matter and body, by its kind: reStructuredText, or Markdown/MDX."""
    text = _read_text(path, where)
    if path.suffix.lower() == ".rst":
        # Here, not at the top: docutils takes a tenth of a second to import, and few blogs use it.
        from pipeline.intake.rst import RstError, read_rst

        try:
            doc = read_rst(text)
        except RstError as exc:
            raise PostError(where, f"reStructuredText could not be read ({exc})") from None
        return _Source(meta=doc.meta, written={}, body=doc.html, markdown=False, notes=list(doc.warnings))
    try:
        split = front_matter.split(text)
    except front_matter.FrontMatterError as exc:
        raise PostError(where, str(exc)) from None
    body, notes = clean_body(split.body, first_line=split.first_line, mdx=path.suffix.lower() == ".mdx")
    return _Source(meta=split.meta, written=split.written, body=body, markdown=True, notes=list(notes))


def _has_text(source: _Source) -> bool:
    if source.markdown:
        return bool(source.body.strip())
    return bool(nh3.clean(source.body, tags=set()).strip()) or "<img" in source.body


_H1 = re.compile(r"^#[ \t]+(.+?)[ \t#]*$", re.M)


def _fallback_title(source: _Source) -> tuple[str, str] | None:
    """A title for a post whose front matter has none, where the author wrote one elsewhere, and
    where: another `...title:` key, Eleventy's navigation key, else the body's first `# heading`.
    (Eleventy sites often compute titles in JavaScript data files, which the pipeline does not
    run.) Never the file name: an email's subject is not to be guessed."""
    titled = next(((str(k), v.strip()) for k, v in source.meta.items()
                   if str(k).lower().endswith("title") and str(k).lower() not in ("subtitle", "title")
                   and isinstance(v, str) and v.strip()), None)
    if titled:          # 11ty's own blog writes `newstitle:`; Hugo themes `linkTitle:`
        return titled[1], f"its `{titled[0]}:`"
    navigation = next((v for k, v in source.meta.items() if str(k).lower() == "eleventynavigation"), None)
    if isinstance(navigation, dict) and isinstance(navigation.get("key"), str) and navigation["key"].strip():
        return navigation["key"].strip(), "eleventyNavigation.key"
    if source.markdown and (heading := _H1.search(source.body)):
        return heading.group(1).strip(), "the first heading"
    return None


def _name_date(name: str, fields: dict[str, Any], keys: dict[str, str]) -> list[str]:
    """The date a Jekyll/Eleventy/Pelican file name (or a page bundle's folder) starts with, put
    into `fields` when the front matter has none; the problem with it, if any."""
    named = name_date(name)
    if named is None:
        return []
    written, day = named
    if day is None:
        return [f"file name: {written!r} is not a date; correct it, or add `date: ...`"]
    if not date_in_range(day):
        return [f"file name: date {written} is outside {RANGE}; correct it, or add `date: ...`"]
    fields["date"] = day
    keys["date"] = "date"
    return []


def _validate(fields: dict[str, Any], keys: Mapping[str, str], where: str, skip: set[str]
              ) -> FrontMatter | None:
    """The fields, validated. Raises PostError with every problem at once, each naming the key
    as the post wrote it; `skip`: fields whose problem is already reported (None when that is
    the only one)."""
    fields = dict(fields)
    problems: list[str] = []
    bad = set(skip)
    for field in ("date", "publish_at"):
        if fields.get(field) is not None:
            try:
                fields[field] = _parse_date(fields[field], keys.get(field, field), where)
            except PostError as exc:
                problems += exc.reasons
                bad.add(field)
    fm = None
    try:
        fm = FrontMatter.model_validate(fields)
    except ValidationError as exc:
        problems += [_field_problem(err, keys) for err in exc.errors() if err["loc"][0] not in bad]
    if problems:
        raise PostError(where, *problems)
    return fm


def _field_problem(err: Any, keys: Mapping[str, str]) -> str:
    """One pydantic error of the front matter as a line naming the key as written."""
    first = str(err["loc"][0])
    field = ".".join([keys.get(first, first), *(str(p) for p in err["loc"][1:])])
    if err["type"] == "missing":
        return MISSING_DATE if field == "date" else f"front matter: {field!r} is missing; add `{field}: ...`"
    if err["type"] == "extra_forbidden":
        known = ", ".join(n for n in (*NETWORKS, "thread"))
        return f"front matter: {field!r} is not a known key (known: {known})"
    return f"front matter: {field!r} {err['msg'].lower()} (got {err.get('input')!r})"


def _parse_date(value: Any, field: str, where: str) -> datetime | date:
    """A front matter date in one of the forms generators write (see `post_dates`), in
    1970-2200: outside it date arithmetic overflows later (year 1 minus a week), so it is refused
    here, where the message can name the file and the field."""
    if isinstance(value, datetime | date):
        return _in_range(value, value.isoformat(), field, where)
    text = " ".join(str(value).split())
    if year_out_of_range(text):      # 0000-01-01, 99999-01-01: years `datetime` cannot hold
        raise PostError(where, f"front matter: {field!r} is {text}, outside {RANGE}")
    try:
        parsed = parse_date(value)
    except NotADate:
        raise PostError(where, f"front matter: {field!r} is {text!r}, not a date ({DATE_FORMS})") from None
    return _in_range(parsed, text, field, where)


def _in_range(when: datetime | date, shown: str, field: str, where: str) -> datetime | date:
    if not date_in_range(when):
        raise PostError(where, f"front matter: {field!r} is {shown}, outside {RANGE}")
    return when


def _aware(value: datetime | date, tz: ZoneInfo) -> datetime:
    if not isinstance(value, datetime):
        value = datetime.combine(value, time(0, 0))
    return value if value.tzinfo else value.replace(tzinfo=tz)


def _folder_url(url: str) -> str:
    """`url` ending in `/`: a page bundle's files live below its page, and `urljoin` resolves
    `image.jpg` against `.../post` to `.../image.jpg`, against `.../post/` to `.../post/image.jpg`."""
    parts = urlsplit(url)
    return url if parts.path.endswith("/") else urlunsplit(parts._replace(path=parts.path + "/"))


def _relative(url: str) -> bool:
    """A path relative to the page (`cover.jpg`, `img/a.png`), not to the site or absolute."""
    url = url.strip()
    return not urlsplit(url).scheme and not url.startswith("/")


def _build(fm: FrontMatter, source: _Source, item: PostFile, where: str, config: Config, *,
           categories: tuple[str, ...]) -> Post:
    when = _aware(fm.date, config.tz)
    problems: list[str] = []
    slug = slugify(fm.slug or item.name)
    if not slug:
        problems.append("slug is empty; set `slug:` to letters and digits")
    canonical = (fm.canonical_url or "").strip()
    if not canonical:
        try:
            canonical = post_url(config, slug=slug, date=when, path=item.path, categories=categories,
                                 meta=MappingProxyType(source.meta))
        except ConfigError:
            raise                   # the site's config, not this post: one line, for every post
        except PipelineError as exc:
            problems.append(str(exc))
    if canonical and not is_http_url(canonical):
        problems.append(f"front matter: 'canonical_url' is {canonical!r}, not an absolute http(s) URL")
    # Relative links and images resolve against the page; a bundle's live in its folder.
    base = _folder_url(canonical) if item.bundle else canonical
    image = None
    if fm.image:
        image = absolute(fm.image, base if item.bundle and _relative(fm.image) else config.site.url + "/")
    # Checked after resolving: `absolute` keeps any scheme (javascript:, data:, file:), and only
    # http(s) may reach an edition's <img src>. A path on the site is made absolute, as before.
    if image is not None and not is_http_url(image):
        problems.append(f"front matter: 'image' is {fm.image!r}, not an http(s) URL; give "
                        "https://... or a path on the site such as /images/photo.jpg")
    if problems:
        raise PostError(where, *problems)
    body_html: str | Callable[[], str]
    if source.markdown:
        # Converted when first read: a command that sends or shows one post of many (or none)
        # converts only that one.
        body_markdown, body_html = source.body, partial(markdown_to_html, source.body, base=base)
    else:
        # reStructuredText: the HTML docutils wrote, sanitized; Markdown accepts it as is.
        body_html = sanitize(source.body, rewrite=lambda url: body_url(url, base))
        body_markdown = body_html
    social = {n: getattr(fm.social, n) for n in NETWORKS if getattr(fm.social, n)}
    return Post(
        path=where, slug=slug, title=fm.title, date=when, canonical_url=canonical,
        body_markdown=body_markdown, body_html=body_html,
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
    return sanitize(_markdown().render(markdown), rewrite=lambda url: body_url(url, base))


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
