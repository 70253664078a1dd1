"""Pelican: `pelicanconf.py`, then `publishconf.py` (where SITEURL usually is), read with `ast`
and never run: only module-level assignments of literals (strings, numbers, lists, tuples, dicts,
`+` of strings, f-strings of names already read, and names already read) count; anything else
(a call, an import, a condition) is ignored.

An article's URL is SITEURL + `/` + ARTICLE_URL (ARTICLE_LANG_URL for another language) filled
the way `contents.py` fills it: `{slug}` (the `Slug:` metadata, else the title slugified as
`utils.slugify` does), `{date:%Y}`, `{category}` and `{author}` (their slugs), `{lang}`, `{path}`
and any other metadata field. A `URL:` in the metadata is used as written.
"""

from __future__ import annotations

import ast
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from pipeline.intake.generators.common import (
    Derived,
    PostFile,
    Shown,
    SiteConfigError,
    UrlProblem,
    base_url,
    text_of,
)
from pipeline.intake.slugs import PELICAN_SUBSTITUTIONS, pelican_slugify
from pipeline.intake.textfile import NotUtf8, read_utf8

NAME = "Pelican"
FILES = ("pelicanconf.py", "publishconf.py")
EXPECTED = "pelicanconf.py"
DEFAULTS: Mapping[str, Any] = {      # pelican/settings.py DEFAULT_CONFIG, the keys used here
    "SITEURL": "", "PATH": ".", "ARTICLE_URL": "{slug}.html", "ARTICLE_LANG_URL": "{slug}-{lang}.html",
    "DEFAULT_LANG": "en", "SLUGIFY_SOURCE": "title", "SLUG_REGEX_SUBSTITUTIONS": PELICAN_SUBSTITUTIONS,
    "SLUGIFY_PRESERVE_CASE": False, "SLUGIFY_USE_UNICODE": False, "USE_FOLDER_AS_CATEGORY": True,
    "CATEGORY_SAVE_AS": "category/{slug}.html", "DEFAULT_CATEGORY": "misc",
    "FILENAME_METADATA": r"(?P<date>\d{4}-\d{2}-\d{2}).*", "PATH_METADATA": "", "AUTHOR": None,
}
# The settings whose value decides a URL: when one is computed, say which and that it is skipped.
WATCHED = ("SITEURL", "PATH", "ARTICLE_URL", "ARTICLE_LANG_URL", "DEFAULT_LANG", "SLUGIFY_SOURCE",
           "SLUG_REGEX_SUBSTITUTIONS", "FILENAME_METADATA", "PATH_METADATA", "USE_FOLDER_AS_CATEGORY")
SAMPLE_DATE = datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC)


@dataclass(frozen=True, kw_only=True)
class PelicanSettings:
    base_url: str | None
    content: PurePosixPath                      # PATH, relative to the blog's root
    values: Mapping[str, Any] = field(default_factory=dict)   # DEFAULTS, overridden by the files
    notes: tuple[str, ...] = ()


def config_files(root: Path, file: str | None) -> list[Path]:
    if file:
        return [root / file]
    if not (root / FILES[0]).is_file():
        return []
    return [root / f for f in FILES if (root / f).is_file()]


def detect(root: Path) -> bool:
    return (root / FILES[0]).is_file()


