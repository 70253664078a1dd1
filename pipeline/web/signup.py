"""Sign-up with double opt-in for `pipeline serve`: the form, the confirmation link, the manage page.

`GET /subscribe` is a small sign-up page; `POST /subscribe` takes its form (or the snippet that
`pipeline subscribe-form` prints for the blog, or JSON) and answers the same way whatever the
list holds: a new or still-pending address gets a confirmation email, sent afterwards on a
thread of its own, so neither the answer nor its timing tells whether an address is on the list.
`GET /confirm/TOKEN` shows a button and `POST /confirm/TOKEN` confirms (link scanners follow
GETs). `/manage/TOKEN` takes the token of the unsubscribe link: name, topics, unsubscribe and
subscribe again.

Abuse controls on `POST /subscribe`: a honeypot field (`website`, hidden with CSS) that people
leave empty and form-filling robots do not; a sliding-window limit per client IP address (an IPv6
client by its /64 network) and per address, kept in this process's memory (each `serve` process
counts its own); a maximum body size, counted as the body arrives; and the CORS allow-list
(`subscribe.allowed_origins`, default `site.url`): a browser may post the form from those origins
and from this server's own pages, and from nowhere else.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import jinja2
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import Message

from pipeline.config import Config
from pipeline.errors import PipelineError
from pipeline.store import subscribers as store
from pipeline.store.subscribers import Subscriber, SubscriberStatus
from pipeline.web.confirmation import ConfirmationSender, confirmation_channel
from pipeline.web.context import WebContext

log = logging.getLogger(__name__)

HONEYPOT = "website"          # a field people never see; robots fill in every field
MAX_FIELDS = 50               # form fields in one sign-up: a handful of topics at most
WINDOW_SECONDS = 3600.0       # the rate limits are per hour
ALLOWED_HEADERS = frozenset({"content-type", "accept", "accept-language", "content-language"})

STATUS_TEXT = {
    SubscriberStatus.PENDING: "waiting for confirmation: open the link in the email we sent to this "
                              "address to start receiving the newsletter",
    SubscriberStatus.ACTIVE: "subscribed",
    SubscriberStatus.UNSUBSCRIBED: "unsubscribed: you receive no emails from us",
    SubscriberStatus.BOUNCED: "paused: emails to this address came back undelivered, so we stopped "
                              "sending",
    SubscriberStatus.COMPLAINED: "paused: an email to this address was reported as spam, so we "
                                 "stopped sending",
    SubscriberStatus.SUPPRESSED: "blocked: the sender has asked never to email this address",
}
# What the manage page lets a reader do, by status. Bounced and complained addresses subscribe
# again through the form (and its confirmation), which proves the mailbox works and is willing;
# a suppressed one is the operator's to lift.
ACTIONS = {
    SubscriberStatus.PENDING: ("save", "unsubscribe"),
    SubscriberStatus.ACTIVE: ("save", "unsubscribe"),
    SubscriberStatus.UNSUBSCRIBED: ("save", "resubscribe"),
    SubscriberStatus.BOUNCED: ("save",),
    SubscriberStatus.COMPLAINED: ("save",),
    SubscriberStatus.SUPPRESSED: (),
}


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


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _wants_json(request: Request) -> bool:
    return _media_type(request) == "application/json" or \
        "application/json" in request.headers.get("accept", "").lower()


@dataclass(frozen=True, kw_only=True)
class Submission:
    """What the sign-up form sent: the address as typed, a name, topics, the honeypot."""

    email: str
    name: str
    tags: tuple[str, ...]
    honeypot: bool


def _text(value: object, field: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise Refused(400, f"`{field}` must be text.")
    return value


def _topics(raw: Iterable[object], topics: list[str]) -> tuple[str, ...]:
    """The configured topics among `raw` (each may be a comma-separated list), in config order,
    spelled as configured; anything else is ignored."""
    wanted = {t.strip().casefold() for value in raw if isinstance(value, str)
              for t in value.split(",") if t.strip()}
    return tuple(t for t in topics if t.casefold() in wanted)


async def read_submission(request: Request, config: Config) -> Submission:
    """The sign-up in the request's body: form-encoded, multipart or JSON. Raises Refused."""
    body = await read_body(request, config.subscribe.max_body)
    media = _media_type(request)
    topics = config.subscribe.topics
    if media == "application/json":
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise Refused(400, "The body is not valid JSON.") from None
        if not isinstance(data, dict):
            raise Refused(400, 'Send a JSON object: {"email": "...", "name": "...", "tags": [...]}.')
        tags = data.get("tags") or []
        return Submission(email=_text(data.get("email"), "email"), name=_text(data.get("name"), "name"),
                          tags=_topics(tags if isinstance(tags, list) else [tags], topics),
                          honeypot=bool(data.get(HONEYPOT)))
    if media in ("application/x-www-form-urlencoded", "multipart/form-data") or (not media and not body):
        form = await parse_form(request, body) if body else FormData()
        return Submission(email=_text(form.get("email"), "email"), name=_text(form.get("name"), "name"),
                          tags=_topics(form.getlist("tags"), topics),
                          honeypot=bool(_text(form.get(HONEYPOT), HONEYPOT).strip()))
    raise Refused(415, "Send the form as application/x-www-form-urlencoded, multipart/form-data "
                       "or application/json.")


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


