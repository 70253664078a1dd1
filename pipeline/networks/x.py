"""X (Twitter): twitter-text weighted length; every URL counts 23."""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import ClassVar

from twitter_text import extract_urls_with_indices, parse_tweet
from twitter_text.config import config as _twitter_config
from twitter_text.regexp.emoji import emoji_list

_OPTIONS = _twitter_config["defaults"]
_SCALE = _OPTIONS["scale"]
_URL = _OPTIONS["transformed_url_length"]
# Every non-ASCII code point of any emoji sequence twitter-text knows (no sequence is ASCII
# alone: a keycap needs U+20E3): a word without one holds no emoji, and weighs its characters.
_EMOJI = re.compile("[" + "".join(sorted({re.escape(c) for e in emoji_list for c in e.emoji
                                             if ord(c) > 0x7F})) + "]")


@lru_cache(maxsize=4096)
def _weight(ch: str) -> int:
    """A character's weight, as twitter-text's get_character_weight gives it."""
    cp = ord(ch)
    for r in _OPTIONS["ranges"]:
        if r["start"] <= cp <= r["end"]:
            return r["weight"] // _SCALE
    return _OPTIONS["default_weight"] // _SCALE


class X:
    name: ClassVar[str] = "x"
    default_limit: ClassVar[int] = 280

    def count(self, text: str) -> int:
        """twitter-text v3 weighted length (CJK and emoji weigh 2, URLs 23)."""
        return parse_tweet(text).weightedLength

    def prefix_counts(self, text: str, stop: int) -> list[int | None]:
        """Word by word (no URL, emoji or normalization crosses a space): a word's characters
        weigh as twitter-text weighs them; a word that may hold a URL (a start of it may be one
        where the whole is not: "example.co") is known at its end only, with 23 a URL; a word
        with an emoji or not in NFC is counted whole by twitter-text."""
        out: list[int | None] = [0]
        total, start = 0, 0
        while start <= len(text) and total <= stop:
            end = text.find(" ", start)
            end = len(text) if end < 0 else end
            word = text[start:end]
            if word.isascii() and "." not in word:
                out.extend(range(total + 1, total + len(word) + 1))
                total += len(word)
            elif "." in word or (not word.isascii() and (
                    _EMOJI.search(word) or not unicodedata.is_normalized("NFC", word))):
                # Read after its space, as in the text: what precedes a URL decides where it starts.
                spaced = " " + word if start else word
                weigh = _weigh if "." in word and not _EMOJI.search(word) else self.count
                total += weigh(spaced) - (1 if start else 0)
                out += [None] * (len(word) - 1) + [total]
            else:
                out.extend(total + w for w in _running_weights(word))
                total = out[-1]
            if end < len(text):
                total += 1                      # the space
                out.append(total)
            start = end + 1
        return out

    def link_text(self, url: str) -> str:
        return url


def _weigh(word: str) -> int:
    """A word's weighted length: each URL in it 23, its other characters their weight (no emoji)."""
    word = unicodedata.normalize("NFC", word)
    total, last = 0, 0
    for start, end in (u["indices"] for u in extract_urls_with_indices(word)):
        total += sum(map(_weight, word[last:start])) + _URL
        last = end
    return total + sum(map(_weight, word[last:]))


def _running_weights(word: str) -> list[int]:
    """The running weighted length of a word without URL or emoji, in NFC."""
    out, total = [], 0
    for ch in word:
        total += _weight(ch)
        out.append(total)
    return out
