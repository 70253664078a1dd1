"""Facebook Pages: 63,206 UTF-16 code units of message; a link counts in full.

63,206 characters is the longest `message` of a Page post Facebook accepts (its composer's limit).
Facebook does not say in what unit; its composer is a browser text field, whose length is in UTF-16
code units, and Buffer counts Facebook posts in UTF-16 code units
(developers.buffer.com/guides/character-limits, where Buffer applies a stricter 5,000 of its own):
an emoji beyond the Basic Multilingual Plane counts two, a combining mark one of its own. A URL
in the message counts every character;
the post's `link` parameter, which makes the preview card, is not part of the message.
"""

from __future__ import annotations

from typing import ClassVar

from pipeline.networks.utf16 import Utf16Network


class Facebook(Utf16Network):
    name: ClassVar[str] = "facebook"
    default_limit: ClassVar[int] = 63206