def _cors_headers(origin: str | None) -> dict[str, str]:
    headers = {"Vary": "Origin"}
    if origin:
        headers["Access-Control-Allow-Origin"] = origin
    return headers


# -- the snippet --------------------------------------------------------------------------------

_SNIPPET = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined).from_string("""\
<!-- {{ site }} newsletter sign-up (pipeline subscribe-form). Works without JavaScript. -->
<form method="post" action="{{ action }}" accept-charset="utf-8" \
style="max-width:420px;margin:1em 0;font:inherit;">
  <p style="margin:0 0 .75em;"><label>Email<br><input type="email" name="email" required \
autocomplete="email" maxlength="320" style="width:100%;box-sizing:border-box;padding:.5em;font:inherit;">\
</label></p>
  <p style="margin:0 0 .75em;"><label>Name (optional)<br><input type="text" name="name" \
autocomplete="name" maxlength="200" style="width:100%;box-sizing:border-box;padding:.5em;font:inherit;">\
</label></p>
{%- if topics %}
  <fieldset style="border:0;margin:0 0 .75em;padding:0;"><legend style="padding:0;">Topics</legend>
{%- for topic in topics %}
    <label style="display:block;"><input type="checkbox" name="tags" value="{{ topic }}"> {{ topic }}</label>
{%- endfor %}
  </fieldset>
{%- endif %}
  <div aria-hidden="true" style="position:absolute;left:-10000px;top:auto;width:1px;height:1px;\
overflow:hidden;"><label>Leave this field empty <input type="text" name="{{ honeypot }}" value="" \
tabindex="-1" autocomplete="off"></label></div>
  <p style="margin:0 0 .75em;font-size:.875em;">We will email you a link to confirm your \
subscription to {{ site }}. Unsubscribe at any time with the link in every email.</p>
  <button type="submit" style="padding:.5em 1.25em;font:inherit;cursor:pointer;">Subscribe</button>
</form>
""")


def form_action(config: Config, action_url: str | None = None) -> str:
    """Where the snippet's form posts: `action_url`, else `<unsubscribe.base_url>/subscribe`.
    Raises PipelineError for a URL that is not http(s)."""
    action = action_url or f"{config.unsubscribe.base_url}/subscribe"
    parts = urlsplit(action)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PipelineError(f"--action-url {action!r}: must be an http(s) URL such as "
                            "https://news.example.com/subscribe")
    return action


