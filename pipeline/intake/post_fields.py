"""Front matter keys as site generators write them, mapped onto the pipeline's fields.

Jekyll, Hugo, Eleventy, Pelican, Astro and Next.js themes name the same things differently
(`description` or `excerpt` for the summary, `categories` beside `tags`, `cover.image` or
`heroImage` for the image, `published: false` or `status: draft` for a draft). Keys are matched
the way Hugo and Pelican match them: case-insensitively (and here `_`/`-` insensitively too, so
`featured_image`, `featuredImage` and `featured-image` are one key). Keys generators and themes
use for things the pipeline does not need (`layout`, `lastmod`, `aliases`, ...) are ignored
silently; any other key is a warning, as before.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from pipeline.networks.registry import NETWORKS

SOCIAL_KEYS = (*NETWORKS, "thread")
# Where generators keep the post's date, first found wins (Hugo's own order: date, publishDate,
# pubDate, published; Astro's blog template writes pubDate).
DATE_KEYS = ("date", "publishdate", "pubdate", "published")
# Keys of generators and common themes that hold nothing the pipeline uses.
IGNORED = frozenset("""
    lastmod updated modified update updateddate lastmodified lastmodifiedat lastupdated
    layout aliases weight toc tocopen toclabel tocicon tocsticky showtoc usehugotoc comments
    eleventynavigation eleventyexcludefromcollections eleventycomputed eleventyimport pagination
    templateengineoverride permalink permalinkbypassoutputdir type series keywords hidemeta math
    mathjax katex share disableshare disqusidentifier disqusurl disqustitle redirectfrom redirectto
    url linktitle menu sitemap expirydate unpublishdate headless lang language translationkey
    outputs resources markup build cascade iscjklanguage showreadingtime showbreadcrumbs
    showpostnavlinks showwordcount showrssbuttoninsectiontermlist hidesummary searchhidden
    showcodecopybuttons editpost authorprofile readtime readingtime minutesread related showdate
    renderwithliquid excerptseparator sidebar classes translation saveas template bibliography
    socialimage ogimage thumbnail sticky pinned featured robots noindex nocomments
    """.split())


@dataclass(frozen=True, kw_only=True)
class Mapped:
    """A post's front matter in the pipeline's terms."""

    fields: dict[str, Any]         # our field names (those of posts.FrontMatter) -> values
    keys: dict[str, str]           # our field name -> the key it was read from, as written
    date_key: str                  # the key the date was read from, as written ("date" if none)
    categories: tuple[str, ...]    # the post's categories (also among its tags), for permalinks
    warnings: tuple[str, ...]      # one line each: "front matter: ..."


def _norm(key: object) -> str:
    return re.sub(r"[-_\s]", "", str(key)).lower()


def map_fields(meta: Mapping[str, Any], written: Mapping[str, Any] | None = None) -> Mapped:
    """Map `meta` (a front matter mapping of any format) onto our fields. `written`: the source
    text of YAML scalars, so a title YAML reads as a number keeps its digits as written."""
    return _Mapper(meta, written or {}).run()


class _Mapper:
    def __init__(self, meta: Mapping[str, Any], written: Mapping[str, Any]) -> None:
        self.meta = meta
        self.written = written
        self.keys: dict[str, str] = {}          # normalized -> the key as written (first wins)
        for key in meta:
            self.keys.setdefault(_norm(key), str(key))
        self.used: set[str] = set()             # keys as written that were read
        self.fields: dict[str, Any] = {}
        self.sources: dict[str, str] = {}       # our field -> the key it came from
        self.warnings: list[str] = []

    def get(self, *names: str, accept: Callable[[Any], bool] = lambda v: v is not None
            ) -> tuple[str, Any] | None:
        """(key as written, value) of the first of `names` (normalized) present and accepted (by
        default: not null). All of `names` present are read, whichever wins."""
        found = None
        for name in names:
            key = self.keys.get(name)
            if key is None:
                continue
            self.used.add(key)
            if found is None and accept(self.meta[key]):
                found = key, self.meta[key]
        return found

    def text(self, key: str, value: Any) -> Any:
        """A value meant as text: a number, boolean or date YAML, TOML or JSON built from it is
        taken as written. Anything else (a list, a mapping) is left for validation to name."""
        if isinstance(value, bool | int | float | date):
            shown = self.written.get(key)
            if isinstance(shown, str):
                return shown
            if isinstance(value, bool):
                return str(value).lower()
            return value.isoformat() if isinstance(value, date) else str(value)
        return value

    def run(self) -> Mapped:
        for field, names in (("title", ("title",)), ("slug", ("slug",)), ("subject", ("subject",)),
                             ("summary", ("summary", "description", "excerpt")),
                             ("canonical_url", ("canonicalurl", "canonical"))):
            # An empty summary (Pelican's `:summary:` left blank) gives way to a description.
            if found := self.get(*names, accept=lambda v: v is not None and v != ""):
                self.put(field, found[0], self.text(*found))
            elif field == "title" and (found := self.get("title", accept=lambda v: v == "")):
                self.put(field, *found)          # validation says it is empty
        for field, name in (("publish_at", "publishat"), ("channels", "channels")):
            if found := self.get(name):
                self.put(field, *found)
        date_key = self._date()
        self._author()
        categories = self._tags()
        self._image()
        self._draft()
        self._social()
        for key in map(str, self.meta):
            first = self.keys[_norm(key)]
            if key != first and first in self.used:
                self.warnings.append(f"front matter: {key!r} repeats {first!r} (ignored)")
            elif key not in self.used and _norm(key) not in IGNORED:
                self.warnings.append(f"front matter: unknown field {key!r} (ignored)")
        return Mapped(fields=self.fields, keys=self.sources, date_key=date_key, categories=categories,
                      warnings=tuple(self.warnings))

    def put(self, field: str, key: str, value: Any) -> None:
        self.fields[field] = value
        self.sources[field] = key

    def _date(self) -> str:
        for name in DATE_KEYS:
            # Jekyll's `published` is a flag (see _draft); Hugo's and some Eleventy sites' a date.
            found = self.get(name, accept=lambda v, flag=name == "published":
                             v is not None and not (flag and isinstance(v, bool)))
            if found is not None:
                self.put("date", *found)
                return found[0]
        return "date"

    def _author(self) -> None:
        found = self.get("author", "authors")
        if found is None:
            return
        key, value = found
        if isinstance(value, list):
            names = [self._name(v, shown) for v, shown in zip(value, self._written_list(key, value),
                                                              strict=True)]
            names = [n for n in names if n]
            self.put("author", key, _joined(names) if names else None)
        elif isinstance(value, dict):
            self.put("author", key, self._name(value, None))
        else:
            self.put("author", key, self.text(key, value))

    def _written_list(self, key: str, value: list[Any]) -> list[Any]:
        shown = self.written.get(key)
        return shown if isinstance(shown, list) and len(shown) == len(value) else [None] * len(value)

    @staticmethod
    def _name(value: Any, shown: Any) -> str | None:
        """An author in a list: a name, or a mapping with a name (Hugo themes' `{name: ...}`)."""
        if isinstance(value, dict):
            value = next((value[k] for k in ("name", "title", "id") if value.get(k)), None)
        if value is None:
            return None
        text = shown if isinstance(shown, str) and not isinstance(value, str) else str(value)
        return " ".join(text.split()) or None

    def _tags(self) -> tuple[str, ...]:
        """Tags, then categories (deduplicated, first spelling kept); the categories alone."""
        tags = self.get("tags")
        categories: list[str] = []
        if found := self.get("categories", "category"):
            key, value = found
            if isinstance(value, str):
                # Jekyll splits a `categories:` string on spaces; a comma list is read as one.
                parts = value.split(",") if "," in value or _norm(key) == "category" else value.split()
                categories = [p.strip() for p in parts if p.strip()]
            elif isinstance(value, list):
                categories = [str(v).strip() for v in value if v is not None and str(v).strip()]
            else:
                self.warnings.append(f"front matter: {key!r} is not a list or text (ignored)")
        if tags is None:
            if categories:
                self.put("tags", found[0] if found else "tags", categories)
            return tuple(categories)
        key, value = tags
        if isinstance(value, str):
            value = [t.strip() for t in value.split(",") if t.strip()]
        if not isinstance(value, list):
            self.put("tags", key, value)         # validation names the field
            return tuple(categories)
        merged: dict[str, str] = {}
        for tag in [*(str(t).strip() for t in value if t is not None), *categories]:
            if tag:
                merged.setdefault(tag.casefold(), tag)
        self.put("tags", key, list(merged.values()))
        return tuple(categories)

    def _image(self) -> None:
        """The header image and its alt text, from the first of the places themes keep it."""
        image: Any = None
        alt: Any = None
        image_key = alt_key = ""
        for name in ("image", "images", "cover", "featuredimage", "heroimage", "header"):
            found = self.get(name)
            if found is None:
                continue
            value = found[1]
            if name == "header" and not isinstance(value, dict):
                continue                         # Minimal Mistakes' `header: {image: ...}` only
            if isinstance(value, list):          # Hugo's `images: [...]`: the first
                value = value[0] if value else None
            if isinstance(value, dict):
                if alt is None and value.get("alt") is not None:
                    alt, alt_key = value["alt"], f"{found[0]}.alt"
                value = next((value[k] for k in ("src", "image", "path", "url", "overlay_image")
                              if value.get(k)), None)
            if value is not None and image is None:
                image, image_key = value, found[0]
        if found := self.get("imagealt", "heroimagealt"):
            alt, alt_key = found[1], found[0]
        if image is not None:
            self.put("image", image_key, image)
        if alt is not None:
            self.put("image_alt", alt_key, self.text(alt_key, alt))

    def _draft(self) -> None:
        if found := self.get("draft"):
            self.put("draft", *found)
        published = self.get("published", accept=lambda v: isinstance(v, bool))
        status = self.get("status")
        # Pelican: draft and hidden articles are not published, `skip` ones not even read.
        if published and published[1] is False:
            self.put("draft", published[0], True)
        elif status and str(status[1]).strip().lower() in ("draft", "hidden", "skip"):
            self.put("draft", status[0], True)

    def _social(self) -> None:
        found = self.get("social")
        if found is None:
            return
        key, value = found
        if isinstance(value, dict) and set(map(str, value)) & set(SOCIAL_KEYS):
            self.put("social", key, value)
            return
        # A theme's own `social:` block (share buttons, fediverse:creator): not ours to read.
        holds = f" (it holds {', '.join(map(str, value))})" if isinstance(value, dict) and value else ""
        self.warnings.append(
            f"front matter: {key!r} is not the pipeline's per-network text{holds}; ignored "
            f"(the pipeline's `social:` takes {', '.join(SOCIAL_KEYS)})")


def _joined(names: list[str]) -> str:
    """"A", "A and B", "A, B and C"."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
