"""The emoji in a text, found as twitter-text's `extract_emojis_with_indices` finds them, without
importing twitter-text (whose emoji regex, thousands of sequences in one alternation, takes a
fifth of a second to compile).

Its regex tries every sequence of two or more code points, longest first, then one class of single
code points; every sequence is a literal, so at a position the longest sequence that is there
wins, else a single emoji code point. Here that is a set lookup per sequence length that starts
with the character at hand. tests/test_twitter_text_data.py holds this to twitter-text.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from pipeline.networks import twitter_data as data


@dataclass(frozen=True, kw_only=True)
class _Emoji:
    sequences: frozenset[str]
    lengths: dict[str, tuple[int, ...]]     # first character -> lengths of its sequences, longest first
    singles: frozenset[str]
    characters: frozenset[str]              # every non-ASCII code point of any emoji


@cache
def _emoji() -> _Emoji:
    return _Emoji(sequences=frozenset(data.EMOJI_SEQUENCES.split(" ")), lengths=data.EMOJI_LENGTHS,
                  singles=frozenset(data.EMOJI_SINGLES), characters=frozenset(data.EMOJI_CHARACTERS))


def may_hold_emoji(text: str) -> bool:
    """False when `text` has no character beyond ASCII that belongs to an emoji: no sequence is
    ASCII alone (a keycap such as "#️⃣" carries U+20E3), so such a text holds none."""
    return not _emoji().characters.isdisjoint(text)


def emoji_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each emoji in `text`, in code points, as twitter-text's regex finds them
    scanning from the left."""
    emoji = _emoji()
    spans, index, size = [], 0, len(text)
    while index < size:
        end = index
        for length in emoji.lengths.get(text[index], ()):
            # Near the end a slice is short, and may be a shorter sequence: still the longest here.
            candidate = text[index:index + length]
            if candidate in emoji.sequences:
                end = index + len(candidate)
                break
        if end == index and text[index] in emoji.singles:
            end = index + 1
        if end > index:
            spans.append((index, end))
        index = max(end, index + 1)
    return spans
