"""The Network protocol and the Unicode helpers every network's counting shares."""

from __future__ import annotations

from typing import ClassVar, Protocol

import regex

_GRAPHEME = regex.compile(r"\X")


class Network(Protocol):
    """How a network counts text and shows a link."""

    name: ClassVar[str]
    default_limit: ClassVar[int]

    def count(self, text: str) -> int:
        """The length of `text` as the network counts it against its limit."""
        ...

    def link_text(self, url: str) -> str:
        """How a link to `url` is written in the text (the full URL, or a shortened display)."""
        ...


def graphemes(text: str) -> int:
    """Number of user-perceived characters (extended grapheme clusters) in `text`."""
    return len(_GRAPHEME.findall(text))


def grapheme_boundaries(text: str) -> set[int]:
    """String indices at which `text` may be cut without splitting a grapheme cluster."""
    return {0, *(m.end() for m in _GRAPHEME.finditer(text))}
