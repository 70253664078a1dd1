"""A reStructuredText post (Pelican's default format) read with docutils, as Pelican reads it.

The document title is the post's title; the field list right below it (`:date:`, `:tags:`,
`:category:`, `:slug:`, `:authors:`, `:summary:`, `:status:`, ...) is its metadata; the rest is the
body, written to HTML by docutils. Nothing outside the text is read: no `include`, no `raw`, no
file or URL a directive names. The HTML is not sanitized here (the caller knows the base URL).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import docutils.core
from docutils import nodes
from docutils.readers import standalone
from docutils.transforms import Transform
from docutils.utils import new_document
from docutils.writers.html5_polyglot import Writer

log = logging.getLogger(__name__)

# file_insertion_enabled/raw_enabled: a post must not pull in files, URLs or raw HTML.
# report_level/halt_level 5: no system message is written into the HTML and none stops the
# parse; they are collected below and reported as warnings instead.
SETTINGS: dict[str, Any] = {
    "file_insertion_enabled": False, "raw_enabled": False, "report_level": 5, "halt_level": 5,
    "_disable_config": True,          # no docutils.conf from the working or home folder
    "initial_header_level": 2,        # the title is the email's heading; sections start at h2
    "syntax_highlight": "none",       # code as plain text: the classes would be stripped anyway
    "warning_stream": False,
}
# docutils messages at this level and above mean part of the text was left out (an unknown
# directive, a disabled one); lower ones (INFO, a short title underline) change nothing visible.
REPORTED_LEVEL = 3
# Interpreted text with a role docutils does not know (Sphinx's :file:, a theme's :ruby:):
# `:role:`text`` or ``text`:role:`.
_ROLE_TEXT = re.compile(r"^(?::[\w.+-]+:)?`(?P<text>.*)`(?::[\w.+-]+:)?$", re.S)
# What the reader is told for the messages real posts give most (matched in the message).
_CONSEQUENCE = {"Unknown directive type": "; left out of the email",
                "Unknown interpreted text role": "; its text is shown as code",
                "directive disabled": "; left out of the email (a post cannot pull in files or raw HTML)",
                "access deactivated": "; left out of the email (a post cannot pull in files or URLs)"}
# Warnings (level 2) reported too: those the safe settings cause, since text goes missing.
_SETTINGS_WARNINGS = ("directive disabled", "access deactivated")


@dataclass(frozen=True, kw_only=True)
class RstDocument:
    """A reStructuredText post: its metadata (field names lower-cased; the document title as
    `title` unless a `:title:` field gives one), its body as HTML, and what docutils left out."""

    meta: dict[str, Any]
    html: str
    warnings: tuple[str, ...]


class RstError(ValueError):
    """docutils could not read the text at all."""


class _KeepProblematicText(Transform):
    """Text docutils could not read (an unknown role, an unclosed backquote) becomes a
    `problematic` node linking to its message; the messages are not written, so the link would
    go nowhere. Keep what the author wrote instead: a role's text as code, anything else as is."""

    default_priority = 850        # before docutils drops the messages (FilterMessages, 870)

    def apply(self) -> None:
        for node in list(self.document.findall(nodes.problematic)):
            text = node.astext()
            match = _ROLE_TEXT.match(text)
            node.parent.replace(node, nodes.literal(text, match.group("text")) if match else nodes.Text(text))


class _Reader(standalone.Reader):
    """The standalone reader, keeping the document and what its reporter says (report_level 5
    keeps the messages out of the HTML, not from observers)."""

    document: nodes.document | None = None

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[nodes.system_message] = []

    def get_transforms(self) -> list[type[Transform]]:
        return [*super().get_transforms(), _KeepProblematicText]

    def new_document(self) -> nodes.document:
        document = new_document(self.source.source_path, self.settings)
        document.reporter.attach_observer(self.messages.append)
        self.document = document
        return document


def read_rst(text: str) -> RstDocument:
    """Title, field-list metadata and HTML body of a reStructuredText post. Raises RstError."""
    reader = _Reader()
    try:
        parts = docutils.core.publish_parts(source=text, reader=reader, writer=Writer(),
                                            settings_overrides=SETTINGS)
    except Exception as exc:     # docutils is third-party code reading the user's text
        log.debug("docutils failed", exc_info=True)
        raise RstError(f"{type(exc).__name__}: {exc}".splitlines()[0]) from None
    document = reader.document
    assert document is not None
    meta = _docinfo(document)
    if document.get("title") and "title" not in meta:
        meta["title"] = document["title"]
    return RstDocument(meta=meta, html=parts["body"], warnings=tuple(_left_out(reader.messages)))


def _docinfo(document: nodes.document) -> dict[str, Any]:
    """The bibliographic fields, as Pelican reads them: a generic field by its name, a known one
    (date, status, author...) by its node's name, `authors` as the list docutils split it into."""
    meta: dict[str, Any] = {}
    for docinfo in document.findall(nodes.docinfo):
        for element in docinfo.children:
            if isinstance(element, nodes.field):
                name, body = element.children[0].astext(), element.children[1].astext()
                meta.setdefault(name.strip().lower(), " ".join(body.split()))
            elif isinstance(element, nodes.authors):
                meta.setdefault("authors", [a.astext() for a in element.children])
            elif isinstance(element, nodes.Element):
                meta.setdefault(element.tagname.lower(), " ".join(element.astext().split()))
    return meta


def _left_out(messages: list[nodes.system_message]) -> list[str]:
    """One warning per kind of message (`line N: ...`, the first place it occurs, with a count)."""
    seen: dict[str, tuple[int | None, int]] = {}
    for message in messages:
        paragraph = next(iter(message.findall(nodes.paragraph)), None)
        text = " ".join((paragraph or message).astext().split())
        if message.get("level", 0) < REPORTED_LEVEL and not any(w in text for w in _SETTINGS_WARNINGS):
            continue
        line, count = seen.get(text, (message.get("line"), 0))
        seen[text] = (line, count + 1)
    out = []
    for text, (line, count) in seen.items():
        times = f" ({count} times)" if count > 1 else ""
        where = f"line {line}: " if line else ""
        then = next((v for k, v in _CONSEQUENCE.items() if k in text), "")
        out.append(f"{where}reStructuredText: {text.rstrip('.')}{times}{then}")
    return out
