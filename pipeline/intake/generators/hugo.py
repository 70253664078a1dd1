"""Hugo: `hugo.toml` (or .yaml/.json, or the older `config.*`) and `config/_default/` then
`config/production/` (what `hugo` builds with), keys in any case; a page's URL as
`resources/page/page_paths.go` and `permalinks.go` make it.

A page's path is its folder under the content folder plus its `slug:` (else its file name; a
bundle's `index.md` takes its folder's name), or the `[permalinks]` pattern of its section; Hugo
then drops what a path may not hold and lower-cases it. `url:` in front matter is used as written.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

from pipeline.intake.generators.common import (
    Derived,
    PostFile,
    Shown,
    SiteConfigError,
    UrlProblem,
    base_url,
    deep_merge,
    load_data,
    lower_keys,
    text_of,
)
from pipeline.intake.slugs import hugo_remove_accents, hugo_sanitize

NAME = "Hugo"
ROOT_FILES = tuple(f"{n}.{e}" for n in ("hugo", "config") for e in ("toml", "yaml", "yml", "json"))
CONFIG_DIRS = ("config/_default", "config/production")
EXPECTED = "hugo.toml, hugo.yaml, hugo.json, config.toml, config.yaml, config.json or config/_default/"
KINDS = ("page", "home", "section", "taxonomy", "term")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December")
WEEKDAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")


@dataclass(frozen=True, kw_only=True)
class HugoSettings:
    base_url: str | None
    content_dirs: tuple[tuple[PurePosixPath, str], ...]   # (folder under the root, its language)
    languages: frozenset[str]
    default_language: str = "en"
    language_in_subdir: bool = False
    permalinks: tuple[tuple[str, str], ...] = ()        # (section path, pattern) for pages
    ugly_urls: bool = False
    ugly_sections: Mapping[str, bool] = field(default_factory=dict)
    lower: bool = True                                  # not `disablePathToLower`
    remove_accents: bool = False
    notes: tuple[str, ...] = ()


def config_files(root: Path, file: str | None) -> list[Path]:
    """The config files Hugo reads, in the order it merges them (the last wins)."""
    if file:
        return [root / file]
    first = next((root / n for n in ROOT_FILES if (root / n).is_file()), None)
    found = [first] if first else []
    for folder in CONFIG_DIRS:
        if (root / folder).is_dir():
            files = sorted(p for p in (root / folder).iterdir()
                           if p.suffix in (".toml", ".yaml", ".yml", ".json") and p.is_file())
            found += sorted(files, key=lambda p: p.stem not in ("hugo", "config"))
    return found


def detect(root: Path) -> bool:
    """A Hugo site: a hugo.* file, a config dir, or a config.* file that sets baseURL (a bare
    config.yaml could be anything's)."""
    if any((root / f"hugo.{e}").is_file() for e in ("toml", "yaml", "yml", "json")):
        return True
    if (root / CONFIG_DIRS[0]).is_dir():
        return True
    return any((root / f"config.{e}").is_file() and re.search(
        r"(?im)^\s*[\"']?baseurl[\"']?\s*[:=]", (root / f"config.{e}").read_text("utf-8", "replace"))
        for e in ("toml", "yaml", "yml", "json"))


def read(files: list[Path], root: Path, shown: Shown) -> HugoSettings:
    """The settings a page's URL depends on. Raises SiteConfigError naming the file and key."""
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for path in files:
        data = lower_keys(load_data(path, shown))
        if path.parent.parent.name == "config" and path.stem.lower() not in ("hugo", "config"):
            if "." in path.stem:          # menus.en.toml, params.fr.yaml: per-language, not ours
                continue
            data = {path.stem.lower(): data}
        merged = deep_merge(merged, data)
        origin.update(dict.fromkeys(data, shown(path)))
    notes: list[str] = []
    base = base_url(merged.get("baseurl"))
    if merged.get("baseurl") and not base:
        notes.append(f"{origin['baseurl']}: baseURL {merged['baseurl']!r} is not the public address "
                     "of the site; using site.url")
    default_language = str(merged.get("defaultcontentlanguage") or "en").lower()
    content_dirs = [(_folder(merged.get("contentdir") or "content"), default_language)]
    languages = merged.get("languages") if isinstance(merged.get("languages"), Mapping) else {}
    for lang, settings in languages.items():
        if isinstance(settings, Mapping) and isinstance(settings.get("contentdir"), str):
            content_dirs.append((_folder(settings["contentdir"]), lang))
    ugly = merged.get("uglyurls")
    return HugoSettings(
        base_url=base, content_dirs=tuple(content_dirs),
        languages=frozenset({default_language, *languages}), default_language=default_language,
        language_in_subdir=bool(merged.get("defaultcontentlanguageinsubdir")),
        permalinks=_permalinks(merged.get("permalinks"), origin.get("permalinks", "")),
        ugly_urls=ugly is True or str(ugly).lower() == "true",
        ugly_sections={str(k): bool(v) for k, v in ugly.items()} if isinstance(ugly, Mapping) else {},
        lower=not merged.get("disablepathtolower"), remove_accents=bool(merged.get("removepathaccents")),
        notes=tuple(notes))


def _folder(value: Any) -> PurePosixPath:
    return PurePosixPath(str(value).replace("\\", "/").strip("/") or ".")


def _permalinks(value: Any, where: str) -> tuple[tuple[str, str], ...]:
    """`[permalinks]` as (section, pattern) rules for pages; every pattern checked now, so a bad
    one is one config error rather than one per post."""
    if value is None:
        return ()
    if isinstance(value, list):
        raise SiteConfigError(f"{where}: permalinks: the list form (target/pattern) is not read yet; "
                              "write [permalinks.page] SECTION = 'PATTERN'")
    if not isinstance(value, Mapping):
        raise SiteConfigError(f"{where}: permalinks: must be a table of SECTION = 'PATTERN'")
    rules: list[tuple[str, str]] = []
    for key, pattern in value.items():
        if isinstance(pattern, Mapping) and key in KINDS:
            rules += [(k, p) for k, p in pattern.items() if key == "page" and isinstance(p, str)]
        elif isinstance(pattern, str):
            rules.append((key, pattern))
        else:
            raise SiteConfigError(f"{where}: permalinks.{key}: must be a pattern such as "
                                  f"'/:section/:slug/' (got {pattern!r})")
    for key, pattern in rules:
        try:
            check_pattern(pattern)
        except ValueError as exc:
            raise SiteConfigError(f"{where}: permalinks.{key}: {exc}") from None
    return tuple((key.strip(" /").lower(), pattern) for key, pattern in rules)


# -- a page's URL -----------------------------------------------------------------------------------

_ATTRIBUTE = re.compile(r":\w+(\[.+?\])?")


@dataclass(frozen=True, kw_only=True)
class _Page:
    date: datetime
    title: str
    slug: str | None
    base: str                      # the file name without extension; a bundle's folder name
    sections: tuple[str, ...]      # the section folders, outermost first
    lower: bool

    def urlize(self, text: str) -> str:
        return hugo_sanitize(text, lower=self.lower)


def derive(settings: HugoSettings, post: PostFile) -> Derived:
    """The page's path as Hugo writes it (the language prefix included)."""
    meta = {str(k).lower(): v for k, v in post.meta.items()}    # Hugo's front matter ignores case
    inside = [(folder, lang) for folder, lang in settings.content_dirs
              if folder == PurePosixPath(".") or post.rel.is_relative_to(folder)]
    if not inside:
        folders = ", ".join(f"{f}/" for f, _ in settings.content_dirs)
        raise UrlProblem(f"not in Hugo's content folder ({folders})")
    folder, lang = max(inside, key=lambda pair: len(pair[0].parts))
    parts = post.rel.relative_to(folder).parts
    stem = PurePosixPath(parts[-1]).stem
    name, _, suffix = stem.rpartition(".")
    if name and suffix.lower() in settings.languages:        # post.fr.md: a translation
        stem, lang = name, suffix.lower()
    if stem == "_index":
        raise UrlProblem("a section's _index page, not an article")
    dirs = parts[:-1]
    bundle = stem == "index"
    base = (dirs[-1] if dirs else "") if bundle else stem
    container = dirs[:-1] if bundle else dirs
    prefix = f"/{lang}" if lang != settings.default_language or settings.language_in_subdir else ""
    url = text_of(meta, "url")
    if url:
        return Derived(path=_front_matter_url(url, prefix))
    slug = text_of(meta, "slug")
    pattern = _permalink_for(settings, container)
    if pattern is None:
        path = "/" + "/".join([*container, slug or base]) + "/"
    else:
        content = post.file.parents[len(parts) - 1]
        page = _Page(date=post.date, title=text_of(meta, "title") or base, slug=slug, base=base,
                     sections=_sections(content, container), lower=settings.lower)
        path = "/" + expand(pattern, page).strip("/") + "/"
    section = container[0] if container else ""
    if path != "/" and settings.ugly_sections.get(section, settings.ugly_urls):
        path = path.rstrip("/") + ".html"
    if settings.remove_accents:
        path = hugo_remove_accents(path)
    return Derived(path=prefix + re.sub("/+", "/", hugo_sanitize(path, lower=settings.lower)))


def _front_matter_url(url: str, prefix: str) -> str:
    """`url:` as Hugo uses it: as written (not lower-cased); a relative one gets the language
    prefix; one without a file extension is a folder."""
    relative = not url.startswith("/")
    path = "/" + url.replace("\\", "/").lstrip("/")
    if path.endswith("/") or "." not in url:
        path = path.rstrip("/") + "/"
    return (prefix if relative and not path.startswith(prefix + "/") else "") + path


def _permalink_for(settings: HugoSettings, container: tuple[str, ...]) -> str | None:
    """The pattern of the most specific `[permalinks]` section containing the page."""
    folders = [c.lower() for c in container]
    best: tuple[int, str] | None = None
    for key, pattern in settings.permalinks:
        keys = key.split("/") if key else []
        if (folders[:len(keys)] == keys if keys else not folders) and (best is None or len(keys) > best[0]):
            best = (len(keys), pattern)
    return best[1] if best else None


def _sections(content: Path, container: tuple[str, ...]) -> tuple[str, ...]:
    """The page's sections: its first folder, then each nested folder that has an `_index` page
    (Hugo makes a section of a nested folder only then)."""
    sections: list[str] = []
    for depth, name in enumerate(container):
        if depth and not any(content.joinpath(*container[:depth + 1]).glob("_index.*")):
            break
        sections.append(name)
    return tuple(sections)


def expand(pattern: str, page: _Page) -> str:
    """`pattern` with each `:attribute` replaced for `page`; `\\:` is a literal colon."""
    text = pattern.replace("\\:", "\x00")
    out = _ATTRIBUTE.sub(lambda m: _resolve(m.group(0)[1:])(page), text)    # type: ignore[misc]
    return out.replace("\x00", ":")


def check_pattern(pattern: str) -> None:
    """Raises ValueError naming the first attribute Hugo would refuse in `pattern`."""
    for match in _ATTRIBUTE.finditer(pattern.replace("\\:", "\x00")):
        if _resolve(match.group(0)[1:]) is None:
            raise ValueError(f"{match.group(0)!r} in {pattern!r} is not a permalink attribute Hugo "
                             "knows (:year, :month, :monthname, :day, :weekday, :weekdayname, :yearday, "
                             ":section, :sections, :title, :slug, :slugorfilename, :filename, "
                             ":contentbasename, :slugorcontentbasename, or a Go date layout like :2006)")


@functools.lru_cache(maxsize=256)
def _resolve(attr: str) -> Callable[[_Page], str] | None:
    """The function giving `attr`'s value for a page (Hugo's `knownPermalinkAttributes`), or None."""
    d = lambda f: (lambda p: f(p.date))    # noqa: E731 - a date attribute
    known: dict[str, Callable[[_Page], str]] = {
        "year": d(lambda t: str(t.year)), "month": d(lambda t: f"{t.month:02d}"),
        "monthname": d(lambda t: MONTHS[t.month - 1]), "day": d(lambda t: f"{t.day:02d}"),
        "weekday": d(lambda t: str(t.isoweekday() % 7)),
        "weekdayname": d(lambda t: WEEKDAYS[t.isoweekday() % 7]),
        "yearday": d(lambda t: str(t.timetuple().tm_yday)),
        "section": lambda p: p.sections[0] if p.sections else "",
        "sections": lambda p: "/".join(p.sections),
        # Hugo takes each section's slug or title from its _index page; its folder name is the
        # usual one, and reading every _index page per post would cost more than it is worth.
        "sectionslug": lambda p: p.urlize(p.sections[0]) if p.sections else "",
        "sectionslugs": lambda p: "/".join(map(p.urlize, p.sections)),
        "title": lambda p: p.urlize(p.title),
        "slug": lambda p: p.urlize(p.slug or p.title),
        "slugorfilename": lambda p: p.urlize(p.slug or p.base),
        "filename": lambda p: p.urlize(p.base),
        "contentbasename": lambda p: p.urlize(p.base),
        "slugorcontentbasename": lambda p: p.urlize(p.slug or p.base),
    }
    if attr in known:
        return known[attr]
    for name in ("sections", "sectionslugs"):
        if attr.startswith(name + "["):
            cut, raw = _slice(attr[len(name):]), name == "sections"
            return lambda p: "/".join(s if raw else p.urlize(s) for s in cut(list(p.sections)))
    return _go_layout(attr)


def _slice(spec: str) -> Callable[[list[str]], list[str]]:
    """Hugo's `toSliceFunc`: `[1:]`, `[:2]`, `[last]`, `[0]`; lenient out of range."""
    spec = spec.strip().lower()
    inner = spec[1:-1] if spec.startswith("[") and spec.endswith("]") else None
    if not inner:
        return lambda s: []

    def index(text: str, low: bool, s: list[str]) -> int:
        if text == "":
            return 0 if low else len(s)
        n = len(s) - 1 if text == "last" else max(int(text) if text.isdigit() else 0, 0)
        return (-1 if low else len(s)) if n >= len(s) else n

    if ":" not in inner:
        def one(s: list[str]) -> list[str]:
            n = index(inner, True, s)
            return [] if not s or n < 0 else [s[n]]
        return one
    low, high = inner.split(":", 1)

    def many(s: list[str]) -> list[str]:
        a, b = index(low, True, s), index(high, False, s)
        return [] if not s or a < 0 or b < 0 else s[a:b]
    return many


# Go's reference-time layout elements, longest first at each position (time/format.go).
_GO_CHUNKS: tuple[tuple[str, Callable[[datetime], str]], ...] = (
    ("January", lambda t: MONTHS[t.month - 1]), ("Monday", lambda t: WEEKDAYS[t.isoweekday() % 7]),
    ("2006", lambda t: f"{t.year:04d}"), ("Jan", lambda t: MONTHS[t.month - 1][:3]),
    ("Mon", lambda t: WEEKDAYS[t.isoweekday() % 7][:3]), ("MST", lambda t: t.tzname() or "UTC"),
    ("002", lambda t: f"{t.timetuple().tm_yday:03d}"), ("__2", lambda t: f"{t.timetuple().tm_yday:3d}"),
    ("_2", lambda t: f"{t.day:2d}"), ("06", lambda t: f"{t.year % 100:02d}"),
    ("01", lambda t: f"{t.month:02d}"), ("02", lambda t: f"{t.day:02d}"),
    ("15", lambda t: f"{t.hour:02d}"), ("03", lambda t: f"{(t.hour % 12) or 12:02d}"),
    ("04", lambda t: f"{t.minute:02d}"), ("05", lambda t: f"{t.second:02d}"),
    ("PM", lambda t: "PM" if t.hour >= 12 else "AM"), ("pm", lambda t: "pm" if t.hour >= 12 else "am"),
    ("1", lambda t: str(t.month)), ("2", lambda t: str(t.day)), ("3", lambda t: str((t.hour % 12) or 12)),
    ("4", lambda t: str(t.minute)), ("5", lambda t: str(t.second)),
)


def _go_layout(attr: str) -> Callable[[_Page], str] | None:
    """A Go date layout such as `:2006` or `:Jan`, as Hugo accepts any attribute that formatting
    the reference time changes; None if `attr` holds no layout element."""
    pieces: list[str | Callable[[datetime], str]] = []
    i, found = 0, False
    while i < len(attr):
        for chunk, fmt in _GO_CHUNKS:
            if attr.startswith(chunk, i):
                pieces.append(fmt)
                i, found = i + len(chunk), True
                break
        else:
            pieces.append(attr[i])
            i += 1
    if not found:
        return None
    return lambda p: "".join(x if isinstance(x, str) else x(p.date) for x in pieces)
