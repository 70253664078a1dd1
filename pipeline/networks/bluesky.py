"""Bluesky: grapheme clusters of the text as shown; links are facets, so their text may be short."""

from __future__ import annotations

from typing import ClassVar
from urllib.parse import urlsplit

from pipeline.networks.base import graphemes, running_graphemes

SHOWN_PATH = 15   # the official app shows at most this much of a link's path, then "..."


class Bluesky:
    name: ClassVar[str] = "bluesky"
    default_limit: ClassVar[int] = 300

    def count(self, text: str) -> int:
        return graphemes(text)

    def prefix_counts(self, text: str, stop: int) -> list[int | None]:
        return running_graphemes(text, stop)

    def link_text(self, url: str) -> str:
        """The link as the Bluesky app shows it: host and the start of the path, no scheme.
        The facet carries the full URL (with its query), so nothing is lost."""
        parts = urlsplit(url)
        host = parts.netloc.removeprefix("www.")
        path = parts.path if parts.path != "/" else ""
        if len(path) > SHOWN_PATH:
            path = path[: SHOWN_PATH - 2] + "..."
        return host + path
