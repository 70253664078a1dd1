"""Template leftovers and MDX in a post's body, turned into plain Markdown.

See `clean_body`.
"""

from __future__ import annotations


def clean_body(body: str, *, first_line: int = 1, mdx: bool = False) -> tuple[str, list[str]]:
    """The body as Markdown a reader would see, and one warning per construct dropped
    ("line N: ..."; `first_line`: the file line the body starts on)."""
    return body, []
