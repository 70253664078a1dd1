"""Mastodon: posts each snippet as a status (`POST /api/v1/statuses`) through Mastodon.py, with a
user access token (scope `write:statuses`).

Every status carries an `Idempotency-Key` derived from the delivery's key: Mastodon answers a
repeated request with the same key with the status it already created, so a resend is harmless
(a timeout after sending is simply retried). A thread's parts 2..n reply to the part before them.

The instance's own character limit is read once (`GET /api/v2/instance`, else v1); a snippet
longer than it fails before anything is posted, naming the length and the limit. A post's image
is NOT attached: Mastodon shows the link's preview card, which carries the page's image.

Error rules: a 429 waits for `X-RateLimit-Reset` (or leaves the delivery pending when that is
beyond `max_wait`); 5xx, network errors and timeouts are retried; 401/403 fail with what to fix.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal

import requests
from mastodon import Mastodon as MastodonApi
from mastodon import (
    MastodonAPIError,
    MastodonError,
    MastodonNetworkError,
    MastodonNotFoundError,
    MastodonRatelimitError,
)
from pydantic import Field, SecretStr, field_validator
from urllib3.exceptions import ProtocolError

from pipeline.channels.http import HttpSettings, http_error, sent_but_unanswered
from pipeline.config import Config
from pipeline.errors import ChannelError
from pipeline.fields import http_url
from pipeline.models import Delivery, Receipt

log = logging.getLogger(__name__)

SERVICE = "mastodon"
DEFAULT_LIMIT = 500           # Mastodon's own default, when neither the instance nor config says
CREDENTIAL = "the access token (access_token; it needs the write:statuses scope)"
KEY_LENGTH = 32               # hex characters of the Idempotency-Key (128 bits)
# Errors reading a reply that had begun: the request was received.
_BROKEN_REPLY = requests.exceptions.ChunkedEncodingError | requests.exceptions.ContentDecodingError


class MastodonSettings(HttpSettings):
    """`channels.<name>:` keys of a `type: mastodon` channel."""

    base_url: Annotated[str, http_url("https://mastodon.social")] = "https://mastodon.social"
    access_token: SecretStr
    visibility: Literal["public", "unlisted", "private", "direct"] = "public"
    language: str | None = None                 # ISO 639-1; default: from site.locale
    limit: int | None = Field(default=None, gt=0)   # characters, if the instance does not say

    @field_validator("language")
    @classmethod
    def _iso(cls, v: str | None) -> str | None:
        if v is not None and not (v.isascii() and v.isalpha() and len(v) in (2, 3)):
            raise ValueError("must be an ISO 639-1 language code such as en, fr, de")
        return v.lower() if v else v


class Mastodon:
    """Posts snippets as Mastodon statuses with Mastodon.py (`status_post`), idempotently.

    Images are skipped: the status links the post, and Mastodon's preview card shows its image."""

    type: ClassVar[str] = "mastodon"
    kinds: ClassVar[frozenset[str]] = frozenset({"social"})
    crash_rule: ClassVar[str] = "resend"
    idempotent: ClassVar[bool] = True
    network: ClassVar[str] = "mastodon"
    Settings = MastodonSettings

    def __init__(self, *, name: str, settings: MastodonSettings, config: Config) -> None:
        self.name = name
        self.settings = settings
        self.concurrency = 1
        self.language = settings.language or _language(config.site.locale)
        self._api: MastodonApi | None = None
        self._limit: int | None = None
        self._lock = threading.Lock()

    def send(self, delivery: Delivery) -> Receipt:
        """Post one snippet (a thread part replies to the previous part); returns the status's id
        and URL. Raises ChannelError."""
        snippet = delivery.snippet
        assert snippet is not None, "a mastodon delivery carries a snippet"
        api = self._client()
        limit = self._instance_limit(api)
        if snippet.length > limit:
            raise ChannelError(
                f"{SERVICE}: the text is {snippet.length} characters; {self.settings.base_url} allows "
                f"at most {limit}: set networks.mastodon.limit to {limit} (or less), then "
                "`pipeline retry --failed`",
                retryable=False)
        api.ratelimit_reset = None     # so that a 429's reset is this reply's, not an older one's
        try:
            status = api.status_post(
                snippet.text, in_reply_to_id=delivery.reply_to_remote if delivery.part > 1 else None,
                visibility=self.settings.visibility, language=self.language,
                idempotency_key=idempotency_key(delivery.key))
        except MastodonError as exc:
            raise _error(exc, api) from None
        return _receipt(delivery, status)

    def _client(self) -> MastodonApi:
        """The Mastodon.py client, created on first use."""
        with self._lock:
            if self._api is None:
                self._api = MastodonApi(
                    access_token=self.settings.access_token.get_secret_value(),
                    api_base_url=self.settings.base_url, ratelimit_method="throw",
                    request_timeout=self.settings.timeout, version_check_mode="none")
            return self._api

    def _instance_limit(self, api: MastodonApi) -> int:
        """The instance's character limit, asked once; else `limit`, else 500."""
        with self._lock:
            if self._limit is None:
                self._limit = _read_limit(api) or self.settings.limit or DEFAULT_LIMIT
            return self._limit

    def close(self) -> None:
        """Close the HTTP session."""
        if self._api is not None:
            self._api.session.close()


