"""LinkedIn: posts each snippet as a member (`urn:li:person:…`) or an organization page
(`urn:li:organization:…`) with the Posts API (`POST /rest/posts`), the article attached as an
article share.

Every request carries `LinkedIn-Version` (the `version` setting, YYYYMM: LinkedIn serves each
version about a year, then answers 426) and `X-Restli-Protocol-Version: 2.0.0`, and the access
token as a bearer token (scope `w_member_social`, or `w_organization_social` for a page).

The commentary is the `linkedin` snippet written in LinkedIn's "little" text format
(learn.microsoft.com/linkedin/marketing/community-management/shares/little-text-format): every
reserved character, `\\ | { } @ [ ] ( ) < > # * _ ~`, is escaped with a backslash ("even if those
characters are not used in one of the supported elements"; unescaped, LinkedIn cuts the post at
the first one), and each of the snippet's hashtags becomes a HashtagTemplate, `{hashtag|\\#|tag}`.
LinkedIn counts the 3,000 characters of the text as shown, the `linkedin` network's count.

`image:` says what goes with the text. `card` (the default): an article share
(`content.article`: the post's tagged link, title, summary, and its image as the thumbnail,
uploaded through the Images API: `POST /rest/images?action=initializeUpload`, then the bytes PUT
to the `uploadUrl` it returns). The article schema has no alt text for its thumbnail, so the
post's `image_alt` cannot go with it. `attach`: an image post (`content.media`) with the image and
its `image_alt` as `altText`; the link stays in the text. `none`: the article share without a
thumbnail. An image that cannot be fetched or uploaded is left out, with a warning: the post goes
out without it. The token is sent to LinkedIn's hosts only (the `base_url` host or
*.linkedin.com): an upload URL elsewhere is refused, never followed.

The receipt is the post's URN (`x-restli-id` header), with its feed URL.

Error rules: 429 waits for the reset (or leaves the delivery pending beyond `max_wait`); 5xx and a
connection that could not be opened are retried; 401/403 fail with what to fix; 426 names the
`version` to set; other 4xx fail with LinkedIn's message. LinkedIn has no idempotency key: once a
request went out without an answer the delivery is unknown, never resent blindly (crash rule
`unknown`). LinkedIn has no threads: a post that asks for one (`social.thread: true`) fails here
before anything is posted, with what to change.
"""

from __future__ import annotations

import logging
import re
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

import httpx
import regex
from pydantic import Field, SecretStr, field_validator

from pipeline.channels.base import require_network
from pipeline.channels.http import MAYBE_SENT, NOT_SENT, HttpSettings, http_error, post_json
from pipeline.channels.images import Image, ImageMode, fetch_image, fit
from pipeline.config import Config
from pipeline.errors import ChannelError, ConfigError
from pipeline.fields import http_url
from pipeline.models import Delivery, Receipt, Snippet

log = logging.getLogger(__name__)

SERVICE = "linkedin"
CREDENTIAL = ("the access token (access_token; a LinkedIn app's OAuth token with w_member_social, "
              "or w_organization_social for a page)")
DEFAULT_VERSION = "202610"
FEED_URL = "https://www.linkedin.com/feed/update/{urn}/"
# The Images API takes JPEG, PNG and GIF of at most 36,152,320 pixels.
IMAGE_MIMES = frozenset({"image/jpeg", "image/png", "image/gif"})
IMAGE_MAX_BYTES = 8 * 1024 * 1024
IMAGE_MAX_SIDE = 6000
DESCRIPTION_MAX = 4000        # characters of the article card's description that are kept
# The little format's reserved characters, each escaped with a backslash.
_RESERVED = re.compile(r"([\\|{}@\[\]()<>#*_~])")
# A hashtag: "#" at a word's start, then letters, marks, digits and "_", with a letter among them.
_HASHTAG = regex.compile(r"(?<!\S)#([\p{L}\p{M}\p{N}_]*\p{L}[\p{L}\p{M}\p{N}_]*)")
AUTHOR = re.compile(r"^urn:li:(person:[A-Za-z0-9_-]{1,100}|organization:\d{1,20})$")


