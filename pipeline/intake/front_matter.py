"""A post file's front matter and body, in the formats site generators write.

YAML between `---` lines (Jekyll, Eleventy, Hugo, Astro, Next.js), TOML between `+++` lines
(Hugo, read with `tomllib`), a JSON object at the top (Hugo), and Pelican's Markdown metadata:
`Key: value` lines up to the first blank line, as Python-Markdown's `meta` extension (which
Pelican uses) reads them. Each gives one mapping; `post_fields` maps its keys onto ours.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import yaml
from frontmatter.default_handlers import BaseHandler, YAMLHandler

from pipeline.intake.textfile import YamlTooLarge, load_yaml

NO_FRONT_MATTER = "no front matter: start the file with a --- block holding title: and date:"
TOO_DEEP = "front matter: nested too deeply; flatten the lists and mappings"

_YAML = YAMLHandler()
_TOML = BaseHandler(fm_boundary=re.compile(r"^\+{3,}\s*$", re.MULTILINE))
# Hugo's JSON front matter is an object at the very start; `{%` (Liquid) or `{:` (kramdown) is not.
_JSON_START = re.compile(r'\{\s*["}]')
_TOML_WHERE = re.compile(r"\s*\(at line (\d+), column \d+\)|\s*\(at end of document\)")
# Eleventy (gray-matter) names the language after the opening dashes: `---json`, `---js`.
_NAMED = re.compile(r"---[ \t]*([A-Za-z]+)[ \t]*$", re.MULTILINE)
# Python-Markdown's meta extension: a key line, or a continuation indented by four spaces.
_META_LINE = re.compile(r"^[ ]{0,3}(?P<key>[A-Za-z0-9_-]+):\s*(?P<value>.*)")
_META_MORE = re.compile(r"^[ ]{4,}(?P<value>.*)")
# Pelican's keys that hold several values: split on ";" when the value has one, else on ",".
_PELICAN_LISTS = ("tags", "authors")


class FrontMatterError(ValueError):
    """The front matter cannot be read; the message is one line, naming the line when known."""


@dataclass(frozen=True, kw_only=True)
class Split:
    """A post file cut into its front matter and its body."""

    meta: dict[str, Any]
    body: str
    first_line: int               # the file line the body starts on (1-based)
    kind: str                     # "YAML", "TOML", "JSON" or "Pelican metadata"
    # YAML only: each top-level scalar (or list of scalars) as written, so that `title: 2024` or
    # `title: 1.10` can be read as the text the author wrote rather than the number YAML builds.
    written: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


class _FrontMatterLoader(yaml.SafeLoader):
    """SafeLoader that leaves timestamps as strings: dates are parsed by `post_dates`, so an
    impossible date ("2020-13-01") gets a message naming the field instead of a crash."""


_FrontMatterLoader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}


def split(text: str) -> Split:
    """The front matter (any of the formats) and the body of a post's text. Raises
    FrontMatterError."""
    if named := _NAMED.match(text):
        return _named(named.group(1).lower(), "---" + text[named.end():])
    if _YAML.detect(text):
        return _yaml(text)
    if _TOML.detect(text):
        return _toml(text)
    if _JSON_START.match(text):
        return _json(text)
    pelican = _pelican(text)
    if pelican is None:
        raise FrontMatterError(NO_FRONT_MATTER)
    return pelican


def _cut(handler: BaseHandler, text: str, closer: str) -> tuple[str, str, int]:
    try:
        fm_text, body = handler.split(text)
    except ValueError:
        raise FrontMatterError(f"front matter is not closed: add a {closer} line after it") from None
    return fm_text, body, _first_line(text, body)


def _first_line(text: str, body: str) -> int:
    return text[: len(text) - len(body)].count("\n") + 1


def _yaml(text: str) -> Split:
    fm_text, body, first_line = _cut(_YAML, text, "---")
    try:
        meta, node = load_yaml(fm_text, _FrontMatterLoader)
    except YamlTooLarge as exc:
        raise FrontMatterError(f"front matter: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise FrontMatterError(f"{line}front matter is not valid YAML ({problem})") from None
    meta = _mapping(meta, "a YAML mapping")
    return Split(meta=meta, body=body, first_line=first_line, kind="YAML",
                 written=MappingProxyType(_as_written(node)))


def _as_written(node: yaml.Node | None) -> dict[str, Any]:
    """Each top-level key's scalar value (or list of scalar values) as its source text."""
    if not isinstance(node, yaml.MappingNode):
        return {}
    written: dict[str, Any] = {}
    for key, value in node.value:
        if not isinstance(key, yaml.ScalarNode):
            continue
        if isinstance(value, yaml.ScalarNode):
            written[key.value] = value.value
        elif isinstance(value, yaml.SequenceNode):
            written[key.value] = [v.value if isinstance(v, yaml.ScalarNode) else None for v in value.value]
    return written


