"""Validators the config models and the intake share (config.py, feed_settings.py, the channels'
settings, posts, feeds): absolute http(s) URLs, and dates in a sane range."""

from __future__ import annotations

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