def read(files: list[Path], root: Path, shown: Shown) -> PelicanSettings:
    values: dict[str, Any] = dict(DEFAULTS)
    notes: list[str] = []
    for path in files:
        read_settings(path, shown, values, notes)
    values["ARTICLE_URL"], values["ARTICLE_LANG_URL"] = (
        ("{slug}/", "{slug}-{lang}/") if values.get("CLEAN_URLS") else
        (values["ARTICLE_URL"], values["ARTICLE_LANG_URL"]))
    where = ", ".join(map(shown, files))
    for key in ("ARTICLE_URL", "ARTICLE_LANG_URL"):
        try:
            check_pattern(str(values[key]))
        except ValueError as exc:
            raise SiteConfigError(f"{where}: {key}: {exc}") from None
    for key in ("FILENAME_METADATA", "PATH_METADATA"):
        try:
            re.compile(str(values[key] or ""))
        except re.error as exc:
            raise SiteConfigError(f"{where}: {key}: not a regular expression ({exc})") from None
    try:
        pelican_slugify("Check", _substitutions(values))
    except (ValueError, TypeError, re.error) as exc:
        raise SiteConfigError(f"{where}: SLUG_REGEX_SUBSTITUTIONS: must be a list of "
                              f"(pattern, replacement) pairs ({exc})") from None
    siteurl = values["SITEURL"]
    if siteurl and not base_url(siteurl):
        notes.append(f"{where}: SITEURL {siteurl!r} is not the public address of the site; using site.url")
    content = Path(files[0].parent if files else root, str(values["PATH"] or "."))
    try:
        folder = PurePosixPath(content.resolve().relative_to(root.resolve()).as_posix())
    except ValueError:
        raise SiteConfigError(f"{where}: PATH: {values['PATH']!r} is outside the blog's folder") from None
    return PelicanSettings(base_url=base_url(siteurl), content=folder, values=values, notes=tuple(notes))


def read_settings(path: Path, shown: Shown, values: dict[str, Any], notes: list[str]) -> None:
    """The module-level literal assignments of a Python settings file, into `values`. The file is
    parsed, never executed: `import os; os.system(...)` in it does nothing here."""
    where = shown(path)
    try:
        text = read_utf8(path)
        tree = ast.parse(text, filename=where)
    except NotUtf8 as exc:
        raise SiteConfigError(f"{where}: {exc}; save it as UTF-8") from None
    except OSError as exc:
        raise SiteConfigError(f"{where}: cannot be read ({exc.strerror or exc})") from None
    except SyntaxError as exc:
        raise SiteConfigError(f"{where}:{exc.lineno}: not valid Python ({exc.msg})") from None
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        for target in targets:
            if not isinstance(target, ast.Name) or not target.id.isupper():
                continue
            try:
                values[target.id] = _literal(value, values)
            except ValueError:
                values.pop(target.id, None)
                if target.id in DEFAULTS:
                    values[target.id] = DEFAULTS[target.id]
                if target.id in WATCHED:
                    notes.append(f"{where}:{node.lineno}: {target.id} is computed "
                                 f"({ast.get_source_segment(text, value) or '...'}), not read; "
                                 f"using {'site.url' if target.id == 'SITEURL' else 'the default'}")


def _literal(node: ast.AST, known: Mapping[str, Any]) -> Any:
    """The value of a literal expression; raises ValueError for anything that would need running."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str | int | float | bool | type(None)):
        return node.value
    if isinstance(node, ast.Name) and node.id in known:
        return known[node.id]
    if isinstance(node, ast.List | ast.Tuple):
        items = [_literal(e, known) for e in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.Dict) and all(k is not None for k in node.keys):
        return {_literal(k, known): _literal(v, known) for k, v in zip(node.keys, node.values, strict=True)}
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _literal(node.left, known), _literal(node.right, known)
        if type(left) is type(right) and isinstance(left, str | list | tuple):
            return left + right
    if isinstance(node, ast.JoinedStr):
        parts = []
        for part in node.values:
            if isinstance(part, ast.FormattedValue) and part.format_spec is None and part.conversion == -1:
                value = _literal(part.value, known)
                if not isinstance(value, str):
                    raise ValueError("not a string")
                parts.append(value)
            else:
                parts.append(_literal(part, known))
        return "".join(parts)
    raise ValueError("not a literal")


class _Formatter(string.Formatter):
    """str.format as Pelican fills ARTICLE_URL, refusing private attributes (`{date.__class__}`):
    the pattern comes from a file, and nothing in a URL needs them."""

    def get_field(self, field_name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        if re.search(r"[.\[]_", field_name):
            raise ValueError(f"{{{field_name}}}: private attributes are not allowed")
        return super().get_field(field_name, args, kwargs)


FORMATTER = _Formatter()


def check_pattern(pattern: str) -> None:
    """Raises ValueError if `pattern` cannot be filled whatever the post's metadata holds."""
    sample = {"slug": "s", "lang": "en", "date": SAMPLE_DATE, "author": "a", "category": "c", "path": "p"}
    try:
        FORMATTER.vformat(pattern, (), _Any(sample))
    except (ValueError, IndexError, AttributeError, TypeError) as exc:
        raise ValueError(f"{pattern!r} cannot be filled ({exc})") from None