def _named(language: str, text: str) -> Split:
    """Front matter opened by `---LANGUAGE` (the first line replaced by `---` in `text`)."""
    if language in ("yaml", "yml"):
        return _yaml(text)
    if language not in ("json", "toml"):
        shown = "JavaScript" if language in ("js", "javascript") else language
        raise FrontMatterError(
            f"front matter is {shown} (---{language}): the pipeline reads YAML, TOML and JSON "
            "front matter and runs no code; write it as YAML (title: ..., date: ...)")
    fm_text, body, first_line = _cut(_YAML, text, "---")
    if language == "toml":
        meta = _toml_meta(fm_text)
    else:
        try:
            meta = _mapping(json.loads(fm_text), "a JSON object")
        except json.JSONDecodeError as exc:
            line = fm_text[: exc.pos].count("\n") + 1
            raise FrontMatterError(f"line {line}: front matter is not valid JSON ({exc.msg})") from None
        except RecursionError:
            raise FrontMatterError(TOO_DEEP) from None
    return Split(meta=meta, body=body, first_line=first_line, kind=language.upper())


def _toml(text: str) -> Split:
    fm_text, body, first_line = _cut(_TOML, text, "+++")
    return Split(meta=_toml_meta(fm_text), body=body, first_line=first_line, kind="TOML")


def _toml_meta(fm_text: str) -> dict[str, Any]:
    try:
        return tomllib.loads(fm_text)
    except RecursionError:
        raise FrontMatterError(TOO_DEEP) from None
    except tomllib.TOMLDecodeError as exc:
        # tomllib counts lines from the `+++` line's end, that is, file lines.
        message = str(exc)
        where = _TOML_WHERE.search(message)
        line = f"line {where.group(1)}: " if where and where.group(1) else ""
        reason = _TOML_WHERE.sub("", message)
        raise FrontMatterError(f"{line}front matter is not valid TOML ({reason})") from None


def _json(text: str) -> Split:
    try:
        meta, end = json.JSONDecoder().raw_decode(text)
    except json.JSONDecodeError as exc:
        raise FrontMatterError(f"line {exc.lineno}: front matter is not valid JSON ({exc.msg})") from None
    except RecursionError:
        raise FrontMatterError(TOO_DEEP) from None
    meta = _mapping(meta, "a JSON object")
    body = text[end:]
    return Split(meta=meta, body=body, first_line=_first_line(text, body), kind="JSON")


def _mapping(meta: Any, what: str) -> dict[str, Any]:
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise FrontMatterError(f"front matter must be key: value lines ({what})")
    return {str(k): v for k, v in meta.items()}


def _pelican(text: str) -> Split | None:
    """Pelican's Markdown metadata: `Key: value` lines at the top (keys case-insensitive), a line
    indented by four spaces continuing the value before it, ended by a blank line (taken with the
    metadata) or by any other line (left to the body). None when the file does not start with
    such lines or they hold no title: then it is a file without front matter."""
    lines = text.split("\n")
    values: dict[str, list[str]] = {}
    key = None
    end = 0
    while end < len(lines):
        line = lines[end]
        if not line.strip():
            end += 1
            break
        if match := _META_LINE.match(line):
            key = match.group("key").lower()
            values.setdefault(key, []).append(match.group("value").strip())
        elif key and (match := _META_MORE.match(line)):
            values[key].append(match.group("value").strip())
        else:
            break
        end += 1
    if "title" not in values:
        return None
    meta: dict[str, Any] = {}
    for name, parts in values.items():
        value = " ".join(p for p in parts if p)
        if name in _PELICAN_LISTS:
            sep = ";" if ";" in value else ","
            meta[name] = [v.strip() for v in value.split(sep) if v.strip()]
        else:
            meta[name] = value
    return Split(meta=meta, body="\n".join(lines[end:]), first_line=end + 1, kind="Pelican metadata")
