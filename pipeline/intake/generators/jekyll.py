"""Jekyll: `_config.yml`; a post's URL as `lib/jekyll/url.rb` and `drops/url_drop.rb` (Jekyll 4)
make it.

The pattern is the post's `permalink:`, else one from `defaults:` whose scope holds the post, else
`collections.posts.permalink`, else the site's `permalink` (a built-in style such as `date` or
`pretty`, or a pattern). Categories are the folders above `_posts/` plus `categories:`/`category:`,
lower-cased in the URL; `:title` is the file name after its date (or `slug:`), case kept.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pipeline.intake.generators.common import (
    Derived,
    PostFile,
    Shown,
    SiteConfigError,
    UrlProblem,
    base_url,
    load_data,
    one_config_file,
    text_of,
)
from pipeline.intake.slugs import jekyll_escape, jekyll_slugify

NAME = "Jekyll"
FILES = ("_config.yml", "_config.yaml", "_config.toml")
EXPECTED = "_config.yml"
STYLES = {   # lib/jekyll/configuration.rb STYLE_TO_PERMALINK
    "none": "/:categories/:title:output_ext",
    "date": "/:categories/:year/:month/:day/:title:output_ext",
    "ordinal": "/:categories/:year/:y_day/:title:output_ext",
    "pretty": "/:categories/:year/:month/:day/:title/",
    "weekdate": "/:categories/:year/W:week/:short_day/:title:output_ext",
}
# lib/jekyll/document.rb DATE_FILENAME_MATCHER: only such files under _posts/ are posts.
DATE_FILENAME = re.compile(r"^(?:.+/)*?(\d{2,4}-\d{1,2}-\d{1,2})-([^/]*)(\.[^.]+)$")
HERE = PurePosixPath(".")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


@dataclass(frozen=True, kw_only=True)
class JekyllSettings:
    base_url: str | None                  # `url`
    base_path: str                        # `baseurl`, e.g. /blog, or ""
    permalink: str                        # the posts' pattern, a style already expanded
    defaults: tuple[tuple[str, str | None, Mapping[str, Any]], ...] = ()   # (path, type, values)
    timezone: ZoneInfo | None = None
    collections: PurePosixPath = HERE                 # `source` + `collections_dir`
    notes: tuple[str, ...] = ()


def config_files(root: Path, file: str | None) -> list[Path]:
    return one_config_file(root, file, FILES)


def detect(root: Path) -> bool:
    return bool(one_config_file(root, None, FILES))


def read(files: list[Path], root: Path, shown: Shown) -> JekyllSettings:
    [path] = files
    where = shown(path)
    data = load_data(path, shown)
    collections = data.get("collections")
    posts = collections.get("posts") if isinstance(collections, Mapping) else None
    pattern = posts.get("permalink") if isinstance(posts, Mapping) else None
    if not isinstance(pattern, str):
        style = data.get("permalink", "date")
        pattern = STYLES.get(str(style), str(style))
    defaults = []
    for i, entry in enumerate(data.get("defaults") or []):
        scope = entry.get("scope") if isinstance(entry, Mapping) else None
        values = entry.get("values") if isinstance(entry, Mapping) else None
        if isinstance(scope, Mapping) and isinstance(values, Mapping):
            defaults.append((str(scope.get("path") or "").strip("/"), scope.get("type"), values))
            if isinstance(values.get("permalink"), str):
                _check(values["permalink"], f"{where}: defaults[{i}].values.permalink")
    _check(pattern, f"{where}: permalink")
    timezone = None
    if data.get("timezone"):
        try:
            timezone = ZoneInfo(str(data["timezone"]))
        except (ZoneInfoNotFoundError, ValueError):
            raise SiteConfigError(f"{where}: timezone: {data['timezone']!r} is not an IANA time "
                                  "zone") from None
    notes = []
    if data.get("url") and not base_url(data.get("url")):
        notes.append(f"{where}: url {data['url']!r} is not the public address of the site; using site.url")
    source = str(data.get("source") or ".")
    return JekyllSettings(
        base_url=base_url(data.get("url")), base_path=str(data.get("baseurl") or "").strip().rstrip("/"),
        permalink=pattern, defaults=tuple(defaults), timezone=timezone,
        collections=PurePosixPath(source.strip("/") or ".", str(data.get("collections_dir") or "")),
        notes=tuple(notes))


def _check(pattern: str, where: str) -> None:
    try:
        check_pattern(pattern)
    except ValueError as exc:
        raise SiteConfigError(f"{where}: {exc}") from None


def derive(settings: JekyllSettings, post: PostFile) -> Derived:
    """The post's URL path, `baseurl` included."""
    try:
        rel = post.rel.relative_to(settings.collections) if settings.collections != HERE else post.rel
    except ValueError:
        raise UrlProblem(f"not in the Jekyll site's folder ({settings.collections}/)") from None
    relative = rel.as_posix()
    special = next((d for d in ("_posts", "_drafts") if d in rel.parts[:-1]), None)
    match = DATE_FILENAME.match(relative)
    if special is None or not match:
        raise UrlProblem("Jekyll publishes only _posts/YYYY-MM-DD-title.md files; this one has no "
                         "page there (set canonical_url: to its address)")
    defaults = _defaults(settings, relative)
    data = {**defaults, **post.meta}
    slug = text_of(data, "slug") or match.group(2).rstrip(".")
    # document.rb `categories_from_path`: the folders before _posts, then the front matter's.
    from_path = [c for c in re.sub(rf"{special}.*", "", relative).split("/") if c]
    categories = _categories(from_path, defaults, post.meta, post.categories)
    permalink = data.get("permalink") if isinstance(data.get("permalink"), str) else settings.permalink
    when = _jekyll_time(post.date, post.meta.get("date"), settings.timezone)
    cleaned = relative[:-len(match.group(3))].replace(special, "", 1).rstrip(".")
    values = _placeholders(when, slug=slug, categories=categories, name=PurePosixPath(relative).stem,
                           path=cleaned)
    try:
        path = generate(permalink, values)
    except ValueError as exc:
        raise UrlProblem(f"permalink: {exc}") from None
    return Derived(path=settings.base_path + path)


