"""Where text may be cut: sentence ends (pysbd), word boundaries, never inside a grapheme cluster."""

from __future__ import annotations

from functools import lru_cache

import pysbd

from pipeline.networks.base import grapheme_boundaries

ELLIPSIS = "…"


def window(text: str, chars: int) -> tuple[str, bool]:
    """The start of `text` (whitespace collapsed) up to `chars` characters, cut at a space so no
    word is split, and whether anything was cut off. Segmenting only this much keeps long posts
    cheap. A first word longer than the window gives ("", True): nothing usable."""
    text = " ".join(text.split())
    if len(text) <= chars:
        return text, False
    cut = text.rfind(" ", 0, chars + 1)
    return (text[:cut] if cut > 0 else ""), True


def excerpt_cuts(text: str, language: str = "en", *, chars: int = 2000) -> list[str]:
    """Candidate excerpts of `text`, shortest first: whole sentences where any sentence ends,
    and before the first sentence end, word-boundary cuts ending in "…". The end of a window that
    cut the text short is not a sentence end, so a cut there gets "…" too."""
    head, cut_short = window(text, chars)
    if not head:
        return []
    ends = [e for e in sentence_ends(head, language) if e < len(head) or not cut_short]
    first = ends[0] if ends else len(head) + 1
    words = [w + ELLIPSIS for w in word_cuts(head) if len(w) < first]
    return words + [head[:end].rstrip() for end in ends]


def word_cuts(text: str) -> list[str]:
    """Prefixes of `text` ending at a word boundary (never inside a grapheme cluster), the whole
    text last."""
    text = " ".join(text.split())
    ok = grapheme_boundaries(text)
    cuts = [text[:i].rstrip(" ,;:–—-") for i, ch in enumerate(text) if ch == " " and i in ok]
    return [c for c in cuts if c] + [text]


def sentence_ends(text: str, language: str = "en") -> list[int]:
    """Indices in `text` where a sentence ends, the last being len(text). An end must be at a
    space (pysbd also ends sentences at a "?" inside a URL) and at a grapheme boundary."""
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
