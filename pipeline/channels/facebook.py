"""Facebook Pages: posts each snippet to a Page's feed with the Graph API
(`POST {base_url}/{api_version}/{page_id}/feed`, `message` and `link`).

The message is the `facebook` snippet (its link included); `link` is the post's tagged link, of
which Facebook shows the preview card (its image is the page's `og:image`: `image: card`, the
default). `image: none` sends no `link`. The Page access token (scope `pages_manage_posts`) is
the request's `access_token` parameter, as the Pages API documents it
(developers.facebook.com/docs/pages-api/posts: `message`, `link` and `access_token`), sent in the
JSON body, never in the URL: httpx logs each request's URL.

The receipt is the post's id (`{page-id}_{post-id}`), with its facebook.com URL.

Error rules follow the Graph API's error object (`{"error": {"code", "error_subcode", "message",
"is_transient"}}`, developers.facebook.com/docs/graph-api/guides/error-handling): 190 (the token
expired or was revoked) and 10/200-299 (a missing permission) stop the channel with what to fix;
4, 17, 32, 613 and 80001 (rate limits) wait for the time the usage headers give, or 5 minutes (or
leave the delivery pending beyond `max_wait`); 368 (the Page is blocked from posting for a while)
and 100 (an invalid parameter, such as a page id the token cannot post to) fail with Facebook's
message; 1, 2 and any `is_transient` error, like 5xx, are retried. The Graph API has no
idempotency key: once a request went out without an answer the delivery is unknown, never resent
blindly (crash rule `unknown`). A Page post has no thread: a post that asks for one
(`social.thread: true`) fails here before anything is posted.
"""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any, ClassVar, Literal

import httpx
from pydantic import Field, SecretStr

from pipeline.channels.base import require_network
from pipeline.channels.http import HttpSettings, http_error, post_json, reset_after
from pipeline.config import Config
from pipeline.errors import ChannelError
from pipeline.fields import http_url
from pipeline.models import Delivery, Receipt

log = logging.getLogger(__name__)

SERVICE = "facebook"
CREDENTIAL = "the Page access token (access_token, with pages_manage_posts)"
DEFAULT_API_VERSION = "v25.0"
POST_URL = "https://www.facebook.com/{id}"
RATE_LIMITS = frozenset({4, 17, 32, 613, 80001})
RATE_LIMIT_WAIT = 300.0          # seconds, when no usage header says when access comes back
TRANSIENT = frozenset({1, 2})
REGAIN = "estimated_time_to_regain_access"     # minutes, in the usage headers
USAGE_HEADERS = ("x-business-use-case-usage", "x-page-usage", "x-app-usage")


class FacebookSettings(HttpSettings):
    """`channels.<name>:` keys of a `type: facebook` channel."""

    base_url: Annotated[str, http_url("https://graph.facebook.com")] = "https://graph.facebook.com"
    api_version: Annotated[str, Field(pattern=r"^v\d{1,3}\.\d{1,2}$")] = DEFAULT_API_VERSION
    page_id: Annotated[str, Field(pattern=r"^\d{1,25}$")]
    access_token: SecretStr
    image: Literal["card", "none"] | None = None      # None: card (Facebook's preview of the link)


