"""Reference markers and footnotes: what an excerpt, a preheader or a snippet must not carry.

Real posts cite their sources: Markdown footnotes (markdown-it's `<sup><a href="#fn1">[1]</a></sup>`,
kramdown's and Hugo's `#fn:1`, Pandoc's `<a href="#fn1"><sup>1</sup></a>`) and the footnotes list
they point to, a "Sources" section, and markers typed into the prose: Wikipedia-style `[1]`,
`[1][2]`, `[1, 2]`, an unresolved Markdown `[^1]`, superscript digits `¹²`. The email keeps them
(its reader can follow them); a 280-character excerpt cannot, so its text is taken without them.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import regex

# Footnote ids as the usual generators write them: fn1 (markdown-it, Pandoc), fn:1 (kramdown,
# Hugo), fn-1, footnote-1; "fnref…" is the id of the reference, not of the note.
_NOTE_ID = regex.compile(r"(?:fn|footnote)(?!ref)[-:_.]?\w[\w:.-]*", regex.I)
_REFERENCE_ID = regex.compile(r"(?:fnref|footnote-ref)[-:_.]?\w[\w:.-]*", regex.I)
# Typed markers: [1], [12], [1, 2], [1–3], back to back ([1][2]) or doubled ([1] [1]); [^1] and
# [^note] (a footnote reference Markdown could not resolve). Up to three digits, not from 0:
# "[2024]" is a year and "[0]" an index.
_TYPED = regex.compile(r"\s*(?:\[[1-9]\d{0,2}(?:\s*[,–-]\s*\d{1,3})*\]|\[\^[^\]\s]{1,40}\])")
# Superscript digits used as markers: after punctuation or a word of three letters or more, so a
# unit (m², cm³) or a formula (mc²) keeps its exponent.
_SUPERSCRIPT = regex.compile(r"(?:(?<=\p{L}{3})|(?<=[.,;:!?)\]\"”’']))[⁰¹²³⁴-⁹]+(?![\p{L}\p{N}])")
_SUP_MARKER = regex.compile(r"\s*(?:[\[(]?\s*\d{1,3}(?:\s*[,–-]\s*\d{1,3})*\s*[\])]?|\*{1,3}|[†‡§])\s*")
# Headings of a section that lists the post's sources: the section is left out of excerpts.
REFERENCE_HEADINGS = frozenset({
    "sources", "references", "bibliography", "citations", "works cited", "notes", "footnotes",
    "endnotes", "further reading", "sources and references", "notes and references",
    "quellen", "literatur", "einzelnachweise", "références", "notes et références", "sources et références",
    "referencias", "fuentes", "bibliografía", "notas", "fontes", "referências", "bibliografia", "fonti",
})


def strip_markers(text: str) -> str:
    """`text` without typed reference markers; whitespace is left as it was around them."""
    if "[" in text:
        text = _TYPED.sub("", text)
    if not text.isascii():
        text = _SUPERSCRIPT.sub("", text)
    return text


def is_note_id(value: str) -> bool:
    """Whether an element id names a footnote (the target of a footnote reference)."""
    return bool(_NOTE_ID.fullmatch(value))


def is_note_link(href: str) -> bool:
    """Whether a link points at a footnote of the same page (`#fn1`, `…/post/#fn:1`)."""
    fragment = urlsplit(href).fragment if "#" in href else ""
    return bool(fragment) and is_note_id(fragment)


def is_back_link(href: str) -> bool:
    """Whether a link goes back from a footnote to its reference (`#fnref1`, the "↩" link)."""
    fragment = urlsplit(href).fragment if "#" in href else ""
    return bool(fragment) and bool(_REFERENCE_ID.fullmatch(fragment))


def is_marker_text(text: str) -> bool:
    """Whether the text of a `<sup>` (or of a link in one) is a reference marker: "1", "[1]",
    "1,2", "*", "†"."""
    return bool(text.strip()) and bool(_SUP_MARKER.fullmatch(text))


def is_references_heading(text: str) -> bool:
    """Whether a heading opens a section of sources ("Sources", "References:", "Notes")."""
    return " ".join(text.split()).strip(" :.").casefold() in REFERENCE_HEADINGS
