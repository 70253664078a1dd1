"""Threads: posts each snippet through the Threads API's two steps: create a media container
(`POST /{version}/{user_id}/threads`), then publish it (`POST /{version}/{user_id}/threads_publish`
with `creation_id`). The post's permalink (`GET /{media_id}?fields=permalink`) is the receipt's URL.

What a container carries: with `image: attach` (the default) and a post image, an IMAGE container
with `image_url` (the post's public URL: Meta fetches it; nothing is uploaded), the image's
`alt_text` and the snippet as its text; else a TEXT container whose `link_attachment` is the post's
link, shown as a preview card (`image: card`), or none (`image: none`: Threads then previews the
first URL of the text by itself). A thread's parts 2..n reply (`reply_to_id`) to the part before.
The access token goes in the Authorization header, never in a URL.

Never publishing a container twice: the container's id is kept on the ledger row
(`Ledger.checkpoint`) before it is published, and every attempt that finds one there asks Threads
what became of it (`GET /{container_id}?fields=status,error_message`) before doing anything:
PUBLISHED is recorded as sent, with no second publish; FINISHED (or IN_PROGRESS, waited for) is
published; ERROR and EXPIRED containers can never be published, so a new one is created. A
container is published only once its status says FINISHED: an image takes Meta some seconds to
fetch, so the status is asked every `poll_interval` seconds for at most `poll_for`, after which
the delivery is left for a later attempt. Creating a container is harmless to repeat (one that is
never published expires after 24 hours and is never seen), so a timeout while creating one is
retried; a timeout while publishing marks the delivery unknown (crash rule `unknown`), and
`pipeline retry --unknown` asks the container's status as above, so it publishes at most once.
A container found PUBLISHED that way is recorded with the container's id: the API does not say
which media id it became. A publish Threads confirmed (its reply named the media id) is kept on
the row too, as `media:<id>`, before anything else is asked: an attempt after a crash in between
records that media (and its permalink) as sent, asking nothing of the container and publishing
nothing.

Error rules (Graph API errors, `{"error": {"code", "message", ...}}`): code 190 (the token is
invalid or expired) and codes 10 and 200-299 (a missing permission) stop the channel with what to
fix; codes 4, 17, 32 and 613 (rate and publishing limits: 250 posts a day) and HTTP 429 leave the
delivery for later; codes 1 and 2 and 5xx are retried; anything else (100: a bad parameter, an
image Meta cannot fetch) fails with Threads' own message.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

import httpx
from pydantic import Field, SecretStr, field_validator

from pipeline.channels.base import require_network
from pipeline.channels.http import MAYBE_SENT, NOT_SENT, HttpSettings, http_error, sent_but_unanswered
from pipeline.channels.images import ImageMode
from pipeline.config import Config
from pipeline.errors import ChannelError
from pipeline.fields import http_url
from pipeline.models import Delivery, Receipt

if TYPE_CHECKING:
    from pipeline.store.ledger import Ledger

log = logging.getLogger(__name__)

SERVICE = "threads"
CREDENTIAL = "the access token (access_token; a long-lived Threads token with threads_content_publish)"
# Graph API error codes (developers.facebook.com/docs/graph-api/guides/error-handling).
TOKEN_CODES = frozenset({102, 190})
PERMISSION_CODES = frozenset({3, 10, *range(200, 300)})
LIMIT_CODES = frozenset({4, 17, 32, 613})
TRANSIENT_CODES = frozenset({1, 2})
LIMIT_WAIT = 900.0      # seconds: a Graph rate limit says no reset time; a quarter of an hour
NOT_READY_WAIT = 60.0   # seconds before trying again a container still IN_PROGRESS after `poll_for`
# What a container's status means for the next step.
PUBLISHED, FINISHED, IN_PROGRESS = "PUBLISHED", "FINISHED", "IN_PROGRESS"
DEAD = frozenset({"ERROR", "EXPIRED"})      # can never be published: a new container is made
# A ledger row's remote_id while sending: a container's id, or this prefix and the media id of a
# publish Threads confirmed (a container's id is digits: the two never mix).
MEDIA = "media:"


class ThreadsSettings(HttpSettings):
    """`channels.<name>:` keys of a `type: threads` channel."""

    base_url: Annotated[str, http_url("https://graph.threads.net")] = "https://graph.threads.net"
    api_version: Annotated[str, Field(pattern=r"^v\d+\.\d+$")] = "v1.0"
    user_id: Annotated[str, Field(pattern=r"^(me|\d+)$")]   # the Threads user id (digits), or "me"
    access_token: SecretStr
    image: ImageMode | None = None               # None: attach
    poll_interval: float = Field(default=5.0, ge=0)   # seconds between two status checks
    poll_for: float = Field(default=60.0, ge=0)       # seconds a container may take to be ready

    @field_validator("user_id", mode="before")
    @classmethod
    def _text(cls, v: object) -> object:
        # YAML reads `user_id: 1234` as a number.
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v


class Threads:
    """Posts snippets to Threads in two steps (container, publish), each container published at
    most once (its id kept on the ledger row in between). One httpx client."""

    type: ClassVar[str] = "threads"
    kinds: ClassVar[frozenset[str]] = frozenset({"social"})
    crash_rule: ClassVar[str] = "unknown"
    idempotent: ClassVar[bool] = False
    network: ClassVar[str] = "threads"
    Settings = ThreadsSettings

    def __init__(self, *, name: str, settings: ThreadsSettings, config: Config) -> None:
        self.name = name
        self.settings = settings
        self.concurrency = 1
        require_network(config, name, self.network)
        self.image: ImageMode = settings.image or "attach"
        self.api = f"{settings.base_url}/{settings.api_version}"
        self.client = httpx.Client(
            timeout=settings.timeout, follow_redirects=False,
            headers={"Authorization": f"Bearer {settings.access_token.get_secret_value()}"})
        self._ledger: Ledger | None = None

    def use_checkpoints(self, ledger: Ledger) -> None:
        """Keep each container's id on its delivery's ledger row (`Ledger.checkpoint`) before it
        is published; the publisher calls this before sending."""
        self._ledger = ledger

    def send(self, delivery: Delivery) -> Receipt:
        """Publish one snippet (its container made, or the one an earlier attempt made); returns
        the media id and permalink. Raises ChannelError."""
        assert delivery.snippet is not None, "a threads delivery carries a snippet"
        ledger = self._ledger
        if ledger is None:
            # Without the ledger a crash between the steps could publish the post twice.
            raise ChannelError(f"{SERVICE}: sent outside a publish: there is no ledger row to keep "
                               "the container's id on; send it with `pipeline publish`", retryable=False)
        row = ledger.get(delivery.key)
        container = row.remote_id if row is not None else None
        if container is not None and container.startswith(MEDIA):
            media_id = container.removeprefix(MEDIA)
            log.info("%s: %s: published as %s by an earlier attempt; recording it", self.name,
                     delivery.key, media_id)
            return Receipt(key=delivery.key, remote_id=media_id, url=self._permalink(media_id),
                           detail="published by an earlier attempt (its media id was kept)")
        status: str | None = None
        if container is not None:
            status, error = self._status(container)
            if status == PUBLISHED:
                log.info("%s: %s: container %s was published by an earlier attempt; not publishing "
                         "it again", self.name, delivery.key, container)
                return Receipt(key=delivery.key, remote_id=container, url=None,
                               detail="published by an earlier attempt (container status PUBLISHED)")
            if status in DEAD:
                log.info("%s: %s: container %s is %s (%s); creating a new one", self.name, delivery.key,
                         container, status, error or "no message")
                container, status = None, None
        if container is None:
            container = self._create(delivery)
            if not ledger.checkpoint(delivery.key, container):
                raise ChannelError(f"{SERVICE}: {delivery.key} is no longer being sent in the ledger "
                                   f"(another run took it?); container {container} left unpublished",
                                   retryable=False)
        if status != FINISHED:
            self._wait_until_ready(container)
        media_id = self._publish(container)
        # Kept before the permalink is asked: a crash from here on must not leave a row that only
        # names the container (a retry would then record the container's id, not the post's).
        ledger.checkpoint(delivery.key, MEDIA + media_id)
        return Receipt(key=delivery.key, remote_id=media_id, url=self._permalink(media_id),
                       detail=f"published container {container}")

    def container_fields(self, delivery: Delivery) -> dict[str, str]:
        """The form fields of the container for `delivery`."""
        snippet = delivery.snippet
        assert snippet is not None and delivery.rendered is not None
        post = delivery.rendered.post
        fields = {"text": snippet.text}
        if self.image == "attach" and post.image and delivery.part <= 1:
            fields.update(media_type="IMAGE", image_url=post.image)
            if post.image_alt:
                fields["alt_text"] = post.image_alt
        else:
            fields["media_type"] = "TEXT"
            if snippet.link is not None and self.image != "none":
                fields["link_attachment"] = snippet.link.uri
        if delivery.part > 1 and delivery.reply_to_remote:
            fields["reply_to_id"] = delivery.reply_to_remote
        return fields

    # -- the steps ----------------------------------------------------------------------------

    def _create(self, delivery: Delivery) -> str:
        """Step one: a new container's id."""
        response = self._call("POST", f"{self.api}/{self.settings.user_id}/threads",
                              step="creating the container", unanswered="retry",
                              data=self.container_fields(delivery))
        return _id(response, what="container", unknown=False)

    def _status(self, container: str) -> tuple[str, str | None]:
        """A container's status (PUBLISHED, FINISHED, IN_PROGRESS, ERROR, EXPIRED) and error message."""
        response = self._call("GET", f"{self.api}/{container}", step="reading the container's status",
                              unanswered="retry", params={"fields": "status,error_message"})
        body = _json(response)
        status = body.get("status")
        if not isinstance(status, str):
            raise ChannelError(f"{SERVICE}: container {container}: the reply carries no status",
                               retryable=True)
        return status, body.get("error_message")

    def _wait_until_ready(self, container: str) -> None:
        """Return once the container is FINISHED; raises ChannelError when it failed (ERROR,
        EXPIRED) or is still IN_PROGRESS after `poll_for` seconds (the delivery waits)."""
        deadline = time.monotonic() + self.settings.poll_for
        while True:
            status, error = self._status(container)
            if status == FINISHED:
                return
            if status == PUBLISHED:
                # Only a publish request of ours can have done it: one left unanswered a moment ago.
                raise ChannelError(f"{SERVICE}: container {container} is already published; run "
                                   "`pipeline retry --unknown` to record it", retryable=False, unknown=True)
            if status in DEAD:
                raise ChannelError(f"{SERVICE}: container {container} failed ({status}: "
                                   f"{error or 'no message'}); fix the post (an image Meta cannot "
                                   "fetch?), then `pipeline retry --failed` makes a new one",
                                   retryable=False)
            if time.monotonic() >= deadline:
                raise ChannelError(f"{SERVICE}: container {container} still {status} after "
                                   f"{self.settings.poll_for:.0f} s; trying again later",
                                   retryable=True, retry_after=NOT_READY_WAIT)
            time.sleep(self.settings.poll_interval)

    def _publish(self, container: str) -> str:
        """Step two: publish the container; the media id."""
        response = self._call("POST", f"{self.api}/{self.settings.user_id}/threads_publish",
                              step="publishing", unanswered="unknown", params={"creation_id": container})
        return _id(response, what="media", unknown=True)

    def _permalink(self, media_id: str) -> str | None:
        """The post's permalink, or None: the post is out either way, so no error is raised."""
        try:
            response = self.client.get(f"{self.api}/{media_id}", params={"fields": "permalink"})
            link = response.json().get("permalink") if response.is_success else None
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            log.info("%s: cannot read the permalink of %s (%s)", self.name, media_id, type(exc).__name__)
            return None
        return link if isinstance(link, str) else None

    def _call(self, method: str, url: str, *, step: str, unanswered: Literal["retry", "unknown"],
              **kwargs: Any) -> httpx.Response:
        """One request; a successful response, else the ChannelError of the failure. `unanswered`:
        what no answer after the request went out means (safe to retry, or unknown)."""
        try:
            response = self.client.request(method, url, **kwargs)
        except NOT_SENT as exc:
            raise ChannelError(f"{SERVICE}: cannot connect to {self.settings.base_url} "
                               f"({type(exc).__name__})", retryable=True) from None
        except MAYBE_SENT as exc:
            if unanswered == "unknown":
                raise sent_but_unanswered(SERVICE, exc, idempotent=False) from None
            raise ChannelError(f"{SERVICE}: no answer {step} ({type(exc).__name__})",
                               retryable=True) from None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise ChannelError(f"{SERVICE}: cannot send to {self.settings.base_url} "
                               f"({type(exc).__name__}); check base_url", retryable=False) from None
        if not response.is_success:
            raise graph_error(response, step=step)
        return response

    def close(self) -> None:
        """Close the connection pool."""
        self.client.close()
        self._ledger = None


