"""Mastodon: posts each snippet as a status (`POST /api/v1/statuses`) through Mastodon.py, with a
user access token (scopes `write:statuses`, and `write:media` to attach images).

Every status carries an `Idempotency-Key` derived from the delivery's key: Mastodon answers a
repeated request with the same key with the status it already created, so a resend is harmless
(a timeout after sending is simply retried). A thread's parts 2..n reply to the part before them.

The instance's own limits are read once (`GET /api/v2/instance`, else v1): a snippet longer than
its character limit fails before anything is posted, naming the length and the limit; its
`configuration.media_attachments` (size, pixel count, types) are what the image is fitted to.

Images (`image:`): `attach` (the default) uploads the post's image (`POST /api/v2/media` with the
`image_alt` as its description) and posts the status (a thread: its first part) with its id in
`media_ids`. A retry reuses the media id uploaded for the same delivery, so the status request is
the same one and the Idempotency-Key still returns the first status; after a crash the image is
uploaded again and the unused copy is deleted by the instance (unattached media expire). An image
that cannot be fetched or whose upload is refused (a token without `write:media`, a 4xx) is left
out with a warning; a 429, 5xx or network error on the upload retries the delivery. `card` and
`none` upload nothing: Mastodon then shows the link's preview card, which the instance builds
itself (with the page's image) and which no API request can turn off.

Error rules: a 429 waits for `X-RateLimit-Reset` (or leaves the delivery pending when that is
beyond `max_wait`); 5xx, network errors and timeouts are retried; 401/403 fail with what to fix.
"""
from __future__ import annotations

import hashlib
import logging
import mimetypes
import threading
from dataclasses import dataclass
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
from pipeline.channels.images import ImageMode, fetch_image, fit
from pipeline.config import Config
from pipeline.errors import ChannelError
from pipeline.fields import http_url
from pipeline.models import Delivery, Post, Receipt

log = logging.getLogger(__name__)

SERVICE = "mastodon"
DEFAULT_LIMIT = 500           # Mastodon's own default, when neither the instance nor config says
CREDENTIAL = "the access token (access_token; it needs the write:statuses scope)"
KEY_LENGTH = 32               # hex characters of the Idempotency-Key (128 bits)
# Media limits when the instance does not state them (Mastodon before 4.0 took 8 MB images).
IMAGE_BYTES = 8 * 1024 * 1024
DESCRIPTION_LIMIT = 1500      # characters of a media description (Mastodon's, since 2.9)
IMAGE_MIMES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
# Errors reading a reply that had begun: the request was received.
_BROKEN_REPLY = requests.exceptions.ChunkedEncodingError | requests.exceptions.ContentDecodingError


class MastodonSettings(HttpSettings):
    """`channels.<name>:` keys of a `type: mastodon` channel."""

    base_url: Annotated[str, http_url("https://mastodon.social")] = "https://mastodon.social"
    access_token: SecretStr
    visibility: Literal["public", "unlisted", "private", "direct"] = "public"
    language: str | None = None                 # ISO 639-1; default: from site.locale
    limit: int | None = Field(default=None, gt=0)   # characters, if the instance does not say
    image: ImageMode | None = None              # default attach: the post's image, with its alt text

    @field_validator("language")
    @classmethod
    def _iso(cls, v: str | None) -> str | None:
        if v is not None and not (v.isascii() and v.isalpha() and len(v) in (2, 3)):
            raise ValueError("must be an ISO 639-1 language code such as en, fr, de")
        return v.lower() if v else v


