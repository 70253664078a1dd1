"""Which files under the posts folder are posts, and why each other one is not read.

The folder is read recursively, as generators read theirs: Hugo's `content/posts/NAME/index.md`
page bundles, Eleventy's nested folders, Pelican's category folders. Nothing is skipped
silently but what can never be a post: hidden files and images, media and fonts. Everything
else not read is named, with the reason: a section page (`_index.md`), a page bundle's other
files, a drafts folder, a data file, or a format the pipeline does not read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.models import Severity

POST_SUFFIXES = (".md", ".markdown", ".mdx", ".rst")
READS = ".md, .markdown, .mdx and .rst"
# Never a post, whatever the folder: a page's images and media, fonts, archives.
ASSETS = frozenset("""
    .png .jpg .jpeg .gif .webp .avif .svg .ico .bmp .tif .tiff .heic .jxl .psd .xcf
    .mp4 .webm .mov .m4v .ogv .mp3 .m4a .ogg .oga .wav .flac .vtt .srt
    .woff .woff2 .ttf .otf .eot .pdf .zip .gz .tgz .xz .bz2 .7z
    """.split())
JUNK = frozenset({"Thumbs.db", "desktop.ini"})
DATA = frozenset({".json", ".yaml", ".yml", ".toml"})
DRAFT_FOLDERS = frozenset({"_drafts", "drafts"})
KINDS = {".html": "HTML", ".htm": "HTML", ".njk": "a Nunjucks template", ".liquid": "a Liquid template",
         ".hbs": "a Handlebars template", ".pug": "a Pug template", ".ejs": "an EJS template",
         ".webc": "a WebC component", ".adoc": "AsciiDoc", ".asciidoc": "AsciiDoc", ".org": "Org mode",
         ".txt": "plain text", ".textile": "Textile", ".ipynb": "a Jupyter notebook",
         ".rmd": "R Markdown", ".qmd": "Quarto", ".astro": "an Astro component"}


@dataclass(frozen=True, kw_only=True)
class PostFile:
    """A file to read as a post. `bundle`: it is its folder's page (Hugo's `NAME/index.md`,
    Eleventy's `NAME/NAME.md`): the post is named after the folder, and the links and images
    it gives relative to itself live in that folder, below the post's URL."""

    path: Path
    bundle: bool = False

    @property
    def name(self) -> str:
        """The name the post's slug and file-name date come from."""
        return self.path.parent.name if self.bundle else self.path.stem


@dataclass(frozen=True, kw_only=True)
class Unread:
    """A file (or a folder) under the posts folder that is not read, and why."""

    path: Path
    reason: str                   # "not read: ..."
    severity: Severity


@dataclass(frozen=True, kw_only=True)
class Scan:
    posts: tuple[PostFile, ...]
    unread: tuple[Unread, ...]


def _is_post(name: str) -> bool:
    return name.lower().endswith(POST_SUFFIXES)


def _index(files: list[str]) -> str | None:
    """The leaf bundle's page among a folder's files (`index.md`, `index.mdx`, ...), if any."""
    return next((f for f in files if _is_post(f) and os.path.splitext(f)[0].lower() == "index"), None)


def scan(folder: Path) -> Scan:
    """The posts under `folder` (sorted by path) and every other file not read, with its reason."""
    posts: list[PostFile] = []
    unread: list[Unread] = []
    bundles: dict[Path, str] = {}     # leaf bundle folder -> its page: what is below is the page's
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in [d for d in dirs if (here / d).is_symlink()]:
            # Not followed (a link can loop back); named, so that its posts are not missed silently.
            dirs.remove(name)
            unread.append(Unread(path=here / name, severity=Severity.WARNING, reason=(
                "not read: a link to a folder; links are not followed: move or copy the posts here")))
        for name in [d for d in dirs if d.lower() in DRAFT_FOLDERS]:
            dirs.remove(name)
            count = sum(len(f) for _, _, f in os.walk(here / name))
            unread.append(Unread(path=here / name, severity=Severity.NOTE, reason=(
                f"not read: a drafts folder ({count} file{'s' if count != 1 else ''}); drafts are "
                "never sent: move a post out of it to send it")))
        files = sorted(f for f in files if not f.startswith(".") and f not in JUNK and not f.endswith("~"))
        owner = next((b for b in bundles if here.is_relative_to(b)), None)
        index = _index(files) if owner is None and here != folder else None
        if index is not None:
            owner = here
            bundles[here] = index
            posts.append(PostFile(path=here / index, bundle=True))
        for name in files:
            path = here / name
            if name == index:
                continue
            page = f"{owner.name}/{bundles[owner]}" if owner is not None else None
            reason = _why_not(path, folder, page)
            if reason is None:
                posts.append(PostFile(path=path, bundle=path.stem == here.name and here != folder))
            elif reason[0]:
                unread.append(Unread(path=path, reason=reason[0], severity=reason[1]))
    posts.sort(key=lambda p: p.path.as_posix())
    return Scan(posts=tuple(posts), unread=tuple(unread))


def _why_not(path: Path, folder: Path, page: str | None) -> tuple[str, Severity] | None:
    """None for a post; else the reason it is not read and how much it matters ("" for an asset,
    skipped silently). `page`: the page of the leaf bundle the file is in (folder/index.md)."""
    name, suffix = path.name, path.suffix.lower()
    if suffix in ASSETS:
        return "", Severity.NOTE
    if page is not None:
        return f"not read: a resource of the page bundle {page}, not a post of its own", Severity.NOTE
    if _is_post(name):
        stem = path.stem.lower()
        if stem == "_index":
            return "not read: a section page (Hugo's _index), not a post", Severity.NOTE
        if stem == "index" and path.parent == folder:
            return "not read: the posts folder's own index page (a listing), not a post", Severity.NOTE
        return None
    if name.lower().endswith((".11tydata.js", ".11tydata.cjs", ".11tydata.mjs", ".11tydata.json")) or (
            suffix == ".json" and path.stem == path.parent.name):
        return ("not read: Eleventy directory data; its values (layout, tags, permalink) are not applied "
                "to the posts: give each post what it needs in its front matter", Severity.NOTE)
    if suffix in DATA:
        return "not read: a data file, not a post", Severity.NOTE
    kind = KINDS.get(suffix)
    what = f"{kind} ({suffix})" if kind else (f"a {suffix} file" if suffix else "a file without extension")
    return f"not read: {what} is not a post; the pipeline reads {READS} files", Severity.WARNING
