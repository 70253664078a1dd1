"""The longest snippet that fits a network: title, excerpt, hashtags and link, counted as the
network counts them.

Counting every candidate with the network's own counter is what made snippets slow (twitter-text
reads a 300-character post in about 2 ms, and a search tried a dozen candidates per tag count).
So each part is measured once, from running counts (`Network.prefix_counts`: every network
counts the two sides of a line break apart, and within a line works word by word), a candidate's
count is a sum, and only the snippet chosen is counted by the network's own counter. Should that
count differ from the sum, the snippet is chosen again the slow way, counting every candidate
tried: correct to the character either way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from pipeline.networks.base import Network
from pipeline.render.cutting import ELLIPSIS, Cut, Segmented, excerpt_cuts, window, word_cuts, word_ends

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Fitted:
    """A snippet's text, the hashtags it carries and its length as the network counts it."""

    text: str
    tags: tuple[str, ...]
    length: int


def layout(head: str, excerpt: str, used: Sequence[str], link: str) -> str:
    """Title, excerpt and hashtag line as paragraphs, then the link on its own line."""
    return "\n\n".join(p for p in (head, excerpt, " ".join(used)) if p) + \
        ("\n" if used else "\n\n" if head or excerpt else "") + link


class _Running:
    """count(text[:end]) for the cut points of a one-line text, from its running counts; an end
    the running counts cannot tell is counted by the network."""

    def __init__(self, net: Network, text: str, stop: int, *, one_line: bool = False) -> None:
        self.net, self.text = net, text
        one_line = one_line or text == " ".join(text.split())
        self.counts = net.prefix_counts(text, stop) if one_line else [0] + [None] * len(text)
        self.reach = len(self.counts) - 1       # past this the count is over `stop`
        self.known = self.counts[-1] is not None

    def at(self, end: int) -> int:
        known = self.counts[end] if end <= self.reach else None
        if known is None:
            # Inside a word the running counts cannot tell (a URL cut short): count that word's
            # start alone, since the sides of a space count apart.
            start = self.text.rfind(" ", 0, end) + 1
            base = self.counts[start] if start <= self.reach else None
            known = (self.net.count(self.text[:end]) if base is None
                     else base + self.net.count(self.text[start:end]))
            if end <= self.reach:
                self.counts[end] = known
        return known


@lru_cache(maxsize=16)
def _constants(net: type[Network]) -> tuple[int, int, int]:
    """How `net` counts a line break, a blank line and an ellipsis."""
    counter = net()
    return counter.count("\n"), counter.count("\n\n"), counter.count(ELLIPSIS)


class _Layout:
    """The count of `layout(...)` as a sum of its parts' counts and the line breaks between."""

    def __init__(self, net: Network, link: str) -> None:
        self.one, self.two, self.dots = _constants(type(net))
        self.link = _Running(net, link, 10**9).at(len(link))

    def total(self, head: int | None, excerpt: int | None, tags: int | None) -> int:
        parts = [c for c in (head, excerpt, tags) if c is not None]
        tail = self.one if tags is not None else self.two if parts else 0
        return sum(parts) + self.two * max(len(parts) - 1, 0) + tail + self.link


def fit(net: Network, *, title: str, source: Segmented, chars: int, tags: Sequence[str], url: str,
        limit: int) -> Fitted:
    """The longest snippet that fits: the excerpt (a start of `source`, within its first `chars`
    characters) shrinks first, then hashtags go, then the title is shortened at a word boundary,
    then dropped. The link always stays."""
    link = net.link_text(url)
    fast = _fast_fit(net, title, source, chars, tags, link, limit)
    if fast is not None:
        length = net.count(fast.text)
        if length == fast.length <= limit:
            return fast
        log.debug("%s: running count %s, counted %s; fitting again", net.name, fast.length, length)
    return fit_slowly(net, title=title, source=source, chars=chars, tags=tags, link=link, limit=limit)


def _fast_fit(net: Network, title: str, source: Segmented, chars: int, tags: Sequence[str], link: str,
              limit: int) -> Fitted | None:
    sizes = _Layout(net, link)
    head = _Running(net, title, 10**9)
    title_count = head.at(len(title)) if title else None
    tag_line = _Running(net, " ".join(tags), 10**9)
    tag_counts = [tag_line.at(len(" ".join(tags[:n]))) if n else None for n in range(len(tags) + 1)]
    room = limit - sizes.total(title_count, 0, None)           # the most any excerpt may count
    if room >= 0:
        excerpt = _Running(net, window(source.text, chars, collapsed=True)[0], room, one_line=True)
        if not excerpt.known:
            return None                         # counting every candidate: bisect instead
        cuts = excerpt_cuts(source, chars, upto=excerpt.reach)
        dots = sizes.dots
        for n in range(len(tags), -1, -1):
            best = _last(cuts, lambda c, n=n: sizes.total(
                title_count, excerpt.at(c.end) + (dots if c.ellipsis else 0), tag_counts[n]) <= limit)
            if best is not None:
                total = sizes.total(title_count, excerpt.at(best.end) + (dots if best.ellipsis else 0),
                                    tag_counts[n])
                return Fitted(text=layout(title, best.of(source.text), tags[:n], link),
                              tags=tuple(tags[:n]), length=total)
    for n in range(len(tags), -1, -1):
        total = sizes.total(title_count, None, tag_counts[n])
        if total <= limit:
            return Fitted(text=layout(title, "", tags[:n], link), tags=tuple(tags[:n]), length=total)
    collapsed = " ".join(title.split())
    if collapsed != title:
        return None
    ends = [e for e in word_ends(collapsed) if sizes.total(head.at(e), None, None) <= limit]
    end = ends[-1] if ends else 0
    return Fitted(text=layout(collapsed[:end], "", (), link), tags=(),
                  length=sizes.total(head.at(end) if end else None, None, None))


def _last(cuts: Sequence[Cut], ok: Callable[[Cut], bool]) -> Cut | None:
    """The longest cut that is ok. Sums are cheap, so every candidate within reach is tried from
    the longest down, rather than bisecting on the assumption that counts grow with the cut."""
    return next((c for c in reversed(cuts) if ok(c)), None)


def fit_slowly(net: Network, *, title: str, source: Segmented, chars: int, tags: Sequence[str],
               link: str, limit: int) -> Fitted:
    """`fit` counting each candidate it tries with the network's counter, by bisection."""
    def fits(text: str) -> bool:
        return net.count(text) <= limit

    def done(text: str, used: Sequence[str]) -> Fitted:
        return Fitted(text=text, tags=tuple(used), length=net.count(text))

    cuts = [c.of(source.text) for c in excerpt_cuts(source, chars)]
    for n in range(len(tags), -1, -1):
        excerpt = _longest(cuts, lambda e, n=n: fits(layout(title, e, tags[:n], link)))
        if excerpt:
            return done(layout(title, excerpt, tags[:n], link), tags[:n])
    for n in range(len(tags), -1, -1):
        if fits(layout(title, "", tags[:n], link)):
            return done(layout(title, "", tags[:n], link), tags[:n])
    head = _longest(word_cuts(title), lambda t: fits(layout(t, "", (), link)))
    return done(layout(head or "", "", (), link), ())


def _longest(candidates: Sequence[str], ok: Callable[[str], bool]) -> str | None:
    """The last candidate that is ok; candidates grow in length, so a binary search finds it."""
    lo, hi, best = 0, len(candidates) - 1, None
    while lo <= hi:
        mid = (lo + hi) // 2
        if ok(candidates[mid]):
            best, lo = candidates[mid], mid + 1
        else:
            hi = mid - 1
    return best
