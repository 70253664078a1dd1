"""What the HTTP-based channels share: their common settings, a JSON POST whose transport failures
become the right ChannelError, reading a rate limit's reset from the response headers, and turning
an HTTP status into the right ChannelError."""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from pydantic import Field

from pipeline.channels.base import ChannelSettings
from pipeline.errors import ChannelError

# Failures that prove nothing reached the server: the connection was never opened.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# Failures after the request (or part of it) went out: it may have been acted on.
MAYBE_SENT = (httpx.ReadTimeout, httpx.WriteTimeout, httpx.ReadError, httpx.WriteError,
              httpx.RemoteProtocolError)
RESET_HEADERS = ("retry-after", "x-rate-limit-reset", "x-ratelimit-reset", "ratelimit-reset")


class HttpSettings(ChannelSettings):
    """Settings every HTTP channel has besides its own."""

    timeout: float = Field(default=30, gt=0)        # seconds for one request
    retries: int = Field(default=3, ge=0)           # for 5xx replies and network errors
    retry_wait: float = Field(default=2.0, ge=0)    # first backoff, seconds; doubles, with jitter
    max_wait: float = Field(default=60, ge=0)       # wait out a rate limit resetting within this;
                                                    # a later reset leaves the delivery pending


def reset_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds until a rate limit resets, from whichever header the network sends: Retry-After
    (seconds or an HTTP date), X's x-rate-limit-reset (epoch seconds), Mastodon's X-RateLimit-Reset
    (an ISO 8601 time), or RateLimit-Reset (epoch seconds or a delay)."""
    now = time.time() if now is None else now
    lower = {k.lower(): v for k, v in headers.items()}
    for name in RESET_HEADERS:
        value = (lower.get(name) or "").strip()
        if not value:
            continue
        seconds = _parse_reset(value, now, delay=name == "retry-after")
        if seconds is not None:
            return max(0.0, seconds)
    return None


def _parse_reset(value: str, now: float, *, delay: bool) -> float | None:
    try:
        number = float(value)
    except ValueError:
        number = None
    if number is not None:
        # A small number is a delay; a large one an epoch time (RateLimit-Reset is used both ways).
        return number if delay or number < 10**9 else number - now
    for parse in (lambda v: datetime.fromisoformat(v.replace("Z", "+00:00")), parsedate_to_datetime):
        try:
            return parse(value).timestamp() - now
        except (ValueError, TypeError):
            continue
    return None


def http_error(status: int, headers: Mapping[str, str], detail: str, *, service: str,
               credential: str = "the token") -> ChannelError:
    """The ChannelError for an HTTP error reply: 429 waits for the reset, 5xx is retried,
    401/403 fail with what to do, other 4xx fail with the service's own message."""
    detail = " ".join(str(detail).split())[:300]
    if status == 429:
        wait = reset_after(headers)
        return ChannelError(f"{service}: rate limited (429)"
                            + (f"; the limit resets in {wait:.0f} s" if wait is not None else ""),
                            retryable=True, retry_after=wait if wait is not None else 60.0)
    if status >= 500:
        return ChannelError(f"{service}: server error {status}: {detail}", retryable=True)
    if status == 401:
        return ChannelError(f"{service}: 401 unauthorized: {credential} is invalid or expired; "
                            f"create a new one and update the environment ({detail})", retryable=False)
    if status == 403:
        return ChannelError(f"{service}: 403 forbidden: {credential} lacks the permission to post "
                            f"(write access), or the request was refused ({detail})", retryable=False)
    return ChannelError(f"{service}: {status}: {detail}", retryable=False)


def sent_but_unanswered(service: str, exc: BaseException, *, idempotent: bool) -> ChannelError:
    """A timeout after the request went out: it may have been posted. An idempotent channel
    (same key, same result) retries; any other is marked unknown, never retried blindly."""
    if idempotent:
        return ChannelError(f"{service}: no answer ({type(exc).__name__}); retrying with the same "
                            "idempotency key", retryable=True)
    return ChannelError(f"{service}: no answer after the request was sent ({type(exc).__name__}); "
                        "it may have been posted: check, then `pipeline retry --unknown`",
                        retryable=False, unknown=True)


def post_json(client: httpx.Client, url: str, payload: object, *, service: str, shown: str,
              idempotent: bool, check: str) -> httpx.Response:
    """`post` with `payload` as the JSON body."""
    return post(client, url, service=service, shown=shown, idempotent=idempotent, check=check, json=payload)


def post(client: httpx.Client, url: str, *, service: str, shown: str, idempotent: bool, check: str,
         **request: Any) -> httpx.Response:
    """POST (`request`: httpx's json=, data=, files=...) and return the response, whatever its
    status. A connection never opened is retryable; no answer once the request went out is
    `sent_but_unanswered`; any other transport failure (a bad URL...) is permanent, naming `shown`
    (the URL as it may be shown: no secret) and `check` (the setting to look at)."""
    try:
        return client.post(url, **request)
    except NOT_SENT as exc:
        raise ChannelError(f"{service}: cannot connect to {shown} ({type(exc).__name__})",
                           retryable=True) from None
    except MAYBE_SENT as exc:
        raise sent_but_unanswered(service, exc, idempotent=idempotent) from None
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise ChannelError(f"{service}: cannot send to {shown} ({type(exc).__name__}); check {check}",
                           retryable=False) from None
