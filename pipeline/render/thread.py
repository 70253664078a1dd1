"""A long text as a thread: parts that each fit the network, numbered "(1/3)", cut at sentence
boundaries (else at word boundaries, and only a single word longer than a whole part is cut
between grapheme clusters). The parts, concatenated, are the text again."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pipeline.networks.base import grapheme_boundaries
from pipeline.render.cutting import sentence_ends


def split_thread(text: str, count: Callable[[str], int], limit: int, language: str = "en", *,
                 ends: Sequence[int] | None = None) -> list[str]:
    """Slices of `text` whose concatenation is `text`; each, stripped and numbered with
    `number(i, n)`, counts at most `limit`. Returns the slices (numbering is `numbered`).
    `ends`: where sentences end in `text`, if already known (else pysbd finds them)."""
    if not text.strip():
        return []
    ends = list(ends) if ends is not None else sentence_ends(text, language)
    ok = grapheme_boundaries(text)
    digits = 1
    while True:
        reserve = len(number(10**digits - 1, 10**digits - 1))
        slices = _greedy(text, lambda s, r=reserve: count(s.strip() + " " * r) <= limit, ends, ok)
        if len(str(len(slices))) <= digits:
            return slices
        digits += 1


def number(i: int, n: int) -> str:
    """The numbering added to part `i` of `n`."""
    return f" ({i}/{n})"


def numbered(slices: list[str]) -> list[str]:
    """The parts as posted: each slice stripped, with its number when there is more than one."""
    n = len(slices)
    return [s.strip() + (number(i, n) if n > 1 else "") for i, s in enumerate(slices, 1)]


def _greedy(text: str, fits: Callable[[str], bool], ends: Sequence[int], ok: set[int]) -> list[str]:
    spaces = [i + 1 for i, ch in enumerate(text) if ch.isspace() and i + 1 in ok]
    slices, start = [], 0
    while start < len(text):
        end = _last_fitting([e for e in ends if e > start], start, text, fits) \
            or _last_fitting([s for s in spaces if s > start] + [len(text)], start, text, fits) \
            or _hard_cut(text, start, ok, fits)
        slices.append(text[start:end])
        start = end
    return _merge_blank(slices)


def _last_fitting(cuts: list[int], start: int, text: str, fits: Callable[[str], bool]) -> int | None:
    best = None
    for cut in cuts:           # grow while it fits: counts are monotone in the prefix
        if not text[start:cut].strip():
            continue
        if not fits(text[start:cut]):
            break
        best = cut
    return best


def _hard_cut(text: str, start: int, ok: set[int], fits: Callable[[str], bool]) -> int:
    """A word longer than a whole part: the longest run of whole grapheme clusters that fits."""
    best = min(b for b in ok if b > start)
    for b in sorted(b for b in ok if b > start):
        if not fits(text[start:b]):
            break
        best = b
    return best


def _merge_blank(slices: list[str]) -> list[str]:
    """Whitespace-only slices join their neighbour, so no part is posted empty."""
    out: list[str] = []
    for s in slices:
        if out and not s.strip():
            out[-1] += s
        else:
            out.append(s)
    if len(out) > 1 and not out[0].strip():
        out[1] = out.pop(0) + out[0]
    return out
