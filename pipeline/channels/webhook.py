"""Webhook: POSTs each snippet of one network as JSON to a URL: a Slack or Discord incoming
webhook, or any endpoint that takes the pipeline's own JSON (`preset: json`).

The URL is a secret (whoever knows it can post): it is never logged, never put in an error
message, and never recorded in the ledger. httpx's own request log line shows it redacted.

Error rules: 2xx is sent; a 429 waits for Retry-After; 5xx and a connection that could not be
opened are retried; other replies fail with the endpoint's message. A webhook is not idempotent:
once the request went out without an answer, the delivery is marked unknown.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

import httpx
from pydantic import Field, SecretStr, field_validator

from pipeline.channels.base import require_network
from pipeline.channels.http import HttpSettings, http_error, post_json
from pipeline.config import Config
from pipeline.errors import ChannelError
from pipeline.models import Delivery, Receipt
from pipeline.networks.registry import NETWORKS

log = logging.getLogger(__name__)

SERVICE = "webhook"
DISCORD_LIMIT = 2000          # characters in a Discord message's `content`
REQUEST_ID_HEADER = "x-request-id"


class WebhookSettings(HttpSettings):
    """`channels.<name>:` keys of a `type: webhook` channel."""

    url: SecretStr
    preset: Literal["slack", "discord", "json"] = "json"
    network: str = "mastodon"                 # whose snippet is sent
    headers: dict[str, str] = Field(default_factory=dict)   # extra request headers (may hold a token)

    @field_validator("url")
    @classmethod
    def _absolute(cls, v: SecretStr) -> SecretStr:
        # The message never repeats the value: it is a secret.
        parts = urlsplit(v.get_secret_value())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an absolute http(s) URL (the webhook's URL)")
        return v

    @field_validator("network")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in NETWORKS:
            raise ValueError(f"unknown network {v!r}; known: {', '.join(NETWORKS)}")
        return v


class _RedactUrl(logging.Filter):
    """Replaces the webhook URL in the "httpx" logger's records (its INFO line names every
    request's URL) with a redacted form."""

    def __init__(self, secret: str, shown: str) -> None:
        super().__init__()
        # httpx logs its normalized URL, which may differ from the configured spelling.
        self.secrets = {secret, str(httpx.URL(secret))}
        self.shown = shown

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(self.shown if self._secret(str(a)) else a for a in record.args)
        if isinstance(record.msg, str) and self._secret(record.msg):
            for secret in self.secrets:
                record.msg = record.msg.replace(secret, self.shown)
        return True

    def _secret(self, text: str) -> bool:
        return any(secret in text for secret in self.secrets)


class Webhook:
    """POSTs one network's snippets as JSON: `slack` -> {"text"}, `discord` -> {"content"},
    `json` -> the post's fields, the network, the text, the link and the thread part."""

    type: ClassVar[str] = "webhook"
    kinds: ClassVar[frozenset[str]] = frozenset({"social"})
    crash_rule: ClassVar[str] = "unknown"
    idempotent: ClassVar[bool] = False
    Settings = WebhookSettings

    def __init__(self, *, name: str, settings: WebhookSettings, config: Config) -> None:
        self.name = name
        self.settings = settings
        self.concurrency = 1
        self.network = settings.network
        require_network(config, name, settings.network, key="network")
        self._url = settings.url.get_secret_value()
        self._shown = _redacted(self._url)
        self._filter = _RedactUrl(self._url, self._shown)
        logging.getLogger("httpx").addFilter(self._filter)
        self.client = httpx.Client(timeout=settings.timeout, headers=settings.headers,
                                   follow_redirects=False)

    def send(self, delivery: Delivery) -> Receipt:
        """POST one snippet; returns the id the endpoint gave back, if any. Raises ChannelError."""
        payload = self._payload(delivery)
        response = post_json(self.client, self._url, payload, service=SERVICE, shown=self._shown,
                             idempotent=self.idempotent, check="the url")
        if not response.is_success:
            raise self._refused(response)
        return Receipt(key=delivery.key, remote_id=_remote_id(response), url=None,
                       detail=f"{response.status_code} {response.reason_phrase}")

    def _payload(self, delivery: Delivery) -> dict[str, Any]:
        """The JSON body of the configured preset."""
        snippet = delivery.snippet
        assert snippet is not None, "a webhook delivery carries a snippet"
        preset = self.settings.preset
        if preset == "slack":
            return {"text": snippet.text}
        if preset == "discord":
            if len(snippet.text) > DISCORD_LIMIT:
                raise ChannelError(f"{SERVICE}: the {snippet.network} text is {len(snippet.text)} "
                                   f"characters; Discord takes at most {DISCORD_LIMIT}: set this "
                                   "channel's `network` to one with a lower limit, or lower "
                                   f"networks.{snippet.network}.limit", retryable=False)
            return {"content": snippet.text}
        assert delivery.rendered is not None, "a webhook delivery carries its rendered post"
        post = delivery.rendered.post
        return {"post": {"slug": post.slug, "title": post.title, "canonical_url": post.canonical_url,
                         "summary": post.summary},
                "network": snippet.network, "text": snippet.text,
                "link": snippet.link.uri if snippet.link else None, "part": delivery.part}

    def _refused(self, response: httpx.Response) -> ChannelError:
        """The ChannelError for an error reply; the endpoint's message is shown redacted."""
        status, detail = response.status_code, self._redact(response.text)
        if status in (404, 410):
            # Slack and Discord answer so for a deleted (or mistyped) webhook: a retry cannot help.
            detail = " ".join(detail.split())[:300]
            return ChannelError(f"{SERVICE}: {status}: the endpoint does not know this webhook URL "
                                "(deleted or mistyped?): create a new webhook and update the "
                                f"environment ({detail})", retryable=False)
        return http_error(status, response.headers, detail, service=SERVICE,
                          credential="the webhook URL")

    def _redact(self, text: str) -> str:
        """`text` with the URL (and its secret path and query) replaced: a reply may echo it."""
        parts = urlsplit(self._url)
        text = text.replace(self._url, self._shown)
        for secret in (parts.path, parts.query):
            if len(secret) > 1:
                text = text.replace(secret, "…")
        return text

    def close(self) -> None:
        """Close the connection pool and stop redacting httpx's log."""
        self.client.close()
        logging.getLogger("httpx").removeFilter(self._filter)


def _redacted(url: str) -> str:
    """The URL as it may be shown: scheme and host only."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}/…"


def _remote_id(response: httpx.Response) -> str | None:
    """An id the endpoint gave back: the JSON body's `id` (Discord with `?wait=true`, most custom
    endpoints), else an X-Request-Id header; Slack and plain Discord give none."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("id"), str | int) and body["id"] != "":
        return str(body["id"])
    return response.headers.get(REQUEST_ID_HEADER) or None