class Mastodon:
    """Posts snippets as Mastodon statuses with Mastodon.py (`status_post`), idempotently; the
    post's image is uploaded first (`media_post`, with its alt text) unless `image` says not to."""

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
        self.image: ImageMode = settings.image or "attach"
        self._limit: int | None = None
        self._media_limits: _MediaLimits | None = None
        self._uploaded: dict[str, str] = {}     # delivery key -> media id, reused by its retries
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
        media_id = self._media(delivery, api) if delivery.part <= 1 else None
        api.ratelimit_reset = None     # so that a 429's reset is this reply's, not an older one's
        try:
            status = api.status_post(
                snippet.text, in_reply_to_id=delivery.reply_to_remote if delivery.part > 1 else None,
                media_ids=[media_id] if media_id else None,
                visibility=self.settings.visibility, language=self.language,
                idempotency_key=idempotency_key(delivery.key))
        except MastodonError as exc:
            raise _error(exc, api) from None
        receipt = _receipt(delivery, status)
        with self._lock:
            self._uploaded.pop(delivery.key, None)
        return receipt

    def _media(self, delivery: Delivery, api: MastodonApi) -> str | None:
        """The id of the post's image uploaded for this delivery (the one an earlier attempt
        uploaded, if any), or None: no image, `image` is not attach, or it could not be had."""
        post = delivery.rendered.post if delivery.rendered else None
        if self.image != "attach" or post is None or not post.image:
            return None
        with self._lock:
            if delivery.key in self._uploaded:
                return self._uploaded[delivery.key]
        image = fetch_image(post)
        if image is None:
            return None
        limits = self._limits(api)
        try:
            image = fit(image, max_bytes=limits.max_bytes, max_side=limits.max_side, mimes=limits.mimes)
        except ValueError as exc:       # no size fits: limits no real instance has
            log.warning("%s: %s: %s; posting without it", self.name, post.path, exc)
            return None
        alt = image.alt[:limits.description_limit] if image.alt else None
        api.ratelimit_reset = None
        try:
            media = api.media_post(image.data, mime_type=image.mime, description=alt,
                                   file_name=post.slug + (mimetypes.guess_extension(image.mime) or ""))
        except MastodonError as exc:
            error = _error(exc, api)
            if error.retryable:
                raise error from None
            self._upload_refused(post, image.url, exc, error)
            return None
        media_id = media.get("id") if isinstance(media, dict) else None
        if media_id is None:
            raise ChannelError(f"{SERVICE}: the image upload's reply carries no media id; retrying",
                               retryable=True)
        with self._lock:
            self._uploaded[delivery.key] = str(media_id)
        return str(media_id)

    def _upload_refused(self, post: Post, url: str, exc: MastodonError, error: ChannelError) -> None:
        """Log why the image is left out: the post is better sent without it than not at all."""
        status = exc.args[1] if len(exc.args) >= 2 and isinstance(exc.args[1], int) else None
        why = ("the access token lacks the write:media scope (create a token with it)"
               if status in (401, 403) else str(error))
        log.warning("%s: %s: uploading the image %s was refused: %s; posting without it",
                    self.name, post.path, url, why)

    def _limits(self, api: MastodonApi) -> _MediaLimits:
        """The instance's media limits, read with its character limit."""
        self._instance_limit(api)
        assert self._media_limits is not None
        return self._media_limits

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
                info = _read_instance(api)
                self._limit = _max_characters(info) or self.settings.limit or DEFAULT_LIMIT
                self._media_limits = _media_limits(info)
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


def _read_instance(api: MastodonApi) -> dict[str, Any] | None:
    """The instance document stating a character limit (v2, else v1 for servers before Mastodon
    4.0; `max_toot_chars` on Pleroma and glitch-soc), or None if none can be read. Not reading it
    is no reason to give up: the post itself says whether the server is reachable."""
    for read in (api.instance_v2, api.instance_v1):
        try:
            info = read()
        except MastodonNotFoundError:
            continue
        except (MastodonError, ValueError) as exc:
            log.info("%s: cannot read the instance's limits (%s)", SERVICE, type(exc).__name__)
            return None
        if _max_characters(info):
            return info
    return None


@dataclass(frozen=True, kw_only=True)
class _MediaLimits:
    max_bytes: int
    max_side: int | None
    mimes: frozenset[str]
    description_limit: int


def _media_limits(info: dict[str, Any] | None) -> _MediaLimits:
    """`configuration.media_attachments` of an instance document (Mastodon 3.4+), else defaults.
    Its pixel limit (`image_matrix_limit`) becomes a side: the square root, which any aspect fits."""
    media = ((info or {}).get("configuration") or {}).get("media_attachments") or {}

    def number(key: str) -> int | None:
        value = media.get(key)
        return value if isinstance(value, int) and value > 0 else None

    matrix = number("image_matrix_limit")
    types = media.get("supported_mime_types")
    mimes = IMAGE_MIMES & frozenset(types) if isinstance(types, list) else IMAGE_MIMES
    return _MediaLimits(max_bytes=number("image_size_limit") or IMAGE_BYTES,
                        max_side=int(matrix ** 0.5) if matrix else None,
                        mimes=mimes or frozenset({"image/jpeg"}),
                        description_limit=number("description_limit") or DESCRIPTION_LIMIT)


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
