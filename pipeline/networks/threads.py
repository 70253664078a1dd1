"""Threads: 500 characters, an emoji counting the bytes of its UTF-8 encoding; a link in full.

The Threads API (developers.facebook.com/documentation/threads/posts, "Limitations") limits a
text post to 500 characters and counts "emojis as the number of UTF-8 bytes": 😀 (U+1F600) is 4,
👍🏽 (thumbs up and a skin tone) 8, a family joined by zero-width joiners 25. Emoji are found as
twitter-text finds them (the Unicode emoji sequences, `twitter_emoji`); every other character counts
one a code point, so "é" written as "e" and a combining accent counts two (Meta does not say how it
counts those: code points never count fewer than what is shown, so a snippet that fits here fits
there). CJK characters count one each. Links are not shortened: a URL counts every character
(a post may carry at most 5 links).
"""

from __future__ import annotations

from typing import ClassVar

from pipeline.networks.twitter_emoji import emoji_spans, may_hold_emoji


def _utf8(text: str) -> int:
    return len(text.encode("utf-8"))


class Threads:
    name: ClassVar[str] = "threads"
    default_limit: ClassVar[int] = 500

    def count(self, text: str) -> int:
        """Code points of `text`, but each emoji the bytes of its UTF-8 encoding."""
        if not may_hold_emoji(text):
            return len(text)
        spans = emoji_spans(text)
        return len(text) + sum(_utf8(text[start:end]) - (end - start) for start, end in spans)

    def prefix_counts(self, text: str, stop: int) -> list[int | None]:
        """Character by character; None inside an emoji sequence, whose count is known at its end."""
        spans = dict(emoji_spans(text)) if may_hold_emoji(text) else {}
        out: list[int | None] = [0]
        total, pos, size = 0, 0, len(text)
        while pos < size and total <= stop:
            end = spans.get(pos)
            if end is None:
                total, pos = total + 1, pos + 1
                out.append(total)
            else:
                total += _utf8(text[pos:end])
                out += [None] * (end - pos - 1) + [total]
                pos = end
        return out

    def link_text(self, url: str) -> str:
        return url
