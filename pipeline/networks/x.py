"""X (Twitter): twitter-text weighted length; every URL counts 23."""

from __future__ import annotations

from typing import ClassVar

from twitter_text import parse_tweet


class X:
    name: ClassVar[str] = "x"
    default_limit: ClassVar[int] = 280

    def count(self, text: str) -> int:
        """twitter-text v3 weighted length (CJK and emoji weigh 2, URLs 23)."""
        return parse_tweet(text).weightedLength

    def link_text(self, url: str) -> str:
        return url