def _defaults(settings: JekyllSettings, relative: str) -> dict[str, Any]:
    """The `defaults:` values that apply to this post, the more specific scope winning
    (lib/jekyll/frontmatter_defaults.rb)."""
    matching = [(len(path), kind is not None, values) for path, kind, values in settings.defaults
                if kind in (None, "posts") and (not path or f"{relative}/".startswith(f"{path}/"))]
    out: dict[str, Any] = {}
    for *_, values in sorted(matching, key=lambda m: (m[0], m[1])):
        out.update(values)
    return out


def _categories(from_path: list[str], defaults: Mapping[str, Any], meta: Mapping[str, Any],
                loader: tuple[str, ...]) -> list[str]:
    """document.rb: the folders above _posts, united with `categories` of the defaults and of
    the front matter (a string is split on spaces), then `category` (kept whole); the loader's
    categories when neither names any."""
    if not any(k in m for m in (defaults, meta) for k in ("categories", "category")):
        return list(dict.fromkeys([*from_path, *loader]))
    plural = [*_as_list(defaults.get("categories")), *_as_list(meta.get("categories"))]
    single = {**defaults, **meta}.get("category")
    listed = [*from_path, *plural, *(_as_list([single]) if single is not None else [])]
    return list(dict.fromkeys(str(c) for c in listed))


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):
        return [x for item in value if item is not None
                for x in (_as_list(item) if isinstance(item, list) else [item])]
    return [] if value is None else [value]


def _jekyll_time(date: datetime, raw: Any, tz: ZoneInfo | None) -> datetime:
    """The post's time as Jekyll reads it (`Time.parse(...).localtime`): a date or time written
    without an offset is local wall time (kept as written); one with an offset is converted to
    the site's `timezone`, when it sets one."""
    explicit = (isinstance(raw, datetime) and raw.tzinfo is not None) or (
        isinstance(raw, str) and re.search(r"\d[ T]?(?:[+-]\d{2}:?\d{2}|Z)\s*$", raw.strip()) is not None)
    return date.astimezone(tz) if explicit and tz else date


def _placeholders(t: datetime, *, slug: str, categories: list[str], name: str, path: str) -> dict[str, str]:
    """The URL placeholders of a post (drops/url_drop.rb); dates in English, as Ruby prints them."""
    iso = t.isocalendar()
    return {
        "path": path, "output_ext": ".html", "collection": "posts", "name": jekyll_slugify(name),
        "title": jekyll_slugify(slug, pretty=True, cased=True), "slug": jekyll_slugify(slug),
        "categories": "/".join(dict.fromkeys(c.lower() for c in categories)),
        "slugified_categories": "/".join(dict.fromkeys(jekyll_slugify(c) for c in categories)),
        "year": f"{t.year:04d}", "month": f"{t.month:02d}", "day": f"{t.day:02d}",
        "hour": f"{t.hour:02d}", "minute": f"{t.minute:02d}", "second": f"{t.second:02d}",
        "i_day": str(t.day), "i_month": str(t.month), "short_month": MONTHS[t.month - 1][:3].upper(),
        "long_month": MONTHS[t.month - 1], "short_year": f"{t.year % 100:02d}", "w_year": str(iso[0]),
        "week": f"{iso[1]:02d}", "w_day": str(iso[2]), "short_day": DAYS[t.weekday()][:3].upper(),
        "long_day": DAYS[t.weekday()], "y_day": f"{t.timetuple().tm_yday:03d}",
    }


SAMPLE = _placeholders(datetime(2020, 1, 1), slug="x", categories=[], name="x", path="x")


def check_pattern(pattern: str) -> None:
    """Raises ValueError for a placeholder Jekyll would refuse (it stops the build)."""
    generate(pattern, SAMPLE)


def generate(template: str, values: Mapping[str, str]) -> str:
    """url.rb `generate_url_from_drop` then `sanitize_url`: each `:name` replaced (escaped), then
    a leading slash, `..` and `./` dropped, repeated slashes squeezed."""
    def replace(m: re.Match[str]) -> str:
        name = m.group(1)
        pool = [name, name[:-1]] if name.endswith("_") else [name]
        winner = next((k for k in pool if k in values), None)
        if winner is None:
            raise ValueError(f"':{name}' in {template!r} is not a placeholder Jekyll knows (:year, :month, "
                             ":day, :title, :slug, :categories, :output_ext, ...)")
        return m.group(0).replace(f":{winner}", jekyll_escape(values[winner]), 1)

    url = re.sub(r":([a-z_]+)", replace, template)
    return re.sub("/+", "/", ("/" + url).replace("..", "/").replace("./", ""))

