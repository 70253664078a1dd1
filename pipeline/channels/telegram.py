"""Telegram: a bot posts each snippet to a channel (or group) with the Bot API: `sendMessage`, or
`sendPhoto` when the post's image is attached.

The text is the Telegram snippet written as HTML (`parse_mode: HTML`): the snippet HTML-escaped
and its link an `<a href>`. Telegram counts a message's 4,096 characters (a caption's 1,024) in
UTF-16 units after the markup is parsed, that is, the snippet as the `telegram` network counts
it. A message shows the link's preview (`link_preview_options`, the post's link); with
`image: none` it shows none. With `image: attach` (the default) and a post image, the image is
fetched once (`channels/images.py`), fitted to sendPhoto's 10 MB, and uploaded with the snippet as
its caption: a snippet longer than a caption's 1,024 is rendered again for that limit (cut by the
same rules as every snippet). An image that cannot be fetched, or a post whose `social.telegram`
override is longer than a caption, goes out as a message. Telegram has no alt text for a photo:
the post's `image_alt` is not sent (the caption is what the photo says). A thread's parts 2..n
reply to the part before; only a single post (or a thread's first part) carries the photo.

The bot token is part of every request's path (`/bot<token>/sendMessage`): it is kept out of the
logs (httpx's INFO line names each request's URL: a filter redacts it while the channel is open),
of error messages and of the ledger. The receipt is the message_id, with its t.me link when the
channel is public (it has a username).

Error rules (`{"ok": false, "error_code", "description", "parameters"}`): 429 waits
`parameters.retry_after`; 5xx and a connection that could not be opened are retried; a token
Telegram does not know (401, 404), a chat it cannot find (400 "chat not found", or a group that
became a supergroup) and a bot that may not post there (403) stop the channel with what to fix;
any other 400 fails with Telegram's description. The Bot API has no idempotency key: once a
request went out without an answer the delivery is unknown (crash rule `unknown`).
"""

from __future__ import annotations

import html
import json
import logging
from typing import Annotated, Any, ClassVar

import httpx
from pydantic import Field, SecretStr, field_validator

from pipeline.channels.base import require_network
from pipeline.channels.http import HttpSettings, post, reset_after
from pipeline.channels.images import Image, ImageMode, fetch_image, fit
from pipeline.config import Config
from pipeline.errors import ChannelError, RenderError
from pipeline.fields import http_url
from pipeline.models import Delivery, Receipt, Snippet
from pipeline.networks.telegram import CAPTION_LIMIT

log = logging.getLogger(__name__)

SERVICE = "telegram"
PHOTO_MAX_BYTES = 10 * 1024 * 1024     # sendPhoto: "The photo must be at most 10 MB in size"
PHOTO_MAX_SIDE = 5000                  # "width and height must not exceed 10000 in total"
REDACTED = "bot<token>"
TOKEN_HELP = ("the bot token (bot_token) is not one Telegram knows: copy it again from @BotFather "
              "(/token) and update the environment")


class TelegramSettings(HttpSettings):
    """`channels.<name>:` keys of a `type: telegram` channel."""

    base_url: Annotated[str, http_url("https://api.telegram.org")] = "https://api.telegram.org"
    bot_token: SecretStr
    # A public channel's @username, or a chat's numeric id (-100… for a channel or supergroup).
    chat_id: Annotated[str, Field(pattern=r"^(@[A-Za-z][A-Za-z0-9_]{4,31}|-?\d{1,20})$")]
    image: ImageMode | None = None               # None: attach

    @field_validator("chat_id", mode="before")
    @classmethod
    def _text(cls, v: object) -> object:
        # YAML reads `chat_id: -1001234` as a number.
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("bot_token")
    @classmethod
    def _shape(cls, v: SecretStr) -> SecretStr:
        # The message never repeats the value: it is a secret.
        number, colon, rest = v.get_secret_value().partition(":")
        if not (number.isdigit() and colon and rest and all(c.isalnum() or c in "_-" for c in rest)):
            raise ValueError("must be a bot token as @BotFather gives it (digits, a colon, then letters, "
                             "digits, _ and -)")
        return v


