"""Bluesky: posts each snippet as an `app.bsky.feed.post` record through the `atproto` client
(`com.atproto.repo.createRecord`), logged in once with the account's handle and an app password.

The record carries facets (UTF-8 byte ranges) for the link, whose text is shortened while its
target keeps the full URL, and for the hashtags; an embed on a single post and on a thread's first
part; and, for a thread's parts 2..n, reply references to the first and the previous part.

The embed follows `image:`. `attach` (the default): the post's image as an `app.bsky.embed.images`
embed with its `image_alt` and aspect ratio (the link stays clickable in the text's facets).
`card`: an `app.bsky.embed.external` link card (title, summary, the image as its thumbnail).
`none`: the link card without a thumbnail. The image is fetched once (pipeline.channels.images),
fitted to the blob limit (1,000,000 bytes, 2,000 pixels a side) and uploaded as a blob once per
URL; an image that cannot be had is left out with a warning (`attach` then falls back to the card).

Idempotent: the record key (rkey) is a TID derived from the delivery (the post's date and the
delivery key), so a resend writes to the same key and can never create a second post. A PDS
answers a create on an existing key with an error (today a 500, later an explicit "exists"
error): the channel then reads the record back, and if it is the same post, that is a success.

Error rules: a 429 waits for `RateLimit-Reset` (or leaves the delivery pending when that is beyond
`max_wait`); 5xx, connection failures and timeouts are retried (with the same rkey); a refused
login stops the channel with one line naming the fix; other 4xx fail with the PDS's message.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, ClassVar

import httpx
import regex
from atproto_client import Client, models
from atproto_client.client.session import Session, SessionEvent
from atproto_client.exceptions import InvokeTimeoutError, RequestErrorBase
from atproto_client.request import Request, Response
from atproto_core.exceptions import AtProtocolError
from pydantic import SecretStr, ValidationError, field_validator

from pipeline.channels.http import HttpSettings, http_error, sent_but_unanswered
from pipeline.channels.images import Image, ImageMode, fetch_image, fit
from pipeline.config import Config
from pipeline.errors import ChannelError
from pipeline.fields import http_url
from pipeline.models import Delivery, Link, Post, Receipt, Snippet
from pipeline.render.links import SOCIAL_MEDIUM, tag_url, utm_params

log = logging.getLogger(__name__)

SERVICE = "bluesky"
COLLECTION = "app.bsky.feed.post"
LINK_FEATURE = "app.bsky.richtext.facet#link"
TAG_FEATURE = "app.bsky.richtext.facet#tag"
TID_ALPHABET = "234567abcdefghijklmnopqrstuvwxyz"     # base32-sortable
BLOB_MAX_BYTES = 1_000_000      # an embed's image (or a card's thumb): an image/* blob of at most 1 MB
IMAGE_MAX_SIDE = 2000           # what the Bluesky app resizes images to anyway
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_WORD = r"\p{L}\p{M}\p{N}_"     # what continues a hashtag (as in pipeline.render.social)
_LANGUAGE = regex.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$")


class BlueskySettings(HttpSettings):
    """`channels.<name>:` keys of a `type: bluesky` channel."""

    # The PDS to log in to; it may hand over to another.
    base_url: Annotated[str, http_url("https://bsky.social")] = "https://bsky.social"
    handle: str                                # e.g. news.example.com (or the account's email)
    app_password: SecretStr                    # an app password, never the account's password
    language: str | None = None                # the posts' `langs`; default: site.locale's language
    image: ImageMode | None = None             # default attach: an images embed with the alt text

    @field_validator("handle")
    @classmethod
    def _handle(cls, v: str) -> str:
        v = v.strip().removeprefix("@")
        if not v:
            raise ValueError("must be the account's handle, e.g. news.example.com")
        return v

    @field_validator("language")
    @classmethod
    def _language(cls, v: str | None) -> str | None:
        if v is not None and not _LANGUAGE.match(v):
            raise ValueError("must be a language code such as en or pt-BR")
        return v


class Bluesky:
    """Posts snippets to Bluesky as `app.bsky.feed.post` records with deterministic record keys."""

    type: ClassVar[str] = "bluesky"
    kinds: ClassVar[frozenset[str]] = frozenset({"social"})
    crash_rule: ClassVar[str] = "resend"       # a resend reuses the rkey: it cannot post twice
    idempotent: ClassVar[bool] = True
    network: ClassVar[str] = "bluesky"
    Settings = BlueskySettings

    def __init__(self, *, name: str, settings: BlueskySettings, config: Config) -> None:
        self.name = name
        self.settings = settings
        self.config = config
        self.concurrency = 1
        self.language = settings.language or config.site.locale.split("_")[0]
        self.client = Client(base_url=settings.base_url, request=Request(timeout=settings.timeout))
        self.client.on_session_change(self._on_session)
        self.http = httpx.Client(timeout=settings.timeout, follow_redirects=True)
        self._did: str | None = None
        self._handle = settings.handle
        self.image: ImageMode = settings.image or "attach"
        self._blobs: dict[str, dict[str, Any]] = {}     # image URL -> uploaded blob, for retries
        self._lock = threading.Lock()

    def send(self, delivery: Delivery) -> Receipt:
        """Create the post of one snippet (a thread part replies to the earlier parts); returns
        "<at-uri> <cid>" as the remote id and the post's bsky.app URL. Raises ChannelError."""
        snippet, rendered = delivery.snippet, delivery.rendered
        assert snippet is not None and rendered is not None, "a bluesky delivery carries a snippet"
        did = self._login()
        # Parts 2..n are keyed "<first part's key>:<n>" (pipeline.plan.social_key).
        thread = delivery.key.removesuffix(f":{delivery.part}") if delivery.part > 1 else None
        rkey = record_key(delivery.key, rendered.post.date, delivery.part, thread=thread)
        record = self._record(delivery, snippet, rendered.post)
        uri, cid = self._create(did, rkey, record)
        return Receipt(key=delivery.key, remote_id=f"{uri} {cid}",
                       url=f"https://bsky.app/profile/{self._handle}/post/{rkey}")

    def close(self) -> None:
        """Close the HTTP connections."""
        self.client.request.close()
        self.http.close()

    # Session

    def _on_session(self, event: SessionEvent, session: Session) -> None:
        # The public way to learn the account's DID (the repo) and its actual handle.
        self._did, self._handle = session.did, session.handle

    def _login(self) -> str:
        """The account's DID, logging in on first use (the client refreshes the session itself)."""
        with self._lock:
            if self._did is None:
                try:
                    self.client.login(self.settings.handle, self.settings.app_password.get_secret_value(),
                                      fetch_bsky_profile=False)
                except RequestErrorBase as exc:
                    raise self._refused(exc, login=True) from None
                except AtProtocolError as exc:
                    raise ChannelError(f"{SERVICE}: login failed: {type(exc).__name__}: {exc}",
                                       retryable=False, fatal=True) from None
            assert self._did is not None
            return self._did

    def _login_refused(self, detail: str) -> ChannelError:
        return ChannelError(f"{SERVICE}: login refused for {self.settings.handle}: check the app password "
                            f"(Bluesky: Settings > Privacy and security > App passwords) ({detail})",
                            retryable=False, fatal=True)

    # The record

    def _record(self, delivery: Delivery, snippet: Snippet, post: Post) -> dict[str, Any]:
        record: dict[str, Any] = {"$type": COLLECTION, "text": snippet.text, "createdAt": _now(),
                                  "langs": [self.language]}
        found = facets(snippet.text, snippet.link, snippet.tags)
        if found:
            record["facets"] = found
        if delivery.part <= 1:
            record["embed"] = self._card(post, snippet.link.uri if snippet.link else self._link(post))
        else:
            record["reply"] = {"root": _strong_ref(delivery.thread_root_remote, "first"),
                               "parent": _strong_ref(delivery.reply_to_remote, "previous")}
        return record

    def _link(self, post: Post) -> str:
        """The post's URL as this channel's snippets carry it (with UTM), for a thread's first
        part, whose text has no link (the last part has it)."""
        return tag_url(post.canonical_url, utm_params(self.config, self.name, post.slug, SOCIAL_MEDIUM),
                       self.config)

    def _card(self, post: Post, uri: str) -> dict[str, Any]:
        """The embed: the image with its alt text, or the link card (with the image as its
        thumbnail unless `image` is none)."""
        image = fetch_image(post, self.http) if post.image and self.image != "none" else None
        blob = self._blob(post, image) if image is not None else None
        if blob is not None and image is not None and self.image == "attach":
            return {"$type": "app.bsky.embed.images",
                    "images": [{"image": blob, "alt": image.alt or "",
                                "aspectRatio": {"width": image.width, "height": image.height}}]}
        external: dict[str, Any] = {"uri": uri, "title": post.title, "description": post.summary or ""}
        if blob is not None:
            external["thumb"] = blob
        return {"$type": "app.bsky.embed.external", "external": external}

    def _blob(self, post: Post, image: Image) -> dict[str, Any] | None:
        """The image fitted to the blob limit and uploaded (once per URL), or None (logged): a
        post without its image is better than no post."""
        with self._lock:
            if image.url in self._blobs:
                return self._blobs[image.url]
        try:
            fitted = fit(image, max_bytes=BLOB_MAX_BYTES, max_side=IMAGE_MAX_SIDE)
        except ValueError as exc:       # no size fits the blob limit
            log.warning("%s: %s: %s; posting without it", self.name, post.path, exc)
            return None
        try:
            blob = self.client.com.atproto.repo.upload_blob(fitted.data,
                                                            headers={"Content-Type": fitted.mime}).blob
        except AtProtocolError as exc:
            log.warning("%s: %s: uploading the image %s failed (%s); posting without it",
                        self.name, post.path, image.url, _describe(exc))
            return None
        with self._lock:
            self._blobs[image.url] = blob.model_dump(mode="json", by_alias=True)
            return self._blobs[image.url]

    # Creating it

    def _create(self, did: str, rkey: str, record: dict[str, Any]) -> tuple[str, str]:
        """(uri, cid) of the record created at `rkey`, or of the same post found already there."""
        try:
            data = models.ComAtprotoRepoCreateRecord.Data(repo=did, collection=COLLECTION, rkey=rkey,
                                                          record=record)
        except ValidationError as exc:
            raise ChannelError(f"{SERVICE}: the post is not a valid record: {exc}", retryable=False) from None
        try:
            answer = self.client.com.atproto.repo.create_record(data)
        except RequestErrorBase as exc:
            existing = self._existing(did, rkey, record["text"]) if _may_exist(exc) else None
            if existing is None:
                raise self._refused(exc) from None
            return existing
        except AtProtocolError as exc:
            # A 2xx whose body cannot be read: created, most likely; the retry finds the record.
            raise sent_but_unanswered(SERVICE, exc, idempotent=self.idempotent) from None
        return answer.uri, answer.cid

    def _existing(self, did: str, rkey: str, text: str) -> tuple[str, str] | None:
        """(uri, cid) of the record at `rkey` if it is this post (an earlier attempt that went
        through); None when there is none (or it cannot be read)."""
        try:
            found = self.client.com.atproto.repo.get_record(
                models.ComAtprotoRepoGetRecord.Params(repo=did, collection=COLLECTION, rkey=rkey))
        except AtProtocolError:
            return None
        if not found.cid:
            return None
        if getattr(found.value, "text", None) != text:
            # Another post holds this key (or this one was edited since): do not guess.
            raise ChannelError(f"{SERVICE}: a different post already exists at {found.uri}: check it, "
                               "then `pipeline retry --unknown`", retryable=False, unknown=True)
        log.info("%s: %s already exists (an earlier attempt went through)", self.name, found.uri)
        return found.uri, found.cid

    def _refused(self, exc: RequestErrorBase, *, login: bool = False) -> ChannelError:
        """The ChannelError for a failed XRPC call. A 401, or any 4xx but 429 to the login, means
        the credentials are refused: nothing can be posted, so the channel stops."""
        response = exc.response
        if response is None:
            return _unanswered(exc, self.settings.base_url)
        detail = _detail(response)
        status = response.status_code
        if status == 401 or (login and 400 <= status < 500 and status != 429):
            return self._login_refused(detail)
        return http_error(status, response.headers, detail, service=SERVICE,
                          credential="the app password")


