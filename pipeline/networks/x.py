"""X (Twitter): twitter-text weighted length; every URL counts 23."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any, ClassVar

_LINE_ENDINGS = re.compile(r"\r\n|\r|\n")    # as parse_tweet converts them


@dataclass(frozen=True, kw_only=True)
class _TwitterText:
    """What counting takes from twitter-text."""

    options: dict[str, Any]           # its v3 configuration (weights, scale, URL length)
    url_length: int
    emoji: re.Pattern[str]            # every emoji sequence it knows, one alternation
    emoji_starts: frozenset[str]      # the first character of each sequence
    emoji_chars: frozenset[str]       # every non-ASCII code point of any sequence


@cache
def _twitter_text() -> _TwitterText:
    """twitter-text, imported on the first count: its import builds the emoji regex (a third of
    a second), which loading the config (NETWORKS) and most commands never need."""
    from twitter_text.config import config
    from twitter_text.regexp.emoji import emoji, emoji_list

    options = config["defaults"]
    # Every non-ASCII code point of any emoji sequence twitter-text knows (no sequence is ASCII
    # alone: a keycap needs U+20E3): a text without one holds no emoji. A set, not a regex class:
    # a search with a class of 1,400 code points costs 2 ms on a post's text, the set 15 µs.
    return _TwitterText(options=options, url_length=options["transformed_url_length"], emoji=emoji,
                        emoji_starts=frozenset(chr(int(e.codepoint.split()[0], 16)) for e in emoji_list),
                        emoji_chars=frozenset(c for e in emoji_list for c in e.emoji if ord(c) > 0x7F))


def _urls(text: str) -> list[dict[str, Any]]:
    """twitter-text's URL entities of `text`, each with its `indices`."""
    from twitter_text import extract_urls_with_indices

    return extract_urls_with_indices(text)


@lru_cache(maxsize=4096)
def _weight(ch: str) -> int:
    """A character's weight, as twitter-text's get_character_weight gives it."""
    options = _twitter_text().options
    cp = ord(ch)
    for r in options["ranges"]:
        if r["start"] <= cp <= r["end"]:
            return r["weight"] // options["scale"]
    return options["default_weight"] // options["scale"]


class X:
    name: ClassVar[str] = "x"
    default_limit: ClassVar[int] = 280

    def count(self, text: str) -> int:
        """twitter-text v3 weighted length (CJK and emoji weigh 2, URLs 23), summed as
        parse_tweet sums it. parse_tweet runs its emoji regex (every emoji sequence, thousands of
        alternatives) at every position of the text, two thirds of its time; here it is tried only
        where an emoji can start, which finds the same matches (tests hold this to parse_tweet on
        its conformance suite and the corpus)."""
        tt = _twitter_text()
        normalized = _LINE_ENDINGS.sub("\n", unicodedata.normalize("NFC", text))
        urls = {u["indices"][0]: u["indices"][1] for u in _urls(normalized)}
        emojis = dict(_emoji_spans(normalized)) if not tt.emoji_chars.isdisjoint(normalized) else {}
        emoji_weight = tt.options["default_weight"] // tt.options["scale"]
        total, index = 0, 0
        while index < len(normalized):
            if index in urls:
                total, index = total + tt.url_length, urls[index]
            elif index in emojis:
                total, index = total + emoji_weight, emojis[index]
            else:
                total, index = total + _weight(normalized[index]), index + 1
        return total

    def prefix_counts(self, text: str, stop: int) -> list[int | None]:
        """Word by word (no URL, emoji or normalization crosses a space): a word's characters
        weigh as twitter-text weighs them; a word that may hold a URL (a start of it may be one
        where the whole is not: "example.co") is known at its end only, with 23 a URL; a word
        with an emoji or not in NFC is counted whole by twitter-text."""
        emoji_chars = _twitter_text().emoji_chars
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
                    not emoji_chars.isdisjoint(word) or not unicodedata.is_normalized("NFC", word))):
                # Read after its space, as in the text: what precedes a URL decides where it starts.
                spaced = " " + word if start else word
                weigh = _weigh if "." in word and emoji_chars.isdisjoint(word) else self.count
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


def _emoji_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each emoji twitter-text's regex finds, scanning as `finditer` does but
    trying it only at characters some emoji sequence starts with (elsewhere it cannot match)."""
    tt = _twitter_text()
    spans, index = [], 0
    while index < len(text):
        found = tt.emoji.match(text, index) if text[index] in tt.emoji_starts else None
        if found and found.end() > index:
            spans.append((index, found.end()))
            index = found.end()
        else:
            index += 1
    return spans


def _weigh(word: str) -> int:
    """A word's weighted length: each URL in it 23, its other characters their weight (no emoji)."""
    word = unicodedata.normalize("NFC", word)
    total, last = 0, 0
    for start, end in (u["indices"] for u in _urls(word)):
        total += sum(map(_weight, word[last:start])) + _twitter_text().url_length
        last = end
    return total + sum(map(_weight, word[last:]))


def _running_weights(word: str) -> list[int]:
    """The running weighted length of a word without URL or emoji, in NFC."""
    out, total = [], 0
    for ch in word:
        total += _weight(ch)
        out.append(total)
    return out
