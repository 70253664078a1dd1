"""Validators the config models and the intake share (config.py, feed_settings.py, the channels'
settings, posts, feeds): absolute http(s) URLs, and dates in a sane range."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from urllib.parse import urlsplit

from pydantic import AfterValidator


def http_url(example: str, *, base: bool = True) -> AfterValidator:
    """For `Annotated[str, http_url("https://dev.to")]`: the value must be an absolute http(s) URL
    (the error shows `example`). `base`: a trailing slash is removed, for joining paths to it."""
    def check(value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"must be an absolute http(s) URL, e.g. {example}")
        return value.rstrip("/") if base else value

    return AfterValidator(check)


# Dates a post, a feed entry, a schedule or a stored row may carry. Outside this range date
# arithmetic overflows (year 1 minus a week) or a typo sends nothing for centuries.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)


RANGE = f"{EARLIEST.year}-{LATEST.year}"
# The year a date-time is written with: how a year `datetime` cannot hold (0, 99999) is told apart
# from a date that is merely malformed.
_WRITTEN_YEAR = re.compile(r"\s*([+-]?\d+)-\d{1,2}-\d{1,2}(?:$|[T ])")


def date_in_range(when: datetime | date) -> bool:
    """True if `when` lies between 1970 and 2200 (a naive date-time or a date counts as UTC)."""
    if not isinstance(when, datetime):
        when = datetime(when.year, when.month, when.day)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    try:
        return EARLIEST <= when < LATEST
    except OverflowError:   # an offset that takes year 1 below year 1
        return False


def out_of_range(when: datetime | date) -> str:
    """The one-line reason a date is refused, for messages that name its source."""
    return f"{when.isoformat()} is outside 1970-2200"


def year_out_of_range(text: str) -> bool:
    """True if `text` is written as a date (YYYY-MM-DD...) whose year is outside 1970-2200, even one
    `datetime` cannot hold (0000, 99999): such a value is out of range rather than malformed."""
    match = _WRITTEN_YEAR.match(text)
    return match is not None and not EARLIEST.year <= int(match.group(1)) < LATEST.year


def is_http_url(value: str) -> bool:
    """True if `value` is an absolute http(s) URL with a host. Leading C0 controls and spaces and
    embedded tabs and newlines count as browsers count them (ignored), so ` JaVaScRiPt:` and
    `java\tscript:` are seen for what they are."""
    parts = urlsplit(value)
    return parts.scheme.lower() in ("http", "https") and bool(parts.netloc)


def email_address(*, named: bool = False) -> AfterValidator:
    """For `Annotated[str, email_address()]`: exactly one valid address (`named`: a display name
    may come with it, as in `Shop <news@shop.example>`). Line breaks, control characters and a
    second address are refused: the value becomes a header."""
    def check(value: str) -> str:
        # Imported on the first address: email_validator compiles its grammar on import (tens of
        # milliseconds), which the many modules that import this one for URLs and dates never use.
        from email.utils import getaddresses

        from email_validator import EmailNotValidError, validate_email

        if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
            raise ValueError("must be a single line (no line breaks or control characters)")
        pairs = getaddresses([value])
        if len(pairs) != 1 or not pairs[0][1] or (pairs[0][0] and not named):
            example = "News <news@example.com>" if named else "news@example.com"
            raise ValueError(f"must be exactly one address, e.g. {example}")
        try:
            validate_email(pairs[0][1], check_deliverability=False)
        except EmailNotValidError as exc:
            raise ValueError(f"is not a valid address ({exc})") from None
        return value

    return AfterValidator(check)