class LinkedInSettings(HttpSettings):
    """`channels.<name>:` keys of a `type: linkedin` channel."""

    base_url: Annotated[str, http_url("https://api.linkedin.com")] = "https://api.linkedin.com"
    # Who posts: a member (urn:li:person:<id>) or an organization page (urn:li:organization:<number>).
    author: str
    access_token: SecretStr
    version: Annotated[str, Field(pattern=r"^20\d\d(0[1-9]|1[0-2])$")] = DEFAULT_VERSION   # YYYYMM
    visibility: Literal["PUBLIC", "CONNECTIONS", "LOGGED_IN"] = "PUBLIC"
    image: ImageMode | None = None               # None: card (the article share with its thumbnail)

    @field_validator("author")
    @classmethod
    def _urn(cls, v: str) -> str:
        if not AUTHOR.match(v):
            raise ValueError("must be a member's URN, urn:li:person:<id>, or a page's, "
                             "urn:li:organization:<number>")
        return v


class LinkedIn:
    """Posts snippets to LinkedIn with the Posts API (one httpx client)."""

    type: ClassVar[str] = "linkedin"
    kinds: ClassVar[frozenset[str]] = frozenset({"social"})
    crash_rule: ClassVar[str] = "unknown"
    idempotent: ClassVar[bool] = False
    network: ClassVar[str] = "linkedin"
    Settings = LinkedInSettings

    def __init__(self, *, name: str, settings: LinkedInSettings, config: Config) -> None:
        self.name = name
        self.settings = settings
        self.concurrency = 1
        require_network(config, name, self.network)
        if settings.visibility == "CONNECTIONS" and settings.author.startswith("urn:li:organization:"):
            raise ConfigError(f"{config.where('channels', name, 'visibility')}: an organization's post "
                              "cannot be for CONNECTIONS only; use PUBLIC or LOGGED_IN")
        self.image: ImageMode = settings.image or "card"
        self._uploaded: dict[str, str] = {}        # image URL -> its URN: a retry uploads it once
        self.client = httpx.Client(
            timeout=settings.timeout, follow_redirects=False,
            headers={"Authorization": f"Bearer {settings.access_token.get_secret_value()}",
                     "LinkedIn-Version": settings.version, "X-Restli-Protocol-Version": "2.0.0"})

    def send(self, delivery: Delivery) -> Receipt:
        """Create the post of one snippet; returns its URN and feed URL. Raises ChannelError."""
        snippet = delivery.snippet
        assert snippet is not None and delivery.rendered is not None, "a linkedin delivery carries a snippet"
        if delivery.part > 0:
            raise ChannelError(f"{SERVICE}: LinkedIn has no threads; this post asks for one "
                               "(`social.thread: true`): remove it to post a single snippet here",
                               retryable=False)
        image = self._image(delivery) if self.image != "none" else None
        response = post_json(self.client, f"{self.settings.base_url}/rest/posts",
                             self.post(delivery, image), service=SERVICE, shown=self.settings.base_url,
                             idempotent=self.idempotent, check="base_url")
        if not response.is_success:
            raise self._error(response)
        urn = response.headers.get("x-restli-id")
        if not urn:
            raise ChannelError(f"{SERVICE}: the reply carries no post id (x-restli-id); it may have "
                               "been posted: check the page, then `pipeline retry --unknown`",
                               retryable=False, unknown=True)
        return Receipt(key=delivery.key, remote_id=urn, url=FEED_URL.format(urn=urn),
                       detail=f"{response.status_code} {urn}")

    def post(self, delivery: Delivery, image: str | None) -> dict[str, Any]:
        """The Posts API request body; `image`: the uploaded image's URN."""
        snippet, rendered = delivery.snippet, delivery.rendered
        assert snippet is not None and rendered is not None
        body: dict[str, Any] = {
            "author": self.settings.author,
            "commentary": commentary(snippet),
            "visibility": self.settings.visibility,
            "distribution": {"feedDistribution": "MAIN_FEED", "targetEntities": [],
                             "thirdPartyDistributionChannels": []},
            "lifecycleState": "PUBLISHED",
            "isReshareDisabledByAuthor": False,
        }
        post = rendered.post
        if self.image == "attach" and image is not None:
            media = {"id": image, **({"altText": post.image_alt} if post.image_alt else {})}
            body["content"] = {"media": media}
            return body
        article: dict[str, Any] = {"source": snippet.link.uri if snippet.link else post.canonical_url,
                                   "title": post.title}
        if post.summary:
            article["description"] = post.summary[:DESCRIPTION_MAX]
        if image is not None:
            article["thumbnail"] = image
        body["content"] = {"article": article}
        return body

    def _image(self, delivery: Delivery) -> str | None:
        """The post's image uploaded through the Images API: its URN; None (warning logged) when
        it has none or it cannot be fetched or uploaded."""
        assert delivery.rendered is not None
        fetched = fetch_image(delivery.rendered.post)      # its own client: never our token
        if fetched is None:
            return None
        if fetched.url in self._uploaded:
            return self._uploaded[fetched.url]
        try:
            fitted = fit(fetched, max_bytes=IMAGE_MAX_BYTES, max_side=IMAGE_MAX_SIDE, mimes=IMAGE_MIMES)
            self._uploaded[fetched.url] = self._upload(fitted)
            return self._uploaded[fetched.url]
        except (ChannelError, ValueError) as exc:       # ValueError: fit found no size that fits
            log.warning("%s: %s: posting without the image: %s", self.name, delivery.edition, exc)
            return None

    def _upload(self, image: Image) -> str:
        """Register an upload, PUT the bytes; the image's URN. Raises ChannelError."""
        response = post_json(self.client, f"{self.settings.base_url}/rest/images?action=initializeUpload",
                             {"initializeUploadRequest": {"owner": self.settings.author}},
                             service=SERVICE, shown=self.settings.base_url, idempotent=True,
                             check="base_url")
        if not response.is_success:
            raise self._error(response)
        try:
            value = response.json()["value"]
            upload_url, urn = str(value["uploadUrl"]), str(value["image"])
        except (ValueError, KeyError, TypeError):
            raise ChannelError(f"{SERVICE}: initializeUpload answered without an uploadUrl and image",
                               retryable=False) from None
        if not self._ours(upload_url):
            raise ChannelError(f"{SERVICE}: the upload URL's host ({urlsplit(upload_url).hostname}) is "
                               "not LinkedIn's; the token is not sent there", retryable=False)
        try:
            put = self.client.put(upload_url, content=image.data, headers={"Content-Type": image.mime})
        except (*NOT_SENT, *MAYBE_SENT) as exc:
            raise ChannelError(f"{SERVICE}: the image upload failed ({type(exc).__name__})",
                               retryable=False) from None
        if not put.is_success:
            raise ChannelError(f"{SERVICE}: the image upload answered {put.status_code}", retryable=False)
        return urn

    def _ours(self, url: str) -> bool:
        """Whether `url` is on LinkedIn (or the configured API host): where the token may go."""
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        api = (urlsplit(self.settings.base_url).hostname or "").lower()
        return parts.scheme == "https" and (host == api or host == "linkedin.com"
                                            or host.endswith(".linkedin.com"))

    def _error(self, response: httpx.Response) -> ChannelError:
        # A reply that echoes the token (a proxy's error page...) must not carry it into the ledger.
        detail = _detail(response).replace(self.settings.access_token.get_secret_value(), "<token>")
        if response.status_code == 426:
            return ChannelError(f"{SERVICE}: 426: LinkedIn no longer serves version {self.settings.version} "
                                f"({detail}); set channels.{self.name}.version to a recent YYYYMM",
                                retryable=False, fatal=True)
        return http_error(response.status_code, response.headers, detail, service=SERVICE,
                          credential=CREDENTIAL)

    def close(self) -> None:
        """Close the connection pool."""
        self.client.close()


def escape(text: str) -> str:
    """`text` as plain text in LinkedIn's little format: each reserved character backslashed."""
    return _RESERVED.sub(r"\\\1", text)


def commentary(snippet: Snippet) -> str:
    """The snippet's text in the little format: escaped, and each hashtag (`#` and a word with a
    letter, standing at a word's start: "#MentalHealth", not "C#" or "#1") a HashtagTemplate, as
    LinkedIn's composer makes one of what is typed."""
    out, last = [], 0
    for m in _HASHTAG.finditer(snippet.text):
        out += [escape(snippet.text[last:m.start()]), "{hashtag|\\#|" + escape(m.group(1)) + "}"]
        last = m.end()
    out.append(escape(snippet.text[last:]))
    return "".join(out)


def _detail(response: httpx.Response) -> str:
    """LinkedIn's error message (`{"message": …, "status": …}`), else the body's text."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return response.text or response.reason_phrase
