"""Mastodon: grapheme clusters, protocol URLs count 23, remote mentions count their user part."""

from __future__ import annotations

import re
from typing import ClassVar

from pipeline.networks.base import graphemes, running_graphemes
from pipeline.networks.twitter_urls import extract_urls_with_indices

URL_PLACEHOLDER = "x" * 23
# Mastodon's StatusLengthValidator counts `@user@domain` as `@user`.
_REMOTE_MENTION = re.compile(r"(?<![\w/])@(\w+)@[\w.-]+\w", re.UNICODE)


class Mastodon:
    name: ClassVar[str] = "mastodon"
    default_limit: ClassVar[int] = 500

    def count(self, text: str) -> int:
        """Length as Mastodon's StatusLengthValidator computes it."""
        return graphemes(_REMOTE_MENTION.sub(r"@\1", _urls_as_placeholders(text)))

    def prefix_counts(self, text: str, stop: int) -> list[int | None]:
        # A word holding a URL or a remote mention counts as a whole; no word spans a space.
        units, pos = {}, 0
        if "://" in text or "@" in text:
            for word in text.split(" "):
                if "://" in word or "@" in word:
                    units[pos] = (pos + len(word), self.count(word))
                pos += len(word) + 1
        return running_graphemes(text, stop, units)

    def link_text(self, url: str) -> str:
        return url


def _urls_as_placeholders(text: str) -> str:
    out, last = [], 0
    for entity in extract_urls_with_indices(text, extract_urls_without_protocol=False):
        start, end = entity["indices"]
        out += [text[last:start], URL_PLACEHOLDER]
        last = end
    out.append(text[last:])
    return "".join(out)
