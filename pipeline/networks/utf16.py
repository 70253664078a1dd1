"""Counting in UTF-16 code units, as networks whose limit is a JavaScript string's `length` count:
one unit a character of the Basic Multilingual Plane, two for one beyond it (most emoji, rarer
CJK ideographs); a combining mark is a unit of its own."""

from __future__ import annotations


def utf16_units(text: str) -> int:
    """The number of UTF-16 code units of `text`."""
    return len(text) if text.isascii() else len(text.encode("utf-16-le")) // 2


def running_utf16(text: str, stop: int) -> list[int | None]:
    """utf16_units(text[:i]) for i = 0, 1, … up to the first i where it passes `stop` (or to
    len(text)). Every prefix is known: the units of a text are the sum of its characters'."""
    out: list[int | None] = [0]
    total = 0
    for ch in text:
        if total > stop:
            break
        total += 2 if ord(ch) > 0xFFFF else 1
        out.append(total)
    return out


class Utf16Network:
    """A network that counts UTF-16 code units and shows every link in full; a subclass sets
    `name` and `default_limit`."""

    def count(self, text: str) -> int:
        """UTF-16 code units of `text`."""
        return utf16_units(text)

    def prefix_counts(self, text: str, stop: int) -> list[int | None]:
        """See `Network.prefix_counts`: every prefix is known."""
        return running_utf16(text, stop)

    def link_text(self, url: str) -> str:
        """The full URL: these networks shorten nothing."""
        return url