def facets(text: str, link: Link | None, tags: Sequence[str]) -> list[dict[str, Any]]:
    """The richtext facets of `text`: the link (its shown text at `link.start:link.end`, in
    characters, pointing at `link.uri`) and each of `tags` (e.g. "#Ketamine") where it stands as
    a whole hashtag. Ranges are UTF-8 byte offsets, as app.bsky.richtext.facet requires."""
    found: list[dict[str, Any]] = []
    if link is not None:
        found.append(_facet(text, link.start, link.end, {"$type": LINK_FEATURE, "uri": link.uri}))
    for tag in dict.fromkeys(tags):
        pattern = regex.compile(rf"(?<![{_WORD}#]){regex.escape(tag)}(?![{_WORD}])")
        for m in pattern.finditer(text):
            if link is not None and m.start() < link.end and link.start < m.end():
                continue        # inside the link's text: not a hashtag
            found.append(_facet(text, m.start(), m.end(), {"$type": TAG_FEATURE, "tag": tag.lstrip("#")}))
    return sorted(found, key=lambda f: f["index"]["byteStart"])


def _facet(text: str, start: int, end: int, feature: dict[str, str]) -> dict[str, Any]:
    byte_start = len(text[:start].encode("utf-8"))
    byte_end = byte_start + len(text[start:end].encode("utf-8"))
    return {"index": {"byteStart": byte_start, "byteEnd": byte_end}, "features": [feature]}


