"""The cheap per-recipient pass over a compiled edition.

MJML runs once per edition and leaves `{{ recipient.FIELD }}` placeholders in the HTML and text.
A `Fill` splits a part at its placeholders once; filling it for a recipient is a join.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

from markupsafe import Markup

FIELDS = ("name", "email", "unsubscribe_url", "manage_url")
PLACEHOLDER = re.compile(r"\{\{ recipient\.(" + "|".join(FIELDS) + r") \}\}")


class Placeholders:
    """What templates see as `recipient`: each field renders as its own placeholder."""

    def __getattr__(self, field: str) -> Markup:
        if field not in FIELDS:
            raise AttributeError(f"recipient has no field {field!r}; known: {', '.join(FIELDS)}")
        return Markup(f"{{{{ recipient.{field} }}}}")


def neutralize(text: str) -> str:
    """Break up anything in post content that looks like a placeholder (a zero-width space between
    the braces), so a post can never make the per-recipient pass insert someone's data."""
    return PLACEHOLDER.sub(lambda m: "{\u200b" + m.group(0)[1:], text)


@dataclass(frozen=True, kw_only=True)
class Fill:
    """A part split at its placeholders: literal pieces and the fields between them."""

    pieces: tuple[str, ...]
    fields: tuple[str, ...]
    escape: bool

    @classmethod
    def of(cls, template: str, *, escape: bool) -> Fill:
        parts = PLACEHOLDER.split(template)
        return cls(pieces=tuple(parts[0::2]), fields=tuple(parts[1::2]), escape=escape)

    def __call__(self, values: dict[str, str]) -> str:
        out = [self.pieces[0]]
        for field, piece in zip(self.fields, self.pieces[1:], strict=True):
            value = values[field]
            out += [html.escape(value) if self.escape else value, piece]
        return "".join(out)