def graph_error(response: httpx.Response, *, step: str) -> ChannelError:
    """The ChannelError for a Graph API error reply (its `error.code`, else the HTTP status)."""
    error = _json(response).get("error")
    error = error if isinstance(error, dict) else {}
    code = error.get("code") if isinstance(error.get("code"), int) else None
    message = " ".join(str(error.get("error_user_msg") or error.get("message") or response.text
                           or response.reason_phrase).split())[:300]
    where = f"{SERVICE}: {step}: {response.status_code}" + (f" (code {code})" if code is not None else "")
    if code in TOKEN_CODES:
        return ChannelError(f"{where}: {CREDENTIAL} is invalid or expired; create a new one and update "
                            f"the environment ({message})", retryable=False, fatal=True)
    if code in PERMISSION_CODES:
        return ChannelError(f"{where}: {CREDENTIAL} lacks a permission (threads_basic, "
                            f"threads_content_publish) ({message})", retryable=False, fatal=True)
    if code in LIMIT_CODES or response.status_code == 429:
        wait = http_error(429, response.headers, message, service=SERVICE).retry_after
        wait = LIMIT_WAIT if code in LIMIT_CODES and "retry-after" not in response.headers else wait
        return ChannelError(f"{where}: rate or publishing limit reached (250 posts a day); trying "
                            f"again in {wait:.0f} s ({message})", retryable=True, retry_after=wait)
    if code in TRANSIENT_CODES or response.status_code >= 500:
        return ChannelError(f"{where}: temporary error: {message}", retryable=True)
    return ChannelError(f"{where}: {message}", retryable=False)


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _id(response: httpx.Response, *, what: str, unknown: bool) -> str:
    """The `id` of a successful reply. A publish without one may have published: unknown."""
    value = _json(response).get("id")
    if isinstance(value, str | int) and str(value):
        return str(value)
    if unknown:
        raise ChannelError(f"{SERVICE}: the reply carries no {what} id; it may have been posted: "
                           "`pipeline retry --unknown` asks the container's status", retryable=False,
                           unknown=True)
    raise ChannelError(f"{SERVICE}: the reply carries no {what} id", retryable=True)