def record_key(key: str, date: datetime, part: int, *, thread: str | None = None) -> str:
    """The deterministic rkey of a delivery: a TID whose clock id is the hash of `key` modulo
    1024, and whose timestamp is the post's date, plus a millisecond offset hashed from `thread`
    (the thread's first key; default `key`) so that posts of the same day rarely share a
    timestamp, plus the part number, so that a thread's parts sort in order."""
    micros = max(0, (date - _EPOCH) // timedelta(microseconds=1))
    offset = _hash(thread or key) % 1000 * 1000
    return tid(micros + offset + part, _hash(key) % 1024)


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest(), "big")


def tid(micros: int, clock_id: int) -> str:
    """A TID: 13 base32-sortable characters of (53-bit microseconds << 10 | 10-bit clock id)."""
    if not 0 <= micros < 2**53 or not 0 <= clock_id < 1024:
        raise ValueError("a TID needs 0 <= micros < 2**53 and 0 <= clock_id < 1024")
    value = micros << 10 | clock_id
    return "".join(TID_ALPHABET[(value >> shift) & 31] for shift in range(60, -5, -5))


def _strong_ref(remote_id: str | None, which: str) -> dict[str, str]:
    """{uri, cid} from the "<uri> <cid>" remote id a thread's earlier part recorded."""
    parts = (remote_id or "").split()
    if len(parts) != 2 or not parts[0].startswith("at://"):
        raise ChannelError(f"{SERVICE}: the thread's {which} part has no usable remote id "
                           f"({remote_id!r}); expected '<at-uri> <cid>'", retryable=False)
    return {"uri": parts[0], "cid": parts[1]}


