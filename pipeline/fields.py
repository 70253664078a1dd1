"""Validators the config models share (config.py, feed_settings.py, the channels' settings)."""

from __future__ import annotations

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
