"""Where text may be cut: sentence ends (pysbd), word boundaries, never inside a grapheme cluster.

A post's text is segmented once and only as far as it is read: `segmented(text)` (cached) finds
sentence ends chunk by chunk when they are asked for, so the preheader, the three networks'
snippets and a thread share one pysbd pass over the start of the post. Chunks follow from the
text alone (never from what was asked), so the ends are the same whoever asks first, and a chunk
never ends inside a quotation or parentheses: where those are balanced (in prose they are), the
ends are those pysbd finds reading the whole text.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import lru_cache

import pysbd
import regex

from pipeline.networks.base import grapheme_boundaries

ELLIPSIS = "…"
WORD_CUT_STRIP = " ,;:–—-"       # dropped from the end of a word cut, before the "…"
CHUNK = 480                      # characters pysbd reads at a time (more when a quotation is open)
LOOKAHEAD = 60                   # read past a chunk, so its last sentence end is decided in context
ENCLOSED_MAX = 2000              # a quotation longer than this may be cut into sentences
FIRST_SENTENCE_CHARS = 400       # a preheader shows ~100 characters; segmenting more is wasted

# A grapheme cluster joins across a space only through these: a space followed by a combining
# mark, ZWJ or spacing mark, or a prepended character followed by the space (UAX #29 GB9-GB9b).
_JOINS_BACK = regex.compile(r"[\p{Grapheme_Cluster_Break=Extend}\p{Grapheme_Cluster_Break=ZWJ}"
                            r"\p{Grapheme_Cluster_Break=SpacingMark}]")
_PREPEND = regex.compile(r"\p{Grapheme_Cluster_Break=Prepend}")
# What pysbd never splits inside (its BetweenPunctuation rules): a chunk that would end inside
# one is read on to its close, so a long quotation is never cut into false sentences.
_ENCLOSED = regex.compile(r'“[^”]*”|"[^"]*"|«[^»]*»|\([^()]*\)|\[[^\]]*\]')


def window(text: str, chars: int, *, collapsed: bool = False) -> tuple[str, bool]:
    """The start of `text` (whitespace collapsed, unless it is already) up to `chars` characters,
    cut at a space so no word is split, and whether anything was cut off. Segmenting only this
    much keeps long posts cheap. A first word longer than the window gives ("", True)."""
    if not collapsed:
        text = " ".join(text.split())
    if len(text) <= chars:
        return text, False
    cut = text.rfind(" ", 0, chars + 1)
    return (text[:cut] if cut > 0 else ""), True


class Segmented:
    """A text with whitespace collapsed, and its sentence ends as far as they have been asked for.
    An end is an index just after a space (or the end of the text) at a grapheme boundary."""

    def __init__(self, text: str, language: str = "en") -> None:
        self.text = " ".join(text.split())
        self.language = language
        self._ends: list[int] = []
        self._done = 0             # ends are final up to this index
        self._start = 0            # where the next chunk starts: the last end found (context)
        self._size = CHUNK
        self._lock = threading.Lock()   # shared through `segmented` by renders in several threads

    def ends(self, upto: int) -> list[int]:
        """The sentence ends at or before `upto`; the end of the text is one."""
        upto = min(upto, len(self.text))
        with self._lock:
            while self._done < upto:
                self._segment()
            return [e for e in self._ends if e <= upto]

    def _segment(self) -> None:
        text, start = self.text, self._start
        stop, done = _chunk_end(text, start, start + self._size)
        reach = len(text) if stop >= len(text) else _space_after(text, stop + LOOKAHEAD)
        chunk = text[start:reach]
        found = [start + s.end for s in _segmenter(self.language).segment(chunk)
                 if 0 < s.end < len(chunk)]
        # Only ends this chunk decides: past the last chunk's, up to its own end (read in context).
        new = [e for e in found if self._done < e <= stop + 1 and is_sentence_end(text, e)]
        if stop >= len(text):
            new.append(len(text))
        self._ends += new
        self._done = max(self._done, done)
        # A chunk with no end (one long sentence) is read again, twice as long, from the same start.
        self._start, self._size = (new[-1], CHUNK) if new else (start, self._size * 2)


def _chunk_end(text: str, start: int, want: int) -> tuple[int, int]:
    """Where a chunk from `start` ends (a space, or len(text)), and how far its ends are final.
    A chunk never ends inside a quotation or parentheses, where pysbd would see sentences it
    does not see in the whole text: it stops before one that opens after its start (no sentence
    ends inside one, so the ends are final up to its close), or reads on to its close."""
    if want >= len(text):
        return len(text), len(text)
    for m in _ENCLOSED.finditer(text, start, min(len(text), want + ENCLOSED_MAX)):
        if m.start() >= want:
            break
        if m.end() > want:
            if m.start() > start + 1:
                return m.start(), m.end()
            want = m.end()
    stop = _space_after(text, want)
    return stop, min(stop + 1, len(text))


def _space_after(text: str, i: int) -> int:
    found = text.find(" ", i)
    return len(text) if found < 0 else found


def is_sentence_end(text: str, e: int) -> bool:
    """Whether a sentence may end at `e`: next to a space (pysbd also ends sentences at a "?"
    inside a URL) and not inside a grapheme cluster."""
    if text[e - 1] == " ":
        return e == len(text) or not _JOINS_BACK.match(text, e)
    return e < len(text) and text[e] == " " and not _PREPEND.match(text, e - 1)


def is_word_boundary(text: str, i: int) -> bool:
    """Whether `text` may be cut at the space at `i` without splitting a grapheme cluster."""
    return not _PREPEND.match(text, i - 1) if i > 0 else True


@lru_cache(maxsize=64)
def segmented(text: str, language: str = "en") -> Segmented:
    """The Segmented of `text`, shared: the email's preheader and every network's snippet read the
    sentence ends found by whichever asked first (call `segmented.cache_clear()` to measure)."""
    return Segmented(text, language)


@dataclass(frozen=True)
class Cut:
    """A candidate excerpt: the text up to `end`, with "…" when it was cut inside a sentence."""

    end: int
    ellipsis: bool

    def of(self, text: str) -> str:
        return text[: self.end] + (ELLIPSIS if self.ellipsis else "")


def excerpt_cuts(seg: Segmented, chars: int, *, upto: int | None = None) -> list[Cut]:
    """Candidate excerpts of the first `chars` characters of the text, shortest first: whole
    sentences where any sentence ends, and before the first sentence end, word-boundary cuts
    ending in "…". The end of a window that cut the text short is not a sentence end, so a cut
    there gets "…" too. With `upto`, only the cuts ending by `upto` (longer ones cannot fit, and
    the text past it is not segmented)."""
    head, cut_short = window(seg.text, chars, collapsed=True)
    if not head:
        return []
    last = len(head) if upto is None else min(upto, len(head))
    ends = [e for e in seg.ends(last + 1) if e < len(head) or (e == len(head) and not cut_short)]
    sentences = [Cut(len(head[:e].rstrip()), False) for e in ends if e <= last + 1]
    # Word cuts stop short of the first sentence's end ("It ends.…" is no excerpt), so each
    # candidate counts more than the one before and the longest that fits can be bisected for.
    first = len(head[: ends[0]].rstrip()) if ends else len(head) + 1
    return [Cut(end, True) for end in word_ends(head, last) if end < first] + sentences


def word_ends(text: str, upto: int | None = None) -> list[int]:
    """Where `text` (one line, single spaces) may be cut at a word boundary, up to `upto`: the end
    of each word before a space (trailing ",;:–—-" dropped), and the end of the text."""
    last = len(text) if upto is None else upto
    plain = text.isascii()                 # no prepended character: every space is a boundary
    out = []
    i = text.find(" ")
    while 0 < i <= last:
        if plain or is_word_boundary(text, i):
            end = i
            while end and text[end - 1] in WORD_CUT_STRIP:
                end -= 1
            if end:
                out.append(end)
        i = text.find(" ", i + 1)
    if len(text) <= last:
        out.append(len(text))
    return out


def word_cuts(text: str) -> list[str]:
    """Prefixes of `text` ending at a word boundary (never inside a grapheme cluster), the whole
    text last."""
    text = " ".join(text.split())
    return [text[:end] for end in word_ends(text)]


def first_sentence(text: str, language: str = "en") -> str:
    """The first sentence of `text`; the start of it, with "…", when it runs past 400 characters."""
    seg = segmented(text, language)
    head, cut_short = window(seg.text, FIRST_SENTENCE_CHARS, collapsed=True)
    if not head:
        return ""
    ends = seg.ends(len(head) + 1)
    if ends:
        return seg.text[: ends[0]].strip()
    return head + (ELLIPSIS if cut_short else "")


def sentence_ends(text: str, language: str = "en") -> list[int]:
    """Indices in `text` (any whitespace, line breaks too) where a sentence ends, the last being
    len(text). An end must be at a space and at a grapheme boundary."""
    spans = _segmenter(language).segment(text)
    ok = grapheme_boundaries(text)
    ends = {s.end for s in spans if 0 < s.end < len(text) and s.end in ok
            and (text[s.end - 1].isspace() or text[s.end].isspace())}
    return sorted(ends | {len(text)})


@lru_cache(maxsize=8)
def _segmenter(language: str) -> pysbd.Segmenter:
    try:
        return pysbd.Segmenter(language=language, clean=False, char_span=True)
    except ValueError:
        return pysbd.Segmenter(language="en", clean=False, char_span=True)
