"""Telegram: 4,096 UTF-16 code units of message text, 1,024 of a photo's caption, after entity
parsing; a link counts in full.

The Bot API (core.telegram.org/bots/api#sendmessage) takes `text` of "1-4096 characters after
entities parsing" and `caption` (#sendphoto) of "0-1024 characters after entities parsing": the
HTML tags of `parse_mode=HTML` do not count, the text they wrap does, with `&lt;`, `&gt;` and
`&amp;` one character each. The characters are counted here in UTF-16 code units, the unit in
which the Bot API measures text (`MessageEntity.offset` and `length`, #messageentity) and which
never counts fewer than code points: an emoji beyond the Basic Multilingual Plane counts two, a
combining mark one of its own. So the snippet, the plain text, is what is counted; the channel
writes it as HTML.
"""

from __future__ import annotations

from typing import ClassVar

from pipeline.networks.utf16 import Utf16Network

CAPTION_LIMIT = 1024     # a photo's caption (sendPhoto), in the same units


class Telegram(Utf16Network):
    name: ClassVar[str] = "telegram"
    default_limit: ClassVar[int] = 4096
