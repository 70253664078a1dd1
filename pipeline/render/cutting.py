"""Where text may be cut: sentence ends (pysbd), word boundaries, never inside a grapheme cluster."""

from __future__ import annotations

from functools import lru_cache

import pysbd

from pipeline.networks import grapheme_boundaries

ELLIPSIS = "…"


def excerpt_cuts(text: str, language: str = "en") -> list[str]:
    """Candidate excerpts of `text`, shortest first: whole sentences if any sentence ends before
    the text does, word-boundary cuts ending in "…" otherwise (and before the first sentence)."""
    text = " ".join(text.split())
    if not text:
        return []
    ends = sentence_ends(text, language)
    words = [w + ELLIPSIS for w in word_cuts(text)[:-1] if len(w) < ends[0]]
    return words + [text[:end].rstrip() for end in ends]


def word_cuts(text: str) -> list[str]:
    """Prefixes of `text` ending at a word boundary (never inside a grapheme cluster)."""
    text = " ".join(text.split())
    ok = grapheme_boundaries(text)
    cuts = [text[:i].rstrip(" ,;:–—-") for i, ch in enumerate(text) if ch == " " and i in ok]
    return [c for c in cuts if c] + [text]


def sentence_ends(text: str, language: str = "en") -> list[int]:
    """Indices in `text` where a sentence ends, the last being len(text)."""
    spans = _segmenter(language).segment(text)
    ends = sorted({s.end for s in spans if 0 < s.end < len(text)} | {len(text)})
    ok = grapheme_boundaries(text)
    return [e for e in ends if e in ok or e == len(text)]


@lru_cache(maxsize=8)
def _segmenter(language: str) -> pysbd.Segmenter:
    try:
        return pysbd.Segmenter(language=language, clean=False, char_span=True)
    except ValueError:
        return pysbd.Segmenter(language="en", clean=False, char_span=True)
