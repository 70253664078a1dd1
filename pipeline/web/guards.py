"""The abuse controls of the forms `pipeline serve` takes from the open internet (sign-up, manage).

They guard against: robots filling in the sign-up form (a honeypot field, `website`, hidden with
CSS, that people leave empty and form-filling robots do not); floods of sign-ups from one network
or for one address (a sliding-window limit per client IP address, an IPv6 client by its /64
network, and per address, kept in this process's memory: each `serve` process counts its own);
bodies too large to hold in memory (a maximum body size, counted as the body arrives, and a cap
on form fields); and other sites posting the form from readers' browsers (the CORS
allow-list, `subscribe.allowed_origins`, default `site.url`: a browser may post the form from those
origins and from this server's own pages, and from nowhere else).
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from urllib.parse import urlsplit

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.types import Message

from pipeline.config import Config

HONEYPOT = "website"          # a field people never see; robots fill in every field
MAX_FIELDS = 50               # form fields in one sign-up: a handful of topics at most
WINDOW_SECONDS = 3600.0       # the rate limits are per hour
ALLOWED_HEADERS = frozenset({"content-type", "accept", "accept-language", "content-language"})


# -- rate limits --------------------------------------------------------------------------------

class SlidingWindow:
    """At most `limit` hits per key within any `period` seconds, counted in this process's memory.

    A refused hit is not counted, so `Retry-After` is exact: the time until the oldest counted
    hit leaves the window. At most `max_keys` keys are kept (those hit longest ago go first),
    so a flood of distinct keys costs bounded memory; it can only make the limit forget.
    """

    def __init__(self, limit: int, period: float = WINDOW_SECONDS, *, max_keys: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.period, self.max_keys, self.clock = limit, period, max_keys, clock
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def hit(self, key: str) -> float | None:
        """Count a hit for `key`; None if allowed, else the seconds until one would be."""
        now = self.clock()
        with self._lock:
            hits = self._hits.get(key)
            if hits is None:
                hits = self._hits[key] = deque()
            self._hits.move_to_end(key)
            while hits and hits[0] <= now - self.period:
                hits.popleft()
            if len(hits) >= self.limit:
                return hits[0] + self.period - now
            hits.append(now)
            while len(self._hits) > self.max_keys:
                self._hits.popitem(last=False)
            return None


def client_key(ip: str) -> str:
    """The rate limit's client: an IPv4 address, or an IPv6 address's /64 (one household or
    server gets a whole /64, so its single addresses would be free)."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if address.version == 6:
        mapped = address.ipv4_mapped    # type: ignore[union-attr]
        if mapped is not None:
            return str(mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


# -- reading the request ------------------------------------------------------------------------

class Refused(Exception):
    """A request answered with an error: `status` and a message for the person (or script)
    that sent it."""

    def __init__(self, status: int, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.retry_after = status, message, retry_after


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it exceeds `limit` bytes: by its declared
    Content-Length before reading anything, else as it arrives (chunked, or a length that lies)."""
    declared = request.headers.get("content-length")
    too_large = Refused(413, f"The request is larger than {limit} bytes.")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise too_large if declared.isdigit() else Refused(400, "Bad Content-Length.")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
    except ClientDisconnect:
        raise Refused(400, "The request ended before its body was complete.") from None
    return b"".join(chunks)


async def parse_form(request: Request, body: bytes) -> FormData:
    """A url-encoded or multipart form (no files) in `body`, parsed by Starlette's parsers."""

    async def replay() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        return await Request(request.scope, replay).form(max_files=0, max_fields=MAX_FIELDS)
    except HTTPException as exc:     # what Starlette makes of a malformed form
        raise Refused(400, f"The form could not be read: {exc.detail}") from None


def media_type(request: Request) -> str:
    """The request's Content-Type without its parameters, lower-cased ("" when it has none)."""
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()



def form_text(value: object, field: str) -> str:
    """A text field of a form or JSON body ("" when absent); refused (400) when it is not text."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise Refused(400, f"`{field}` must be text.")
    return value


# -- origins ------------------------------------------------------------------------------------

def origin_of(url: str) -> str:
    """`scheme://host[:port]` of a URL, lower-cased, without the scheme's default port: the form
    a browser's Origin header has."""
    parts = urlsplit(url.strip())
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        return ""
    default = {"http": 80, "https": 443}.get(scheme)
    return f"{scheme}://{host}" + (f":{port}" if port and port != default else "")


class Origins:
    """Who may post the sign-up form from a browser: the allowed origins (cross-origin, with
    CORS), and this server's own pages."""

    def __init__(self, config: Config) -> None:
        self.allowed = frozenset(origin_of(o) for o in config.cors_origins)
        self.own = origin_of(config.unsubscribe.base_url)

    def cors(self, request: Request) -> str | None:
        """The request's Origin when it is on the allow-list (it is echoed back), else None."""
        origin = request.headers.get("origin")
        return origin if origin and origin_of(origin) in self.allowed else None

    def is_own(self, request: Request) -> bool:
        """Whether the request comes from this server's own page (the hosted form). A page whose
        Referrer-Policy is `no-referrer` (this server's default) posts with `Origin: null`; then
        only `Sec-Fetch-Site: same-origin` tells."""
        origin = request.headers.get("origin")
        if origin is None or origin == "null":
            return request.headers.get("sec-fetch-site") == "same-origin"
        here = origin_of(f"{request.url.scheme}://{request.headers.get('host', '')}")
        return origin_of(origin) in (self.own, here)

    def may_post(self, request: Request) -> bool:
        """Whether a POST may change anything: from this server's own page, from an allowed
        origin, or from a client that is not a browser (no Origin, no Sec-Fetch-Site: CORS
        cannot bind it anyway). A browser names the page it posts from; any other is refused."""
        origin = request.headers.get("origin")
        if origin is None and request.headers.get("sec-fetch-site") in (None, "none"):
            return True
        return self.is_own(request) or (origin is not None and origin_of(origin) in self.allowed)


def cors_headers(origin: str | None) -> dict[str, str]:
    """The CORS headers of an answer: `origin` allowed when given (from `Origins.cors`), and
    `Vary: Origin` always, since the answer depends on it."""
    headers = {"Vary": "Origin"}
    if origin:
        headers["Access-Control-Allow-Origin"] = origin
    return headers
