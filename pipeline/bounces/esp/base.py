"""The `Provider` protocol every ESP webhook module follows, what it is given and gives back, the
errors it raises (each with the HTTP status it answers), and helpers the providers share."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Protocol

from pipeline.errors import PipelineError
from pipeline.store.events import Event

# The longest address RFC 5321 allows a path to carry; anything longer in a payload is no address.
MAX_ADDRESS = 320


@dataclass(frozen=True, kw_only=True)
class Incoming:
    """One webhook request as it arrived: the raw body (signatures cover its exact bytes), the
    headers (case-insensitive, e.g. starlette's `Headers`) and when it was received."""

    body: bytes
    headers: Mapping[str, str]
    received_at: datetime


@dataclass(frozen=True, kw_only=True)
class Received:
    """What a genuine request says: the bounces, complaints and unsubscribes in it, how many of its
    other entries were left alone (deliveries, opens, deferrals, ...), and a note on anything else
    it did (an SNS subscription confirmed)."""

    events: tuple[Event, ...] = ()
    ignored: int = 0
    note: str = ""


class WebhookError(PipelineError):
    """A request that is refused; nothing was recorded. `status` and `headers` are the answer's;
    the message is one line, safe to send back and to log (no secret, no address)."""

    status: ClassVar[int] = 400

    def __init__(self, message: str, *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.headers = dict(headers or {})


class Malformed(WebhookError):
    """Not the provider's format: not JSON, a required field missing or of the wrong type."""


class Stale(WebhookError):
    """Signed too long ago (or in the future), or a signature token seen before: a replay."""


class Unauthorized(WebhookError):
    """Missing or wrong credentials (HTTP basic auth); the answer asks for them."""

    status = 401


class Forbidden(WebhookError):
    """A signature that does not verify, or a signer or topic that is not accepted."""

    status = 403


class Unavailable(WebhookError):
    """The request could not be checked for now (the signing certificate could not be fetched);
    the provider retries on this answer."""

    status = 502


class Provider(Protocol):
    """One ESP's webhook: built from its `bounces.webhooks.<name>` settings (`where` names that
    key in the config file, for errors), it checks that a request comes from the provider and reads
    the events in it."""

    name: ClassVar[str]

    def __init__(self, settings: Any, *, where: str) -> None:
        """Raises ConfigError (naming `where`) when the settings cannot work, e.g. a bad key."""
        ...

    async def receive(self, request: Incoming) -> Received:
        """The events of a genuine request. Raises a WebhookError subclass otherwise; it never
        changes anything itself (the caller records the events)."""
        ...


def json_body(body: bytes) -> Any:
    """The JSON document of a body; Malformed with the parser's reason if it is none."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Malformed("the body is not UTF-8 text") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise Malformed(f"the body is not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except RecursionError:
        raise Malformed("the body is not JSON (nested too deeply)") from None


def mapping(value: Any, what: str) -> dict[str, Any]:
    """`value` if it is a JSON object, else Malformed naming `what`."""
    if not isinstance(value, dict):
        raise Malformed(f"{what} must be a JSON object")
    return value


def text(value: Any, what: str) -> str:
    """`value` if it is a non-empty string, else Malformed naming `what`."""
    if not isinstance(value, str) or not value:
        raise Malformed(f"{what} must be a non-empty string")
    return value


def address(value: Any) -> str | None:
    """An address from a payload (trimmed, brackets dropped), or None if it is none."""
    if not isinstance(value, str):
        return None
    value = value.strip().strip("<>").strip()
    if not 3 <= len(value) <= MAX_ADDRESS or "@" not in value.strip("@") or any(c.isspace() for c in value):
        return None
    return value


def domain(email: str) -> str:
    """The domain of an address, what logs show instead of the address."""
    return email.rpartition("@")[2].lower()


def edition_from_feedback_id(value: Any) -> str | None:
    """The edition key of a `Feedback-ID: <edition>:<list>:<site>` header value (the edition key
    may itself hold colons: the last two fields are the list and the site)."""
    if not isinstance(value, str):
        return None
    parts = value.strip().rsplit(":", 2)
    return parts[0] if len(parts) == 3 and parts[0] else None


def edition_from_metadata(metadata: Any) -> str | None:
    """The `edition` entry of the metadata a provider echoes back (Postmark's `Metadata`,
    Mailgun's `user-variables`, SendGrid's custom arguments), if it is a non-empty string."""
    if isinstance(metadata, dict):
        value = metadata.get("edition")
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def stable_id(source: str, payload: Any) -> str:
    """An event id for a payload without one of its own: the same for the same payload (a
    provider's retry), different for any other."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return f"{source}:sha256:{hashlib.sha256(canonical.encode()).hexdigest()[:40]}"


def parse_time(value: Any) -> datetime | None:
    """A time from epoch seconds (a number or a numeric string) or ISO 8601
    (`2016-01-27T14:59:44.101Z`, a naive one taken as UTC); None if `value` is neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float) or (isinstance(value, str) and _numeric(value)):
        seconds = float(value)
        if math.isfinite(seconds) and 0 < seconds < 32503680000:          # before the year 3000
            return datetime.fromtimestamp(seconds, UTC)
        return None
    if isinstance(value, str):
        try:
            at = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
        return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    return None


def event_time(value: Any, now: datetime) -> datetime | None:
    """When an event happened (see `parse_time`), never later than `now`: a sender's clock may
    run ahead, and the soft-bounce window counts back from the newest event."""
    at = parse_time(value)
    return min(at, now) if at else None


def string(value: Any) -> str:
    """`value` if it is a string, else "" (a payload's optional text fields)."""
    return value if isinstance(value, str) else ""


def _numeric(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def check_fresh(signed_at: datetime, now: datetime, *, max_age: timedelta, what: str) -> None:
    """Stale unless `signed_at` lies within `max_age` before `now` (or up to 5 minutes after it,
    for clocks that run ahead)."""
    if signed_at < now - max_age:
        raise Stale(f"{what} is more than {_span(max_age)} old: refused as a possible replay")
    if signed_at > now + timedelta(minutes=5):
        raise Stale(f"{what} is in the future: refused")


def _span(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    return f"{minutes // 60} hour{'s' * (minutes != 60)}" if minutes % 60 == 0 else f"{minutes} minutes"


@dataclass(kw_only=True)
class SeenTokens:
    """Tokens seen within a window (Mailgun's signature tokens), to refuse a request replayed
    inside the window its timestamp allows. Kept in the process: the window is short, and a
    restart costs at most one replay of an event that is recorded once anyway."""

    window: timedelta
    limit: int = 100_000
    _seen: dict[str, datetime] = field(default_factory=dict)

    def first_time(self, token: str, now: datetime) -> bool:
        """True (and remember it) if `token` was not seen within the window before `now`."""
        for old in [t for t, at in self._seen.items() if at < now - self.window]:
            del self._seen[old]
        if token in self._seen:
            return False
        if len(self._seen) >= self.limit:       # a flood of genuine requests: forget the oldest
            del self._seen[min(self._seen, key=self._seen.__getitem__)]
        self._seen[token] = now
        return True