class _Any(dict[str, Any]):
    """A metadata mapping in which every other field exists (its value is unknown until a post)."""

    def __missing__(self, key: str) -> str:
        return "x"


def derive(settings: PelicanSettings, post: PostFile) -> Derived:
    v = settings.values
    try:
        rel = post.rel.relative_to(settings.content) if settings.content != PurePosixPath(".") else post.rel
    except ValueError:
        raise UrlProblem(f"not in Pelican's content folder (PATH: {settings.content}/)") from None
    meta = {str(k).lower(): val for k, val in post.meta.items()}   # Pelican lower-cases metadata keys
    if text_of(meta, "url"):
        return Derived(path="/" + str(text_of(meta, "url")).lstrip("/"))
    found = {**_path_metadata(v, rel), **{k: val for k, val in meta.items() if val is not None}}
    subs = _substitutions(v)

    def slug_of(name: str, kind: str) -> str:
        return pelican_slugify(name, _substitutions(v, kind) or subs,
                               preserve_case=bool(v["SLUGIFY_PRESERVE_CASE"]),
                               use_unicode=bool(v["SLUGIFY_USE_UNICODE"]))

    slug = text_of(found, "slug")
    if slug is None:
        source = text_of(meta, "title") if v["SLUGIFY_SOURCE"] == "title" else rel.stem
        slug = slug_of(source or "", "SLUG")
    default_lang = str(v["DEFAULT_LANG"]).lower()
    lang = text_of(meta, "lang") or default_lang
    category = text_of(found, "category") or (post.categories[0] if post.categories else None) \
        or str(v["DEFAULT_CATEGORY"] or "")
    authors = meta.get("authors")
    author = text_of(meta, "author") or (re.split(r"[;,]", authors)[0].strip() if isinstance(authors, str)
                                          else None) or (str(v["AUTHOR"]) if v["AUTHOR"] else "")
    fields = {k: val for k, val in found.items() if isinstance(val, str | int | float)}
    fields.update(path=rel.as_posix(), slug=slug, lang=lang, date=post.date,
                  author=slug_of(author, "AUTHOR") if author else "",
                  category=slug_of(category, "CATEGORY") if category else "")
    pattern = str(v["ARTICLE_URL"] if lang == default_lang else v["ARTICLE_LANG_URL"])
    try:
        url = FORMATTER.vformat(pattern, (), fields)
    except KeyError as exc:
        raise UrlProblem(f"ARTICLE_URL {pattern!r} uses {{{exc.args[0]}}}, which this post's metadata "
                         "does not have") from None
    except (ValueError, IndexError, AttributeError, TypeError) as exc:
        raise UrlProblem(f"ARTICLE_URL {pattern!r} cannot be filled for this post ({exc})") from None
    return Derived(path="/" + url.lstrip("/"))


def _path_metadata(v: Mapping[str, Any], rel: PurePosixPath) -> dict[str, str]:
    """readers.py `parse_path_metadata` and the default category: FILENAME_METADATA on the file
    name, PATH_METADATA on the path, the folder as the category; the first to give a key wins."""
    found: dict[str, str] = {}
    checks = [(v["FILENAME_METADATA"], rel.stem), (v["PATH_METADATA"], rel.as_posix())]
    if v["USE_FOLDER_AS_CATEGORY"] and v["CATEGORY_SAVE_AS"]:
        checks.append(("(?P<category>.*)", rel.parent.name))
    for pattern, data in checks:
        match = re.match(str(pattern), data) if pattern and data else None
        for key, value in (match.groupdict() if match else {}).items():
            if value is not None and key.lower() not in found:
                found[key.lower()] = value.strip() if key.lower() == "slug" else value
    return found


def _substitutions(v: Mapping[str, Any], kind: str = "SLUG") -> list[tuple[str, str]] | None:
    subs = v.get(f"{kind}_REGEX_SUBSTITUTIONS")
    if subs is None:
        return None
    return [(str(a), str(b)) for a, b in subs]
