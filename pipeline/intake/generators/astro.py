"""Astro: a content collection entry `src/content/<collection>/<entry>.md(x)` is served at
`/<collection>/<slug>/` (the route `src/pages/<collection>/[...slug].astro` that nearly every blog
uses), its slug the `slug:` front matter, else its path in the collection with each folder and
the file name slugged as github-slugger does (`content/utils.ts`); with Starlight the `docs`
collection is the site's root. A page `src/pages/blog/x.md` is `/blog/x/`.

The config (`astro.config.mjs`, ...) is never run: its text is searched for a literal `site:`,
`base:`, `trailingSlash: 'never'` and `format: 'file'`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pipeline.intake.generators.common import (
    Derived,
    PostFile,
    Shown,
    SiteConfigError,
    UrlProblem,
    base_url,
    js_string,
    one_config_file,
    text_of,
)
from pipeline.intake.slugs import github_slug
from pipeline.intake.textfile import NotUtf8, read_utf8

NAME = "Astro"
FILES = tuple(f"astro.config.{e}" for e in ("mjs", "js", "ts", "mts", "cjs", "cts"))
EXPECTED = "astro.config.mjs"
CONTENT = PurePosixPath("src/content")
PAGES = PurePosixPath("src/pages")


@dataclass(frozen=True, kw_only=True)
class AstroSettings:
    base_url: str | None = None          # `site:`
    base_path: str = ""                  # `base:`, e.g. /docs
    starlight: bool = False
    trailing_slash: bool = True          # not `trailingSlash: 'never'`
    file_format: bool = False            # `build: {format: 'file'}`: /blog/x.html
    notes: tuple[str, ...] = ()


def config_files(root: Path, file: str | None) -> list[Path]:
    return one_config_file(root, file, FILES)


def detect(root: Path) -> bool:
    return bool(config_files(root, None))


def read(files: list[Path], root: Path, shown: Shown) -> AstroSettings:
    text = ""
    if files:
        try:
            text = read_utf8(files[0])
        except NotUtf8 as exc:
            raise SiteConfigError(f"{shown(files[0])}: {exc}; save it as UTF-8") from None
        except OSError as exc:
            raise SiteConfigError(f"{shown(files[0])}: cannot be read ({exc.strerror or exc})") from None
    base = (js_string(text, "base") or "").strip().strip("/")
    notes = []
    # Collections whose entries would have no page at /<collection>/<slug>/: say what is assumed.
    if (root / CONTENT).is_dir():
        for folder in sorted(p for p in (root / CONTENT).iterdir() if p.is_dir()):
            routes = [root / PAGES / folder.name / n
                      for n in ("[...slug].astro", "[slug].astro", "[...id].astro", "[id].astro")]
            if not any(r.is_file() for r in routes) and not (folder.name == "docs" and "starlight" in text):
                notes.append(f"{CONTENT}/{folder.name}/: no {PAGES}/{folder.name}/[...slug].astro route; "
                             f"its entries are taken to be at /{folder.name}/<slug>/")
    return AstroSettings(
        base_url=base_url(js_string(text, "site")), base_path=f"/{base}" if base else "",
        starlight=bool(re.search(r"@astrojs/starlight|\bstarlight\(", text)),
        trailing_slash=js_string(text, "trailingSlash") != "never",
        file_format=js_string(text, "format") == "file", notes=tuple(notes))


def derive(settings: AstroSettings, post: PostFile) -> Derived:
    rel = post.rel
    if rel.is_relative_to(CONTENT) and len(rel.relative_to(CONTENT).parts) >= 2:
        collection, *rest = rel.relative_to(CONTENT).parts
        slug = text_of(post.meta, "slug")
        if slug is None:
            segments = [*rest[:-1], PurePosixPath(rest[-1]).stem]
            slug = re.sub(r"(^|/)index$", "", "/".join(github_slug(s) for s in segments))
        slug = slug.strip("/")
        path = "/".join(p for p in ([] if settings.starlight and collection == "docs" else [collection])
                        + [slug] if p)
    elif rel.is_relative_to(PAGES):
        path = re.sub(r"(^|/)index$", "", rel.relative_to(PAGES).with_suffix("").as_posix())
    else:
        raise UrlProblem(f"not in {CONTENT}/<collection>/ or {PAGES}/ of the Astro site")
    if not path:
        return Derived(path=settings.base_path + "/")
    if settings.file_format:
        return Derived(path=f"{settings.base_path}/{path}.html")
    return Derived(path=f"{settings.base_path}/{path}" + ("/" if settings.trailing_slash else ""))
