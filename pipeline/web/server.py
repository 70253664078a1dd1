"""`pipeline serve`: the server readers and mail providers reach on the open internet.

`create_app` puts together the routes of each endpoint module (unsubscribe, sign-up, manage,
archive, ESP webhooks) over one `WebContext`, and /healthz, /readyz and /metrics (`pipeline.metrics`).
`build_server` is the uvicorn server `pipeline serve` runs, hardened for the open internet: every
response forbids framing, sniffing and Referer (the URL holds the token), the log names the
subscriber's uid instead of the token, and a request must arrive whole within a few seconds.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any

import h11
import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from pipeline.config import Config
from pipeline.metrics.collectors import registry_for
from pipeline.metrics.endpoints import routes as health_and_metrics
from pipeline.web import archive, esp_webhooks, manage, signup, unsubscribe
from pipeline.web.context import web_context

log = logging.getLogger(__name__)

# Seconds a client has to send a whole request (line, headers, body) from connecting or from the
# previous answer on the connection; mail providers' one-click POSTs take milliseconds.
REQUEST_TIMEOUT = 5.0
# On every response (errors too): the page shows an address and posts an unsubscribe, so no other
# site may frame it (clickjacking the button); its URL holds the token, so no Referer; it needs only
# its inline <style>, its form posting to itself, and (the archive's editions) images.
SECURITY_HEADERS = [
    ("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src https: http: data:; "
                                "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
]


def create_app(config: Config) -> Starlette:
    """The Starlette app of `pipeline serve`: unsubscribe, sign-up, confirm, manage, the edition
    archive and the ESP webhooks, each module giving its routes; /healthz, /readyz and /metrics."""
    ctx = web_context(config)
    routes = [*unsubscribe.routes(ctx), *signup.routes(ctx), *manage.routes(ctx), *archive.routes(ctx),
              *esp_webhooks.routes(ctx), *health_and_metrics(ctx.engine, registry_for(config, ctx.engine))]
    return Starlette(routes=routes, middleware=[Middleware(RequestLog)])


# All that follows /unsubscribe/ (or /confirm/, /manage/): the token, or what a client sent as one
# (a decoded %2F may have cut it in two); and anything shaped like a token (uid, dot, MAC)
# elsewhere in a path.
_TOKEN_IN_PATH = re.compile(r"(/(?:unsubscribe|confirm|manage)/).*", re.IGNORECASE | re.DOTALL)
_TOKEN_SHAPED = re.compile(r"[0-9a-f]{32}\.[0-9a-f]*", re.IGNORECASE)


class RequestLog:
    """ASGI middleware logging each request as uvicorn's access log would, less the token: what
    follows /unsubscribe/ becomes `<token of UID>` when it was a valid token (the endpoint puts the
    uid in the request's state), else `<token>`, and so does anything token-shaped elsewhere.
    uvicorn's own access log prints paths verbatim, and a token unsubscribes its holder, so
    `build_server` turns that one off. The query string is left out."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state: dict[str, Any] = scope.setdefault("state", {})     # the endpoint's request.state
        status = 500                # if the app fails before answering, the client gets a 500
        start = time.perf_counter()

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            uid = state.get("uid")
            path = _TOKEN_SHAPED.sub("<token>", _TOKEN_IN_PATH.sub(
                lambda m: m[1] + (f"<token of {uid}>" if uid else "<token>"), scope["path"]))
            client = scope.get("client")
            log.info('%s - "%s %s HTTP/%s" %d %.0fms', f"{client[0]}:{client[1]}" if client else "-",
                     scope["method"], _printable(path), scope["http_version"], status,
                     (time.perf_counter() - start) * 1000)


def _printable(text: str, limit: int = 300) -> str:
    """`text` with control characters escaped (a path could forge log lines), cut at `limit`."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[:limit] + "…"


class RequestDeadlineProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol (h11) with a deadline for receiving each request.

    uvicorn has no such deadline: `timeout_keep_alive` runs only between requests and stops at the
    first byte, so a client that sends half a request line, or one header byte a second, holds the
    connection (and, with a body, a task) for as long as it likes: slowloris. ASGI middleware
    cannot help, since the app is called only once the headers are in. Here the timer starts when
    the connection opens and again when an answer is complete, and closes the connection unless
    the whole request (line, headers, body) is in by then. It is absolute: more bytes do not extend
    it. It stops once the request is in, so a slow answer is never cut.
    """

    request_timeout: float = REQUEST_TIMEOUT
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_deadline()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state not in (h11.IDLE, h11.SEND_BODY):    # the request is in (or the end)
            self._stop_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._start_deadline()                  # for the rest of the body, or the next request

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_deadline()
        super().connection_lost(exc)

    def _start_deadline(self) -> None:
        self._stop_deadline()
        if self.conn.their_state in (h11.IDLE, h11.SEND_BODY) and not self.transport.is_closing():
            self._deadline = self.loop.call_later(self.request_timeout, self._expired)

    def _stop_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
            log.info("closing the connection of %s: no whole request within %gs", client,
                     self.request_timeout)
            self.transport.close()


def build_server(config: Config, *, host: str = "127.0.0.1", port: int = 8080,
                 request_timeout: float = REQUEST_TIMEOUT) -> uvicorn.Server:
    """The uvicorn server `pipeline serve` runs: create_app(config) on host:port, with
    SECURITY_HEADERS on every response (uvicorn's `headers`, so its own error answers have them
    too), uvicorn's access log off (RequestLog logs requests without tokens), no WebSockets, and a
    `request_timeout` deadline for each request to arrive (RequestDeadlineProtocol)."""
    protocol = type("RequestDeadlineProtocol", (RequestDeadlineProtocol,),
                    {"request_timeout": request_timeout})
    return uvicorn.Server(uvicorn.Config(
        create_app(config), host=host, port=port, log_level="info", access_log=False,
        http=protocol, ws="none", headers=SECURITY_HEADERS))
