"""The Network protocol and the Unicode helpers every network's counting shares."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, ClassVar, Protocol

if TYPE_CHECKING:
    import regex


@dataclass(frozen=True, kw_only=True)
class _Patterns:
    grapheme: regex.Pattern[str]
    may_join: regex.Pattern[str]          # not ASCII, or CR (CR LF is one cluster)
    # A cluster that takes in a space: a prepended character before it, a mark or joiner after it.
    across_space: regex.Pattern[str]


@cache
def _patterns() -> _Patterns:
    """Compiled on the first count: importing `regex` and compiling these takes tens of
    milliseconds, which loading the config (NETWORKS) does not need."""
    import regex

    return _Patterns(grapheme=regex.compile(r"\X"), may_join=regex.compile(r"[^\x00-\x0c\x0e-\x7f]"),
                     across_space=regex.compile(
                         r"\p{Grapheme_Cluster_Break=Prepend} | [\p{Grapheme_Cluster_Break=Extend}"
                         r"\p{Grapheme_Cluster_Break=ZWJ}\p{Grapheme_Cluster_Break=SpacingMark}]"))


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

    def prefix_counts(self, text: str, stop: int) -> list[int | None]:
        """count(text[:i]) for i = 0, 1, … up to the first i where it passes `stop` (or to
        len(text)), worked out from the characters in one pass; None at an i where only `count`
        can tell (inside a URL, a mention or a grapheme cluster). `text` is one line with single
        spaces. Renderers search cut points with these and count what they keep with `count`."""
        ...


def graphemes(text: str) -> int:
    """Number of user-perceived characters (extended grapheme clusters) in `text`."""
    return len(_patterns().grapheme.findall(text))


def grapheme_boundaries(text: str) -> set[int]:
    """String indices at which `text` may be cut without splitting a grapheme cluster."""
    return {0, *(m.end() for m in _patterns().grapheme.finditer(text))}


def running_graphemes(text: str, stop: int, units: dict[int, tuple[int, int]] | None = None
                      ) -> list[int | None]:
    """count(text[:i]) for i = 0, 1, … where the count is the number of grapheme clusters, up to
    the first i where it passes `stop` (or len(text)); None inside a cluster. `units`: spans
    (start -> (end, count)) that count as a whole (a URL, a mention), None inside them."""
    patterns = _patterns()
    if units and patterns.across_space.search(text):
        return [0] + [None] * len(text)     # a unit's neighbour may join it: only `count` can tell
    out: list[int | None] = [0]
    total, pos, size = 0, 0, len(text)
    starts = sorted(units) if units else []
    while pos < size and total <= stop:
        if units and pos in units:
            end, n = units[pos]
            out += [None] * (end - pos - 1) + [total + n]
            total, pos = total + n, end
            continue
        # ASCII (but CR) is a cluster a character, up to one before a character that may join it.
        found = patterns.may_join.search(text, pos)
        plain = (found.start() - 1 if found else size) - pos
        plain = min(plain, next((s for s in starts if s > pos), size) - pos, stop - total + 1)
        if plain > 0:
            out.extend(range(total + 1, total + plain + 1))
            total, pos = total + plain, pos + plain
            continue
        m = patterns.grapheme.match(text, pos)
        end = m.end() if m else pos + 1
        total += 1
        out += [None] * (end - pos - 1) + [total]
        pos = end
    return out
