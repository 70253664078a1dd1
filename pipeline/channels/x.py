"""X (Twitter): posts each snippet with the v2 API (`POST /2/tweets`) through tweepy, signed with
OAuth 1.0a user context (the four keys of an app with read and write access).

A thread's parts 2..n reply to the part before them. A post's image is never uploaded: tweepy
(4.17, the newest release) has no X API v2 media upload (`POST /2/media/upload`), only the v1.1
`API.media_upload` on upload.twitter.com, which X has retired. So `image:` is `card` by default
(X shows the link's card, with the page's image); `attach` cannot be honoured and logs one warning
per post, the post going out as text with its link; `none` changes nothing X would show.

Error rules: a 429 waits for `x-rate-limit-reset` (or leaves the delivery pending when that is
beyond `max_wait`); 5xx and a connection that could not be opened are retried; 401/403 fail with
what to fix; X's "duplicate content" refusal fails for good (resending the same text cannot
succeed). Creating a tweet is not idempotent: once the request went out without an answer, the
delivery is marked unknown, never resent blindly.
"""

from __future__ import annotations

import logging
import threading
from typing import Annotated, Any, ClassVar

import requests
import tweepy
from pydantic import SecretStr
from urllib3.exceptions import ProtocolError

from pipeline.channels.http import HttpSettings, http_error, sent_but_unanswered
from pipeline.channels.images import ImageMode
from pipeline.config import Config
from pipeline.errors import ChannelError
from pipeline.fields import http_url
from pipeline.models import Delivery, Receipt

log = logging.getLogger(__name__)

SERVICE = "x"
TWEEPY_HOST = "https://api.twitter.com"    # what tweepy 4.17's BaseClient.request hard-codes
# Errors reading a reply that had begun: the request was received.
_BROKEN_REPLY = requests.exceptions.ChunkedEncodingError | requests.exceptions.ContentDecodingError
CREDENTIAL = ("the X app's keys (consumer_key/consumer_secret, access_token/access_token_secret; "
              "the access token needs read and write permission)")


class XSettings(HttpSettings):
    """`channels.<name>:` keys of a `type: x` channel."""

    consumer_key: SecretStr
    consumer_secret: SecretStr
    access_token: SecretStr
    access_token_secret: SecretStr
    base_url: Annotated[str, http_url("https://api.x.com")] = "https://api.x.com"
    image: ImageMode | None = None      # default card; attach is not possible (see the module)


class _RebasedSession(requests.Session):
    """A requests Session that sends tweepy's requests to `base_url` instead of the host tweepy
    hard-codes, with a timeout (tweepy sets none). The OAuth 1.0a signature is computed when the
    request is prepared, after this rewrite, so it covers the URL actually requested."""

    def __init__(self, base_url: str, timeout: float) -> None:
        super().__init__()
        self.base_url = base_url
        self.timeout = timeout

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        if isinstance(url, str) and url.startswith(TWEEPY_HOST + "/"):
            url = self.base_url + url[len(TWEEPY_HOST):]
        kwargs.setdefault("timeout", self.timeout)
        return super().request(method, url, *args, **kwargs)


