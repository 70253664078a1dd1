"""Eleventy: a page's URL is its file's path under the input folder, without the extension, as a
folder (`posts/my-post.md` -> `/posts/my-post/`; `index.md` and `post/post.md` are their folder's
page), as `src/TemplatePermalink.js` makes it. A literal `permalink:` in front matter wins.

The config (`eleventy.config.js`, `.eleventy.js`, ...) is JavaScript and is never run: its text
is searched for a literal `input: "..."` (the input folder; default the root) and `pathPrefix`.
Eleventy also runs with no config file, so none is needed.
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
    js_string,
    one_config_file,
)
from pipeline.intake.textfile import NotUtf8, read_utf8

NAME = "Eleventy"
FILES = tuple(f"{n}.{e}" for n in (".eleventy", "eleventy.config") for e in ("js", "cjs", "mjs"))
FILES += ("eleventy.config.ts", "eleventy.config.mts", "eleventy.config.cts")
EXPECTED = "eleventy.config.js or .eleventy.js"
HERE = PurePosixPath(".")
TEMPLATE = re.compile(r"\{\{|\{%")


@dataclass(frozen=True, kw_only=True)
class EleventySettings:
    base_url: str | None = None          # Eleventy's config does not know the site's address
    input: PurePosixPath = HERE
    path_prefix: str = ""                # e.g. /blog
    notes: tuple[str, ...] = ()


def config_files(root: Path, file: str | None) -> list[Path]:
    return one_config_file(root, file, FILES)


def detect(root: Path) -> bool:
    return bool(config_files(root, None))


def read(files: list[Path], root: Path, shown: Shown) -> EleventySettings:
    if not files:
        return EleventySettings()
    try:
        text = read_utf8(files[0])
    except NotUtf8 as exc:
        raise SiteConfigError(f"{shown(files[0])}: {exc}; save it as UTF-8") from None
    except OSError as exc:
        raise SiteConfigError(f"{shown(files[0])}: cannot be read ({exc.strerror or exc})") from None
    folder = (js_string(text, "input") or ".").strip().strip("/") or "."
    prefix = (js_string(text, "pathPrefix") or "").strip().strip("/")
    return EleventySettings(input=PurePosixPath(folder.removeprefix("./") or "."),
                            path_prefix=f"/{prefix}" if prefix else "")


def derive(settings: EleventySettings, post: PostFile) -> Derived:
    try:
        rel = post.rel.relative_to(settings.input) if settings.input != HERE else post.rel
    except ValueError:
        raise UrlProblem(f"not in Eleventy's input folder ({settings.input}/)") from None
    permalink = post.meta.get("permalink")
    if isinstance(permalink, dict):                  # {build: "/x/"} (Eleventy Serverless)
        permalink = permalink.get("build")
    if permalink is False:
        raise UrlProblem("permalink: false: Eleventy writes no page for it (set canonical_url:)")
    notes: tuple[str, ...] = ()
    if isinstance(permalink, str) and permalink.strip() and not TEMPLATE.search(permalink):
        return Derived(path=settings.path_prefix + to_url("/" + permalink.strip().lstrip("/")))
    if isinstance(permalink, str) and permalink.strip():
        notes = (f"permalink {permalink.strip()!r} is a template, which is not run here; the URL is "
                 "derived from the file path: check it, or set canonical_url:",)
    folder = "" if rel.parent == PurePosixPath(".") else rel.parent.as_posix()
    stem = rel.stem
    duplicate = bool(folder) and folder.split("/")[-1] == stem      # post/post.md is post/
    page = "" if stem == "index" or duplicate else f"{stem}/"
    out = (f"{folder}/" if folder else "") + page + "index.html"
    return Derived(path=settings.path_prefix + to_url("/" + out), notes=notes)


def to_url(path: str) -> str:
    """TemplatePermalink `normalizePathToUrl`: a trailing index.html, /index/ or /index is dropped."""
    for needle in ("/index.html", "/index/", "/index"):
        if path.endswith(needle):
            return path[: -len(needle)] + "/"
    return path
