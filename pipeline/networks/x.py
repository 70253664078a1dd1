"""X (Twitter): twitter-text weighted length; every URL counts 23."""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import ClassVar

from pipeline.networks.twitter_data import OPTIONS
from pipeline.networks.twitter_emoji import emoji_spans, may_hold_emoji
from pipeline.networks.twitter_urls import extract_urls_with_indices

_LINE_ENDINGS = re.compile(r"\r\n|\r|\n")    # as parse_tweet converts them
_URL_WEIGHT: int = OPTIONS["transformed_url_length"]
_EMOJI_WEIGHT: int = OPTIONS["default_weight"] // OPTIONS["scale"]


def _url_ends(text: str) -> dict[int, int]:
    """start -> end of each URL twitter-text finds in `text`, the end as parse_tweet steps over
    it: by the length of its `url` from its start."""
    return {u["indices"][0]: u["indices"][0] + len(u["url"]) for u in extract_urls_with_indices(text)}


@lru_cache(maxsize=4096)
def _weight(ch: str) -> int:
    """A character's weight, as twitter-text's get_character_weight gives it."""
    cp = ord(ch)
    for r in OPTIONS["ranges"]:
        if r["start"] <= cp <= r["end"]:
            return r["weight"] // OPTIONS["scale"]
    return OPTIONS["default_weight"] // OPTIONS["scale"]


class X:
    name: ClassVar[str] = "x"
    default_limit: ClassVar[int] = 280

    def count(self, text: str) -> int:
        """twitter-text v3 weighted length (CJK and emoji weigh 2, URLs 23), summed as
        parse_tweet sums it, with its URLs and emoji found as twitter-text finds them (tests hold
        this to parse_tweet on its conformance suite and the corpora) but without importing it."""
        normalized = _LINE_ENDINGS.sub("\n", unicodedata.normalize("NFC", text))
        urls = _url_ends(normalized)
        emojis = dict(emoji_spans(normalized)) if may_hold_emoji(normalized) else {}
        total, index = 0, 0
        while index < len(normalized):
            if index in urls:
                total, index = total + _URL_WEIGHT, urls[index]
            elif index in emojis:
                total, index = total + _EMOJI_WEIGHT, emojis[index]
            else:
                total, index = total + _weight(normalized[index]), index + 1
        return total

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
                    may_hold_emoji(word) or not unicodedata.is_normalized("NFC", word))):
                # Read after its space, as in the text: what precedes a URL decides where it starts.
                spaced = " " + word if start else word
                weigh = _weigh if "." in word and not may_hold_emoji(word) else self.count
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
    for start, end in sorted(_url_ends(word).items()):
        total += sum(map(_weight, word[last:start])) + _URL_WEIGHT
        last = end
    return total + sum(map(_weight, word[last:]))


def _running_weights(word: str) -> list[int]:
    """The running weighted length of a word without URL or emoji, in NFC."""
    out, total = [], 0
    for ch in word:
        total += _weight(ch)
        out.append(total)
    return out