def _may_exist(exc: RequestErrorBase) -> bool:
    """Whether a refused create may mean that the record is already there: the PDS answers a
    create on an existing key with a 500 (newer ones with an explicit error)."""
    response = exc.response
    if response is None:
        return False
    status = response.status_code
    return status == 409 or status >= 500 or (status == 400 and "exist" in _detail(response).lower())


def _unanswered(exc: RequestErrorBase, base_url: str) -> ChannelError:
    """No HTTP reply. A connection never opened sent nothing; anything later may have created the
    record, which the retry (same rkey) settles."""
    cause = exc.__cause__
    if isinstance(cause, httpx.ConnectError | httpx.ConnectTimeout):
        return ChannelError(f"{SERVICE}: cannot connect to {base_url} ({type(cause).__name__})",
                            retryable=True)
    if isinstance(exc, InvokeTimeoutError) or cause is not None:
        return sent_but_unanswered(SERVICE, cause or exc, idempotent=Bluesky.idempotent)
    return ChannelError(f"{SERVICE}: {_describe(exc)}", retryable=True)


def _detail(response: Response) -> str:
    """The XRPC error of a reply ("Error: message"), or its body."""
    content = response.content
    error = getattr(content, "error", None)
    if error:
        message = getattr(content, "message", None)
        return f"{error}: {message}" if message else str(error)
    if isinstance(content, bytes):
        return content.decode("utf-8", "replace")[:300]
    return str(content or f"HTTP {response.status_code}")[:300]


def _describe(exc: AtProtocolError) -> str:
    if isinstance(exc, RequestErrorBase) and exc.response is not None:
        return f"{exc.response.status_code} {_detail(exc.response)}"
    cause = exc.__cause__
    return f"{type(exc).__name__}" + (f" ({type(cause).__name__})" if cause else f": {exc}")


def _now() -> str:
    """The current time as atproto datetimes are written (UTC, milliseconds, Z)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