def idempotency_key(delivery_key: str) -> str:
    """The Idempotency-Key of a delivery: the same on every attempt, unique per delivery."""
    return hashlib.sha256(delivery_key.encode("utf-8")).hexdigest()[:KEY_LENGTH]


def _language(locale: str) -> str:
    """ISO 639-1 code of a locale such as en_US."""
    return locale.replace("-", "_").split("_")[0].lower()


def _read_limit(api: MastodonApi) -> int | None:
    """`configuration.statuses.max_characters` from the instance (v2, else v1 for servers before
    Mastodon 4.0; `max_toot_chars` on Pleroma and glitch-soc), or None if it cannot be read. Not
    reading it is no reason to give up: the post itself says whether the server is reachable."""
    for read in (api.instance_v2, api.instance_v1):
        try:
            info = read()
        except MastodonNotFoundError:
            continue
        except (MastodonError, ValueError) as exc:
            log.info("%s: cannot read the instance's character limit (%s)", SERVICE, type(exc).__name__)
            return None
        limit = _max_characters(info)
        if limit:
            return limit
    return None


def _max_characters(info: Any) -> int | None:
    """The character limit an instance document states, if any."""
    if not isinstance(info, dict):
        return None
    statuses = (info.get("configuration") or {}).get("statuses") or {}
    value = statuses.get("max_characters") or info.get("max_toot_chars")
    return value if isinstance(value, int) and value > 0 else None


def _receipt(delivery: Delivery, status: Any) -> Receipt:
    """The Receipt for the created status."""
    status_id = status.get("id") if isinstance(status, dict) else None
    if status_id is None:
        # A 2xx without an id: retried with the same Idempotency-Key, Mastodon will say which.
        raise ChannelError(f"{SERVICE}: the reply carries no status id; retrying with the same "
                           "idempotency key", retryable=True)
    return Receipt(key=delivery.key, remote_id=str(status_id),
                   url=status.get("url") or status.get("uri"))


def _error(exc: MastodonError, api: MastodonApi) -> ChannelError:
    """The ChannelError for a Mastodon.py exception (they carry no response object: the status
    code is in `args`, the rate limit's reset on the client)."""
    if isinstance(exc, MastodonRatelimitError):
        if "Hit rate limit" not in str(exc):
            # Mastodon.py could not parse the reply's rate limit headers, whatever its status.
            return ChannelError(f"{SERVICE}: unreadable rate limit headers in the reply; it may have "
                                "been posted: check, then `pipeline retry --unknown`",
                                retryable=False, unknown=True)
        reset = api.ratelimit_reset
        headers = ({"X-RateLimit-Reset": datetime.fromtimestamp(reset, UTC).isoformat()}
                   if reset else {})
        return http_error(429, headers, "rate limited", service=SERVICE, credential=CREDENTIAL)
    if isinstance(exc, MastodonNetworkError):
        return _unreachable(exc)
    if isinstance(exc, MastodonAPIError) and len(exc.args) >= 4 and isinstance(exc.args[1], int):
        # Mastodon.py raises ('Mastodon API returned error', status, reason, error message).
        status, reason, message = exc.args[1], exc.args[2], exc.args[3]
        return http_error(status, {}, message or reason or "", service=SERVICE, credential=CREDENTIAL)
    if isinstance(exc, MastodonAPIError):
        # A 2xx whose body is not JSON (a proxy's page?): resending with the same key is safe.
        return sent_but_unanswered(SERVICE, exc, idempotent=Mastodon.idempotent)
    return ChannelError(f"{SERVICE}: {type(exc).__name__}: {exc}", retryable=False)


def _unreachable(exc: MastodonNetworkError) -> ChannelError:
    """The ChannelError for a request that got no HTTP reply. Mastodon.py wraps the requests
    exception (kept as `__context__`); whether it went out only changes the message, since a
    resend with the same Idempotency-Key is harmless."""
    cause = exc.__context__
    if isinstance(cause, requests.ConnectTimeout) or (
            isinstance(cause, requests.ConnectionError) and not _mid_exchange(cause)):
        return ChannelError(f"{SERVICE}: cannot connect ({type(cause).__name__})", retryable=True)
    if isinstance(cause, requests.RequestException) and not isinstance(
            cause, requests.ConnectionError | requests.Timeout | _BROKEN_REPLY):
        # InvalidURL, MissingSchema...: the request could not even be built.
        return ChannelError(f"{SERVICE}: cannot send the request ({type(cause).__name__}); check "
                            "base_url", retryable=False)
    return sent_but_unanswered(SERVICE, cause or exc, idempotent=Mastodon.idempotent)


def _mid_exchange(exc: requests.ConnectionError) -> bool:
    """Whether the connection broke after it was open (requests wraps urllib3's ProtocolError or a
    bare OSError then; a connection never opened comes wrapped in a MaxRetryError)."""
    cause = exc.args[0] if exc.args else None
    return isinstance(cause, ProtocolError | OSError)