class Facebook:
    """Posts snippets to a Facebook Page's feed with the Graph API (one httpx client)."""

    type: ClassVar[str] = "facebook"
    kinds: ClassVar[frozenset[str]] = frozenset({"social"})
    crash_rule: ClassVar[str] = "unknown"
    idempotent: ClassVar[bool] = False
    network: ClassVar[str] = "facebook"
    Settings = FacebookSettings

    def __init__(self, *, name: str, settings: FacebookSettings, config: Config) -> None:
        self.name = name
        self.settings = settings
        self.concurrency = 1
        require_network(config, name, self.network)
        self.url = f"{settings.base_url}/{settings.api_version}/{settings.page_id}/feed"
        self.client = httpx.Client(timeout=settings.timeout, follow_redirects=False)

    def send(self, delivery: Delivery) -> Receipt:
        """Create the Page post of one snippet; returns its id and URL. Raises ChannelError."""
        snippet = delivery.snippet
        assert snippet is not None, "a facebook delivery carries a snippet"
        if delivery.part > 0:
            raise ChannelError(f"{SERVICE}: a Page post has no thread; this post asks for one "
                               "(`social.thread: true`): remove it to post a single snippet here",
                               retryable=False)
        payload: dict[str, Any] = {"message": snippet.text}
        if snippet.link is not None and (self.settings.image or "card") == "card":
            payload["link"] = snippet.link.uri
        payload["access_token"] = self.settings.access_token.get_secret_value()
        response = post_json(self.client, self.url, payload, service=SERVICE,
                             shown=self.settings.base_url, idempotent=self.idempotent, check="base_url")
        if not response.is_success:
            raise self._error(response)
        try:
            post_id = response.json()["id"]
        except (ValueError, KeyError, TypeError):
            post_id = None
        if not post_id:
            raise ChannelError(f"{SERVICE}: the reply carries no post id; it may have been posted: "
                               "check the Page, then `pipeline retry --unknown`", retryable=False,
                               unknown=True)
        return Receipt(key=delivery.key, remote_id=str(post_id), url=POST_URL.format(id=post_id),
                       detail=f"{response.status_code} {post_id}")

    def _error(self, response: httpx.Response) -> ChannelError:
        """The ChannelError for a Graph API error reply (see the module's rules)."""
        # A reply that echoes the token (a proxy's error page...) must not carry it into the ledger.
        token = self.settings.access_token.get_secret_value()
        error = _graph_error(response)
        if error is None:
            text = (response.text or response.reason_phrase).replace(token, "<token>")
            return http_error(response.status_code, response.headers, text, service=SERVICE,
                              credential=CREDENTIAL)
        code, subcode = error.get("code"), error.get("error_subcode")
        message = " ".join(str(error.get("message") or "").replace(token, "<token>").split())[:300]
        said = f"{SERVICE}: Graph API error {code}" + (f"/{subcode}" if subcode else "") + f": {message}"
        if code == 190:
            return ChannelError(f"{said}; {CREDENTIAL} expired or was revoked: create a long-lived Page "
                                "token and update the environment", retryable=False, fatal=True)
        if code == 10 or (isinstance(code, int) and 200 <= code <= 299):
            return ChannelError(f"{said}; {CREDENTIAL} lacks a permission: grant pages_manage_posts "
                                f"for page {self.settings.page_id}", retryable=False, fatal=True)
        if code in RATE_LIMITS:
            wait = _regain_access(response.headers)
            return ChannelError(f"{said}; rate limited, access returns in about {wait:.0f} s",
                                retryable=True, retry_after=wait)
        if code == 368:
            return ChannelError(f"{said}; Facebook blocked this Page from posting for a while: "
                                "check the Page's quality, then `pipeline retry --failed`", retryable=False)
        if code in TRANSIENT or error.get("is_transient") or response.status_code >= 500:
            return ChannelError(f"{said} (temporary)", retryable=True)
        if code == 100:
            return ChannelError(f"{said}; check channels.{self.name}.page_id and the post's link",
                                retryable=False)
        return ChannelError(said, retryable=False)

    def close(self) -> None:
        """Close the connection pool."""
        self.client.close()


def _graph_error(response: httpx.Response) -> dict[str, Any] | None:
    """The reply's `error` object, or None when it has none."""
    try:
        body = response.json()
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else None


def _regain_access(headers: httpx.Headers) -> float:
    """Seconds until the rate limit lifts: the largest `estimated_time_to_regain_access` (minutes)
    in the usage headers (`{"<id>": [{…}]}`, or one object), else Retry-After and the like, else
    RATE_LIMIT_WAIT."""
    minutes = [0.0]
    for name in USAGE_HEADERS:
        try:
            usage = json.loads(headers.get(name) or "null")
        except ValueError:
            continue
        if not isinstance(usage, dict):
            continue
        entries = [usage, *(e for v in usage.values() if isinstance(v, list) for e in v)]
        for entry in entries:
            value = entry.get(REGAIN) if isinstance(entry, dict) else None
            if isinstance(value, int | float) and not isinstance(value, bool):
                minutes.append(float(value))
    if max(minutes) > 0:
        return max(minutes) * 60
    wait = reset_after(headers)
    return wait if wait is not None else RATE_LIMIT_WAIT