def action_warning(action: str) -> str | None:
    """Why the snippet's form would not work from readers' browsers, or None."""
    host = (urlsplit(action).hostname or "").lower()
    loopback = host == "localhost" or host.endswith(".localhost")
    with contextlib.suppress(ValueError):       # not an IP address
        loopback = loopback or ipaddress.ip_address(host).is_loopback
    if loopback:
        return (f"the form posts to {action}, which only this machine can reach; set "
                "unsubscribe.base_url in config.yaml to the public https address of `pipeline serve`")
    if urlsplit(action).scheme != "https":
        return f"the form posts to {action} without https: addresses would travel unencrypted"
    return None


def subscribe_form(config: Config, action_url: str | None = None) -> str:
    """An HTML sign-up form to paste into the blog (email, name, the configured topics, the
    honeypot), posting to `pipeline serve`'s /subscribe. Inline styles only, no JavaScript."""
    return _SNIPPET.render(action=form_action(config, action_url), topics=config.subscribe.topics,
                           site=config.site.name, honeypot=HONEYPOT)


# -- the routes ---------------------------------------------------------------------------------

def routes(ctx: WebContext) -> list[Route]:
    """/subscribe (GET, POST, OPTIONS), /confirm/TOKEN and /manage/TOKEN (GET, POST)."""
    config, engine, secret = ctx.config, ctx.engine, ctx.secret
    settings = config.subscribe
    sender = ConfirmationSender(config, engine, secret, channel=confirmation_channel(config))
    origins = Origins(config)
    per_ip = SlidingWindow(settings.rate_per_ip)
    per_address = SlidingWindow(settings.rate_per_address)
    thanks = ("Thanks! Check your inbox: unless this address is already subscribed, we have sent it "
              f"a link to confirm your subscription. The link works for {settings.confirm_days} days.")

    def signup_page(status: int = 200, *, state: str = "form", error: str = "", notice: str = "",
                    values: Submission | None = None) -> Response:
        chosen = values.tags if values else ()
        return ctx.page("subscribe.html.j2", "Subscribe" if state == "form" else "Check your inbox",
                        status, state=state, error=error, notice=notice, message=thanks,
                        email=values.email if values else "", name=values.name if values else "",
                        topics=[(t, t in chosen) for t in settings.topics],
                        days=settings.confirm_days, honeypot=HONEYPOT, address=config.site.address or "")

    def refused(request: Request, exc: Refused, values: Submission | None = None) -> Response:
        headers = _cors_headers(origins.cors(request))
        if exc.retry_after is not None:
            headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
        if _wants_json(request):
            return JSONResponse({"ok": False, "error": exc.message}, exc.status, headers=headers)
        response = signup_page(exc.status, error=exc.message, values=values)
        response.headers.update(headers)
        return response

    async def show(_: Request) -> Response:
        return signup_page()

    async def preflight(request: Request) -> Response:
        origin = origins.cors(request)
        method = request.headers.get("access-control-request-method", "")
        asked = {h.strip().lower() for h in request.headers.get("access-control-request-headers", "")
                 .split(",") if h.strip()}
        if origin is None or method.upper() != "POST" or not asked <= ALLOWED_HEADERS:
            return PlainTextResponse("Not allowed.", 403, headers={"Vary": "Origin"})
        return Response(status_code=204, headers={
            **_cors_headers(origin), "Access-Control-Allow-Methods": "POST",
            "Access-Control-Allow-Headers": ", ".join(sorted(asked)) or "Content-Type",
            "Access-Control-Max-Age": "7200"})

    async def submit(request: Request) -> Response:
        if not origins.may_post(request):
            return refused(request, Refused(403, "Sign-ups are not accepted from this site."))
        ip = request.client.host if request.client else "unknown"
        values: Submission | None = None
        try:
            wait = per_ip.hit(client_key(ip))
            if wait is not None:
                raise Refused(429, "Too many sign-ups from your network. Please try again later.",
                              retry_after=wait)
            values = await read_submission(request, config)
            if values.honeypot:          # a robot: answered like anyone, and nothing happens
                log.info("sign-up refused silently: the honeypot field was filled in")
                return accepted(request)
            if not values.email.strip():
                raise Refused(400, "Please enter your email address.")
            try:
                address = store.normalize(values.email)
            except ValueError as exc:
                raise Refused(400, f"That is not a valid email address: {exc}") from None
            wait = per_address.hit(address.lower())
            if wait is not None:
                raise Refused(429, "Too many sign-ups for this address. Please try again later.",
                              retry_after=wait)
        except Refused as exc:
            return refused(request, exc, values)
        done = await run_in_threadpool(
            store.sign_up, engine, address, name=values.name, tags=values.tags,
            ip_hash=store.ip_hash(ip, secret), resend_after=timedelta(minutes=settings.resend_minutes))
        log.info("sign-up for subscriber %s (%s)", done.subscriber.uid,
                 "confirmation due" if done.send_confirmation else "no email due")
        if not done.send_confirmation:
            return accepted(request)
        uid = done.subscriber.uid

        async def queue_confirmation() -> None:
            # Run once the answer is sent, before this coroutine yields to any other request:
            # confirmations are queued in the order of the answers, and the answer never waits
            # for (or competes with) the work of sending one.
            sender.submit(uid)

        return accepted(request, then=BackgroundTask(queue_confirmation))

    def accepted(request: Request, then: BackgroundTask | None = None) -> Response:
        headers = _cors_headers(origins.cors(request))
        if _wants_json(request):
            return JSONResponse({"ok": True, "message": thanks}, 202, headers=headers, background=then)
        # Not for this server's own page: its CSP (form-action 'self') also binds the redirect.
        if settings.redirect and not origins.is_own(request):
            return RedirectResponse(settings.redirect, 303, headers=headers, background=then)
        response = signup_page(state="sent")
        response.headers.update(headers)
        response.background = then
        return response

    # -- /confirm/TOKEN -----------------------------------------------------------------------

    def confirm_page(state: str, title: str, status: int = 200, **extra: Any) -> Response:
        return ctx.page("confirm.html.j2", title, status, state=state, **extra)

    async def confirm_lookup(request: Request) -> tuple[Subscriber | None, Response | None]:
        value = request.path_params["token"]
        if len(value) > 200:
            subscriber, reason = None, "malformed"
        else:
            subscriber, reason = await run_in_threadpool(store.resolve_confirm_token, engine, value, secret)
        if subscriber is not None:
            request.state.uid = subscriber.uid        # the request log shows it instead of the token
            return subscriber, None
        if reason == "expired":
            return None, signup_page(410, notice="This confirmation link has expired: nothing was changed. "
                                                 "Sign up again below and we will send you a new one.")
        if reason == "malformed":
            return None, confirm_page("error", "Invalid link", 400,
                                      message="This confirmation link is incomplete. Open the link "
                                              "from the email, or copy all of it into your browser.")
        return None, confirm_page("error", "Unknown link", 404,
                                  message="This confirmation link is not valid. Use the link from "
                                          "the email, or sign up again.")

    async def confirm_show(request: Request) -> Response:
        subscriber, error = await confirm_lookup(request)
        if error is not None:
            return error
        assert subscriber is not None
        return confirm_state(subscriber, asking=True)

    async def confirm_post(request: Request) -> Response:
        subscriber, error = await confirm_lookup(request)
        if error is not None:
            return error
        assert subscriber is not None
        try:
            await read_body(request, settings.max_body)     # nothing in it is needed
        except Refused as exc:
            return confirm_page("error", "Bad request", exc.status, message=exc.message)
        if subscriber.status not in (SubscriberStatus.ACTIVE, SubscriberStatus.SUPPRESSED):
            subscriber = await run_in_threadpool(store.confirm, engine, subscriber.uid) or subscriber
            log.info("subscriber %s confirmed", subscriber.uid)
        return confirm_state(subscriber, asking=False)

    def confirm_state(subscriber: Subscriber, *, asking: bool) -> Response:
        manage = f"/manage/{store.token(subscriber.uid, subscriber.email, secret)}"
        if subscriber.status == SubscriberStatus.SUPPRESSED:
            return confirm_page("blocked", "Cannot subscribe", email=subscriber.email)
        if subscriber.status == SubscriberStatus.ACTIVE:
            return confirm_page("done" if not asking else "already",
                                "You're subscribed" if not asking else "Already subscribed",
                                email=subscriber.email, manage_url=manage)
        return confirm_page("ask", "Confirm your subscription", email=subscriber.email)

    # -- /manage/TOKEN ------------------------------------------------------------------------

    def manage_page(subscriber: Subscriber, status: int = 200, *, notice: str = "",
                    error: str = "") -> Response:
        return ctx.page("manage.html.j2", "Your subscription", status, email=subscriber.email,
                        name=subscriber.name or "", state=subscriber.status,
                        status_text=STATUS_TEXT.get(SubscriberStatus(subscriber.status), subscriber.status),
                        actions=ACTIONS.get(SubscriberStatus(subscriber.status), ()),
                        topics=[(t, t in subscriber.tags) for t in settings.topics],
                        notice=notice, error=error)

    async def manage_lookup(request: Request) -> tuple[Subscriber | None, Response | None]:
        value = request.path_params["token"]
        if "." not in value or len(value) > 200:
            return None, confirm_page("error", "Invalid link", 400,
                                      message="This link is incomplete. Use the link from the email.")
        subscriber = await run_in_threadpool(store.resolve_token, engine, value, secret)
        if subscriber is None:
            return None, confirm_page("error", "Unknown link", 404,
                                      message="This link is not valid. Use the link from the latest email.")
        request.state.uid = subscriber.uid
        return subscriber, None

    async def manage_show(request: Request) -> Response:
        subscriber, error = await manage_lookup(request)
        if error is not None:
            return error
        assert subscriber is not None
        return manage_page(subscriber)

    async def manage_post(request: Request) -> Response:
        subscriber, error = await manage_lookup(request)
        if error is not None:
            return error
        assert subscriber is not None
        try:
            body = await read_body(request, settings.max_body)
            if _media_type(request) not in ("application/x-www-form-urlencoded", "multipart/form-data"):
                raise Refused(415, "Send the form as application/x-www-form-urlencoded.")
            form = await parse_form(request, body)
            action = _text(form.get("action"), "action")
            allowed = ACTIONS.get(SubscriberStatus(subscriber.status), ())
            if action not in ("save", "unsubscribe", "resubscribe"):
                raise Refused(400, "Choose an action: save, unsubscribe or resubscribe.")
            if action not in allowed:
                raise Refused(409, f"This address is {subscriber.status}: it cannot {action} here.")
            name = _text(form.get("name"), "name")
        except Refused as exc:
            return manage_page(subscriber, exc.status, error=exc.message)
        uid = subscriber.uid
        if action == "save":
            changed = await run_in_threadpool(
                lambda: store.update_preferences(engine, uid, name=name,
                                                 topics=_topics(form.getlist("tags"), settings.topics),
                                                 all_topics=tuple(settings.topics)))
            notice = "Your preferences are saved."
        elif action == "unsubscribe":
            await run_in_threadpool(lambda: store.unsubscribe(engine, subscriber.email, reason="manage page"))
            changed, notice = None, "You are unsubscribed: you will receive no more emails from us."
        else:
            changed = await run_in_threadpool(store.resubscribe, engine, uid)
            notice = "You are subscribed again."
        log.info("manage page: subscriber %s: %s", uid, action)
        latest = changed or await run_in_threadpool(lambda: store.find(engine, uid=uid))
        return manage_page(latest or subscriber, notice=notice)

    return [Route("/subscribe", show, methods=["GET"]),
            Route("/subscribe", submit, methods=["POST"]),
            Route("/subscribe", preflight, methods=["OPTIONS"]),
            Route("/confirm/{token}", confirm_show, methods=["GET"]),
            Route("/confirm/{token}", confirm_post, methods=["POST"]),
            Route("/manage/{token}", manage_show, methods=["GET"]),
            Route("/manage/{token}", manage_post, methods=["POST"])]