class _RedactToken(logging.Filter):
    """Replaces the bot token in the records of the "httpx" logger (its INFO line names every
    request's URL, the token included)."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(str(a), self.token) if self.token in str(a) else a
                                for a in record.args)
        if isinstance(record.msg, str) and self.token in record.msg:
            record.msg = redact(record.msg, self.token)
        return True


def redact(text: str, token: str) -> str:
    """`text` with the bot token (and the `bot<token>` path segment) replaced."""
    return text.replace(f"bot{token}", REDACTED).replace(token, "<token>")


class Telegram:
    """Posts snippets to a Telegram chat through a bot: messages, or photos with a caption."""

    type: ClassVar[str] = "telegram"
    kinds: ClassVar[frozenset[str]] = frozenset({"social"})
    crash_rule: ClassVar[str] = "unknown"
    idempotent: ClassVar[bool] = False
    network: ClassVar[str] = "telegram"
    Settings = TelegramSettings

    def __init__(self, *, name: str, settings: TelegramSettings, config: Config) -> None:
        self.name = name
        self.settings = settings
        self.config = config
        self.concurrency = 1
        require_network(config, name, self.network)
        self.image: ImageMode = settings.image or "attach"
        self._token = settings.bot_token.get_secret_value()
        self._filter = _RedactToken(self._token)
        logging.getLogger("httpx").addFilter(self._filter)
        self.client = httpx.Client(timeout=settings.timeout, follow_redirects=False)

    def send(self, delivery: Delivery) -> Receipt:
        """Send one snippet as a message, or as a photo's caption; returns the message id and, for
        a public channel, its t.me link. Raises ChannelError."""
        snippet = delivery.snippet
        assert snippet is not None and delivery.rendered is not None, "a telegram delivery carries a snippet"
        base: dict[str, Any] = {"chat_id": self.settings.chat_id, "parse_mode": "HTML"}
        if delivery.part > 1 and delivery.reply_to_remote:
            base["reply_parameters"] = {"message_id": int(delivery.reply_to_remote),
                                        "allow_sending_without_reply": True}
        photo = self._photo(delivery) if self.image == "attach" and delivery.part <= 1 else None
        if photo is not None:
            image, caption = photo
            fields = {**base, "caption": html_text(caption)}
            if "reply_parameters" in fields:
                fields["reply_parameters"] = _json_field(fields["reply_parameters"])
            reply = self._call("sendPhoto", data={k: str(v) for k, v in fields.items()},
                               files={"photo": (_file_name(image.mime), image.data, image.mime)})
        else:
            preview = ({"is_disabled": True} if self.image == "none" or snippet.link is None
                       else {"is_disabled": False, "url": snippet.link.uri})
            reply = self._call("sendMessage", json={**base, "text": html_text(snippet),
                                                    "link_preview_options": preview})
        return self._receipt(delivery, reply)

    def _photo(self, delivery: Delivery) -> tuple[Image, Snippet] | None:
        """(the image fitted for sendPhoto, the caption's snippet), or None: send a message."""
        assert delivery.rendered is not None and delivery.snippet is not None
        post = delivery.rendered.post
        if not post.image:
            return None
        try:
            caption = self._caption(delivery)
        except RenderError as exc:
            log.warning("%s: %s: %s; sending a message without the image", self.name, post.slug, exc)
            return None
        image = fetch_image(post)      # only once the caption is known to fit: no download for nothing
        if image is None:
            return None
        try:
            fitted = fit(image, max_bytes=PHOTO_MAX_BYTES, max_side=PHOTO_MAX_SIDE)
        except ValueError as exc:
            log.warning("%s: %s: %s; sending a message without the image", self.name, post.slug, exc)
            return None
        return fitted, caption

    def _caption(self, delivery: Delivery) -> Snippet:
        """The snippet, or when it is longer than a caption, the snippet rendered again for a
        caption's 1,024 (with this channel's link tagging). Raises RenderError for an override
        longer than that, and for a thread's first part longer than that (cut again as a whole
        post's snippet it would repeat the title and the link, and the second part would no longer
        go on from where it ends)."""
        snippet = delivery.snippet
        assert snippet is not None and delivery.rendered is not None
        if snippet.length <= CAPTION_LIMIT:
            return snippet
        if delivery.part >= 1:
            raise RenderError(f"the thread's first part is {snippet.length} long, longer than a photo's "
                              f"caption ({CAPTION_LIMIT})")
        from pipeline.render.social import snippet as render_snippet

        return render_snippet(delivery.rendered.post, self.network, self.config, channel=self.name,
                              limit=CAPTION_LIMIT)

    def _call(self, method: str, **kwargs: Any) -> dict[str, Any]:
        """POST a Bot API method; its `result`, else the ChannelError of the failure. No message
        carries the URL: it holds the token."""
        url = f"{self.settings.base_url}/bot{self._token}/{method}"
        response = post(self.client, url, service=SERVICE, shown=self.settings.base_url, idempotent=False,
                        check="base_url", **kwargs)
        body = _body(response)
        if response.is_success and body.get("ok") is True and isinstance(body.get("result"), dict):
            return body["result"]
        if response.is_success:
            raise ChannelError(f"{SERVICE}: {method}: an answer without a message; it may have been "
                               "posted: check the channel, then `pipeline retry --unknown`",
                               retryable=False, unknown=True)
        raise self._error(method, response, body)

    def _error(self, method: str, response: httpx.Response, body: dict[str, Any]) -> ChannelError:
        """The ChannelError for an `ok: false` reply."""
        code = body.get("error_code") if isinstance(body.get("error_code"), int) else response.status_code
        described = str(body.get("description") or response.text or response.reason_phrase)
        detail = " ".join(redact(described, self._token).split())[:300]
        parameters = body.get("parameters") if isinstance(body.get("parameters"), dict) else {}
        where = f"{SERVICE}: {method}: {code}"
        chat = self.settings.chat_id
        if code == 429:
            wait = parameters.get("retry_after")
            wait = float(wait) if isinstance(wait, int | float) else reset_after(response.headers)
            wait = 30.0 if wait is None else wait
            return ChannelError(f"{where}: rate limited; retry after {wait:.0f} s ({detail})",
                                retryable=True, retry_after=wait)
        if code >= 500:
            return ChannelError(f"{where}: server error: {detail}", retryable=True)
        if code in (401, 404):
            return ChannelError(f"{where}: {TOKEN_HELP} ({detail})", retryable=False, fatal=True)
        if code == 403:
            return ChannelError(f"{where}: the bot may not post in {chat}: add it to the channel as an "
                                f"administrator allowed to post messages ({detail})", retryable=False,
                                fatal=True)
        if "migrate_to_chat_id" in parameters:
            return ChannelError(f"{where}: the group {chat} became a supergroup: set chat_id to "
                                f"{parameters['migrate_to_chat_id']} ({detail})", retryable=False, fatal=True)
        if "chat not found" in detail.lower():
            return ChannelError(f"{where}: Telegram finds no chat {chat}: set chat_id to the public "
                                "channel's @username or the chat's numeric id, and add the bot to it "
                                f"({detail})", retryable=False, fatal=True)
        return ChannelError(f"{where}: {detail}", retryable=False)

    def _receipt(self, delivery: Delivery, result: dict[str, Any]) -> Receipt:
        """The message id and, for a public channel (one with a username), its t.me link."""
        message_id = result.get("message_id")
        if not isinstance(message_id, int):
            raise ChannelError(f"{SERVICE}: the answer carries no message_id; it may have been "
                               "posted: check the channel, then `pipeline retry --unknown`",
                               retryable=False, unknown=True)
        chat = result.get("chat") if isinstance(result.get("chat"), dict) else {}
        username = chat.get("username")
        url = f"https://t.me/{username}/{message_id}" if isinstance(username, str) and username else None
        return Receipt(key=delivery.key, remote_id=str(message_id), url=url,
                       detail="photo" if "photo" in result else "message")

    def close(self) -> None:
        """Close the connection pool and stop redacting httpx's log."""
        self.client.close()
        logging.getLogger("httpx").removeFilter(self._filter)


def html_text(snippet: Snippet) -> str:
    """The snippet as Telegram HTML: `<`, `>` and `&` escaped, the link an `<a href>` around its
    text. What Telegram shows (and counts) is the snippet's text itself."""
    text, link = snippet.text, snippet.link
    if link is None or not 0 <= link.start < link.end <= len(text):
        return html.escape(text, quote=False)
    anchor = html.escape(link.uri, quote=True)
    return (html.escape(text[:link.start], quote=False) + f'<a href="{anchor}">'
            + html.escape(text[link.start:link.end], quote=False) + "</a>"
            + html.escape(text[link.end:], quote=False))


def _body(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _json_field(value: object) -> str:
    """A multipart field that the Bot API reads as JSON (an object in a form upload)."""
    return json.dumps(value, separators=(",", ":"))


def _file_name(mime: str) -> str:
    return "image." + {"image/png": "png", "image/webp": "webp", "image/gif": "gif"}.get(mime, "jpg")
