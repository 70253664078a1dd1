"""Reading the text files a user writes (config.yaml, posts, subscriber CSVs): UTF-8, a leading
byte-order mark dropped, and when a file is not UTF-8, the line and byte that show it."""

from __future__ import annotations

from pathlib import Path


class NotUtf8(ValueError):
    """The file is not UTF-8; the message names the first bad byte and its line."""

    def __init__(self, line: int, byte: int) -> None:
        super().__init__(f"line {line}: not UTF-8 text (byte 0x{byte:02X})")


def read_utf8(path: Path) -> str:
    """The file's text. Raises FileNotFoundError (and other OSErrors) or NotUtf8."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NotUtf8(raw[: exc.start].count(b"\n") + 1, raw[exc.start]) from None
    return text.removeprefix("\ufeff")
