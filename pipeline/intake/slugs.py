"""Slugs and path segments the way each site generator makes them, so a derived URL matches the
live page character for character (python-slugify's rules differ from every one of them).

Each function names the generator code it follows; none does I/O.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from urllib.parse import quote

import regex
from markupsafe import Markup
from text_unidecode import unidecode

# Hugo, common/paths/path.go `isAllowedPathCharacter`: letters, digits, marks and these; a space
# becomes one hyphen before the next kept character; anything else is dropped.
_HUGO_KEPT = frozenset("./\\_#+~-@")
_HEX = frozenset("0123456789abcdefABCDEF")


def hugo_sanitize(text: str, *, lower: bool = True) -> str:
    """Hugo's `MakePathSanitized`: the path Hugo writes (lower-cased unless `disablePathToLower`)."""
    out: list[str] = []
    prepend = was_hyphen = False
    for i, ch in enumerate(text):
        cat = unicodedata.category(ch)
        kept = ch != " " and (cat[0] in "LM" or cat == "Nd" or ch in _HUGO_KEPT or (
            ch == "%" and i + 2 < len(text) and text[i + 1] in _HEX and text[i + 2] in _HEX))
        if kept:
            was_hyphen = ch == "-"
            if prepend and not was_hyphen:
                out.append("-")
            prepend = False
            out.append(ch)
        elif out and not was_hyphen and ch.isspace():
            prepend = True
    result = "".join(out)
    return result.lower() if lower else result


def hugo_remove_accents(text: str) -> str:
    """Hugo's `removePathAccents`: combining marks dropped after canonical decomposition."""
    return unicodedata.normalize("NFC", "".join(
        c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn"))


# Jekyll, lib/jekyll/utils.rb `slugify`: runs of other characters become one hyphen.
_JEKYLL_DEFAULT = regex.compile(r"[^\p{M}\p{L}\p{Nd}]+")
_JEKYLL_PRETTY = regex.compile(r"[^\p{M}\p{L}\p{Nd}._~!$&'()+,;=@]+")


def jekyll_slugify(text: str, *, pretty: bool = False, cased: bool = False) -> str:
    """Jekyll's `Utils.slugify` in `default` (or `pretty`) mode; lower-cased unless `cased`."""
    slug = (_JEKYLL_PRETTY if pretty else _JEKYLL_DEFAULT).sub("-", text)
    slug = re.sub(r"^-|-$", "", slug)
    return slug if cased else slug.lower()


def jekyll_escape(text: str) -> str:
    """Jekyll's `URL.escape_path`: what RFC 3986 allows in a path stays, the rest is %-encoded."""
    if not text or re.fullmatch(r"[a-zA-Z0-9./-]+", text):
        return text
    return quote(text, safe="/!$&'()*+,;=:@")


# Pelican, settings.py DEFAULT_CONFIG["SLUG_REGEX_SUBSTITUTIONS"].
PELICAN_SUBSTITUTIONS: tuple[tuple[str, str], ...] = (
    (r"[^\w\s-]", ""),        # remove non-alphabetical/whitespace/'-' chars
    (r"(?u)\A\s*", ""),       # strip leading whitespace
    (r"(?u)\s*\Z", ""),       # strip trailing whitespace
    (r"[-\s]+", "-"),         # reduce multiple whitespace or '-' to single '-'
)


def pelican_slugify(value: str, substitutions: Iterable[tuple[str, str]] = PELICAN_SUBSTITUTIONS, *,
                    preserve_case: bool = False, use_unicode: bool = False) -> str:
    """Pelican's `utils.slugify`: tags stripped, NFKC, ASCII-fied (text-unidecode, the table
    python-slugify ships; Pelican uses Unidecode, which agrees on common text), then the
    configured regex substitutions. Raises re.error for a bad pattern in the user's settings."""
    value = unicodedata.normalize("NFKC", Markup(value).striptags())
    if not use_unicode:
        value = unidecode(value)
    for src, dst in substitutions:
        value = re.sub(unicodedata.normalize("NFKC", src), unicodedata.normalize("NFKC", dst), value,
                       flags=re.IGNORECASE)
    return (value if preserve_case else value.lower()).strip()


# github-slugger (Astro's content slugs): drops what is not a letter, mark, decimal or letter
# number, connector punctuation, space or hyphen; each space becomes a hyphen.
_GITHUB_DROPPED = regex.compile(r"[^\p{L}\p{M}\p{Nd}\p{Nl}\p{Pc} -]")


def github_slug(segment: str) -> str:
    """github-slugger's `slug(segment)`, as Astro slugs each path segment of a content entry."""
    return _GITHUB_DROPPED.sub("", segment.lower()).replace(" ", "-")


def url_path(path: str) -> str:
    """A path with every character a URL path may not hold %-encoded (spaces, non-ASCII), as a
    browser shows the address; existing %XX escapes are kept."""
    return quote(path, safe="/!$&'()*+,;=:@%~")
