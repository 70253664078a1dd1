"""LinkedIn: 3,000 UTF-16 code units of commentary; a link counts in full.

A post's `commentary` takes at most 3,000 characters. LinkedIn does not say in what unit; its
composer is a browser text field, whose length is in UTF-16 code units, and Buffer, which validates
LinkedIn posts before sending them, counts UTF-16 code units too
(developers.buffer.com/guides/character-limits): an emoji beyond the Basic Multilingual Plane or a
"bold" mathematical letter counts two, a combining mark one of its own. Links are not shortened
in the count: a URL counts every character. The count is of the text as readers see it: the
backslashes that the channel adds to escape LinkedIn's "little" format
(learn.microsoft.com/linkedin/marketing/community-management/shares/little-text-format) are markup,
as are the `{hashtag|\\#|…}` templates that stand for `#…` (LinkedIn does not document that they
count; this is the reading under which what the preview shows is what is limited).
"""

from __future__ import annotations

from typing import ClassVar

from pipeline.networks.utf16 import Utf16Network


class LinkedIn(Utf16Network):
    name: ClassVar[str] = "linkedin"
    default_limit: ClassVar[int] = 3000