class _Client(tweepy.Client):
    """tweepy's v2 Client on a `_RebasedSession`."""

    def __init__(self, *, base_url: str, timeout: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.session = _RebasedSession(base_url, timeout)


class X:
    """Posts snippets to X with tweepy (`Client.create_tweet`, OAuth 1.0a user context).

    Images are not uploaded: tweepy has no v2 media upload, so X shows the link's card; with
    `image: attach` the image is left out with a logged warning (once per post)."""

    type: ClassVar[str] = "x"
    kinds: ClassVar[frozenset[str]] = frozenset({"social"})
    crash_rule: ClassVar[str] = "unknown"
    idempotent: ClassVar[bool] = False
    network: ClassVar[str] = "x"
    Settings = XSettings

    def __init__(self, *, name: str, settings: XSettings, config: Config) -> None:
        self.name = name
        self.settings = settings
        self.concurrency = 1
        self.client = _Client(
            base_url=settings.base_url, timeout=settings.timeout,
            consumer_key=settings.consumer_key.get_secret_value(),
            consumer_secret=settings.consumer_secret.get_secret_value(),
            access_token=settings.access_token.get_secret_value(),
            access_token_secret=settings.access_token_secret.get_secret_value(),
            return_type=dict, wait_on_rate_limit=False)   # rate limits are the orchestrator's
        self.image: ImageMode = settings.image or "card"
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    def send(self, delivery: Delivery) -> Receipt:
        """Post one snippet (a thread part replies to the previous part); returns the tweet's id
        and URL. Raises ChannelError."""
        snippet = delivery.snippet
        assert snippet is not None, "an x delivery carries a snippet"
        self._warn_image(delivery)
        reply_to = delivery.reply_to_remote if delivery.part > 1 else None
        try:
            answer = self.client.create_tweet(text=snippet.text, in_reply_to_tweet_id=reply_to,
                                              user_auth=True)
        except tweepy.HTTPException as exc:
            raise _refused(exc) from None
        except requests.JSONDecodeError as exc:   # a 2xx whose body is not JSON: posted, no id
            raise sent_but_unanswered(SERVICE, exc, idempotent=self.idempotent) from None
        except requests.RequestException as exc:
            raise _unreachable(exc) from None
        except tweepy.TweepyException as exc:
            raise ChannelError(f"{SERVICE}: {exc}", retryable=False) from None
        return _receipt(delivery, answer)

    def _warn_image(self, delivery: Delivery) -> None:
        rendered = delivery.rendered
        if self.image != "attach" or rendered is None or not rendered.post.image:
            return
        with self._lock:
            if rendered.post.slug in self._warned:
                return
            self._warned.add(rendered.post.slug)
        log.warning("%s: %s: the image %s is not attached (tweepy has no X API v2 media upload; "
                    "set image: card to silence this); posting the text and link only",
                    self.name, rendered.post.path, rendered.post.image)

    def close(self) -> None:
        """Close the HTTP session."""
        self.client.session.close()


def _receipt(delivery: Delivery, answer: object) -> Receipt:
    """The Receipt for X's answer `{"data": {"id": ..., "text": ...}}`."""
    data = answer.get("data") if isinstance(answer, dict) else None
    tweet_id = data.get("id") if isinstance(data, dict) else None
    if not tweet_id:
        # A 2xx without an id: the tweet most likely exists, but nothing says where.
        raise ChannelError(f"{SERVICE}: the reply carries no tweet id; it may have been posted: "
                           "check, then `pipeline retry --unknown`", retryable=False, unknown=True)
    return Receipt(key=delivery.key, remote_id=str(tweet_id),
                   url=f"https://x.com/i/web/status/{tweet_id}")


def _refused(exc: tweepy.HTTPException) -> ChannelError:
    """The ChannelError for an HTTP error reply from X."""
    response = exc.response
    status = getattr(response, "status_code", 0)
    headers = getattr(response, "headers", None) or {}
    detail = "; ".join(exc.api_messages) or str(exc)
    if isinstance(exc, tweepy.Forbidden) and "duplicate content" in detail.lower():
        # X refuses a text identical to a recent post of the account: a resend cannot succeed.
        return ChannelError(f"{SERVICE}: duplicate content: X refuses a post identical to a recent "
                            f"one ({' '.join(detail.split())[:300]})", retryable=False)
    return http_error(status, headers, detail, service=SERVICE, credential=CREDENTIAL)


def _unreachable(exc: requests.RequestException) -> ChannelError:
    """The ChannelError for a request that got no HTTP reply. Only a failure to open the
    connection proves nothing was sent; anything later may have posted the tweet."""
    if isinstance(exc, requests.ConnectTimeout):
        return ChannelError(f"{SERVICE}: cannot connect (timed out)", retryable=True)
    if isinstance(exc, requests.ConnectionError) and not _mid_exchange(exc):
        return ChannelError(f"{SERVICE}: cannot connect ({type(exc).__name__})", retryable=True)
    if isinstance(exc, requests.ReadTimeout | requests.ConnectionError | _BROKEN_REPLY):
        return sent_but_unanswered(SERVICE, exc, idempotent=X.idempotent)
    # InvalidURL, MissingSchema...: the request could not even be built.
    return ChannelError(f"{SERVICE}: cannot send the request ({type(exc).__name__}); check base_url",
                        retryable=False)


def _mid_exchange(exc: requests.ConnectionError) -> bool:
    """Whether the connection broke after it was open (requests wraps urllib3's ProtocolError or a
    bare OSError then; a connection never opened comes wrapped in a MaxRetryError)."""
    cause = exc.args[0] if exc.args else None
    return isinstance(cause, ProtocolError | OSError)
