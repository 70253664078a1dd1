"""What the generator modules share: their errors, the post they derive a URL for, and reading
the TOML, YAML and JSON configs (bounded YAML, the line of a syntax error)."""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

import yaml

from pipeline.fields import is_http_url
from pipeline.intake.textfile import NotUtf8, YamlTooLarge, load_yaml, read_utf8

Shown = Callable[[Path], str]      # a file of the blog as messages name it ("../blog/hugo.toml")


class SiteConfigError(ValueError):
    """The generator's config cannot be read or used: one line naming the file (and line, key).
    `key`: the `site.` key of config.yaml it is about (`root`, `generator_config`), if any."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class UrlProblem(ValueError):
    """This post's URL cannot be derived (a per-post problem; the message names no file)."""


@dataclass(frozen=True, kw_only=True)
class PostFile:
    """A post as a generator sees it: its file relative to the blog's root, its front matter."""

    rel: PurePosixPath                 # e.g. content/posts/hello/index.md
    file: Path                         # the same, absolute (to look at its neighbours)
    date: datetime                     # timezone-aware
    meta: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    categories: tuple[str, ...] = ()   # the loader's, used when the front matter names none


@dataclass(frozen=True, kw_only=True)
class Derived:
    """A post's path on the site (from `/`, before %-encoding), and what the user should know."""

    path: str
    notes: tuple[str, ...] = ()


def load_data(path: Path, shown: Shown) -> dict[str, Any]:
    """A TOML, YAML or JSON config file as a mapping. Raises SiteConfigError naming file and line."""
    where = shown(path)
    try:
        text = read_utf8(path)
    except NotUtf8 as exc:
        raise SiteConfigError(f"{where}: {exc}; save it as UTF-8") from None
    except OSError as exc:
        raise SiteConfigError(f"{where}: cannot be read ({exc.strerror or exc})") from None
    kind = path.suffix.lower().lstrip(".")
    try:
        if kind == "toml":
            data = tomllib.loads(text)
        elif kind == "json":
            data = json.loads(text)
        else:
            data, _ = load_yaml(text)
    except tomllib.TOMLDecodeError as exc:
        line = re.search(r"at line (\d+)", str(exc))
        raise SiteConfigError(f"{where}{':' + line.group(1) if line else ''}: not valid TOML "
                              f"({str(exc).split(' (at line')[0]})") from None
    except json.JSONDecodeError as exc:
        raise SiteConfigError(f"{where}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    except YamlTooLarge as exc:
        raise SiteConfigError(f"{where}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise SiteConfigError(f"{where}{f':{mark.line + 1}' if mark else ''}: not valid YAML "
                              f"({getattr(exc, 'problem', None) or 'syntax error'})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SiteConfigError(f"{where}: must be a mapping of settings, not a {type(data).__name__}")
    return data


def lower_keys(value: Any) -> Any:
    """`value` with every mapping key lower-cased, recursively (Hugo's keys ignore case)."""
    if isinstance(value, Mapping):
        return {str(k).lower(): lower_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [lower_keys(v) for v in value]
    return value


def deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`over` merged into a copy of `base`, mappings recursively (a later config file wins)."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def text_of(meta: Mapping[str, Any], key: str) -> str | None:
    """A front matter field as non-empty stripped text (numbers too: `slug: 2024`), else None."""
    value = meta.get(key)
    if isinstance(value, bool) or value is None or isinstance(value, Mapping | list):
        return None
    text = str(value).strip()
    return text or None


def base_url(value: Any) -> str | None:
    """The generator's base URL if it is an absolute http(s) URL of a public host: a local one
    (`http://localhost:1313/`, the dev server) says nothing of where the blog lives."""
    if not isinstance(value, str) or not is_http_url(value.strip()):
        return None
    host = urlsplit(value.strip()).hostname or ""
    return None if host in ("localhost", "127.0.0.1", "0.0.0.0", "::1") else value.strip()


def js_string(text: str, key: str) -> str | None:
    """The first `key: "literal"` (or `key = '...'`) in a JavaScript config, read as text: the
    config is never run, so a value computed by code is not seen (None)."""
    match = re.search(rf"""(?<![\w$.]){re.escape(key)}["']?\s*[:=]\s*(["'`])([^"'`$\n]*)\1""", text)
    return match.group(2) if match else None


def first_existing(root: Path, names: tuple[str, ...]) -> Path | None:
    """The first of `names` that is a file under `root`."""
    return next((root / n for n in names if (root / n).is_file()), None)


def one_config_file(root: Path, file: str | None, names: tuple[str, ...]) -> list[Path]:
    """A generator's config for a site with one config file: `file` (site.generator_config), else
    the first of `names` found under `root`; none when there is none."""
    found = root / file if file else first_existing(root, names)
    return [found] if found else []
