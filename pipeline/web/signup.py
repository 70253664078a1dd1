"""Sign-up with double opt-in for `pipeline serve`: the form and the confirmation link.

`GET /subscribe` is a small sign-up page; `POST /subscribe` takes its form (or the snippet that
`pipeline subscribe-form` prints for the blog, see `subscribe_form.py`, or JSON) and answers the
same way whatever the list holds: a new or still-pending address gets a confirmation email, sent
afterwards on a thread of its own, so neither the answer nor its timing tells whether an address is
on the list. `GET /confirm/TOKEN` shows a button and `POST /confirm/TOKEN` confirms (link scanners
follow GETs). `POST /subscribe` is guarded by the abuse controls of `guards.py`: the honeypot, the
rate limits per client and per address, the maximum body size and the CORS allow-list.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from pipeline.config import Config
from pipeline.store import optin
from pipeline.store import subscribers as store
from pipeline.store.subscribers import Subscriber, SubscriberStatus
from pipeline.web.confirmation import ConfirmationSender, confirmation_channel
from pipeline.web.context import WebContext
from pipeline.web.guards import (
    ALLOWED_HEADERS,
    HONEYPOT,
    Origins,
    Refused,
    SlidingWindow,
    client_key,
    cors_headers,
    form_text,
    media_type,
    parse_form,
    read_body,
)

log = logging.getLogger(__name__)


def _wants_json(request: Request) -> bool:
    return media_type(request) == "application/json" or \
        "application/json" in request.headers.get("accept", "").lower()


@dataclass(frozen=True, kw_only=True)
class Submission:
    """What the sign-up form sent: the address as typed, a name, topics, the honeypot."""

    email: str
    name: str
    tags: tuple[str, ...]
    honeypot: bool


def chosen_topics(raw: Iterable[object], topics: list[str]) -> tuple[str, ...]:
    """The configured topics among `raw` (each may be a comma-separated list), in config order,
    spelled as configured; anything else is ignored."""
    wanted = {t.strip().casefold() for value in raw if isinstance(value, str)
              for t in value.split(",") if t.strip()}
    return tuple(t for t in topics if t.casefold() in wanted)


async def read_submission(request: Request, config: Config) -> Submission:
    """The sign-up in the request's body: form-encoded, multipart or JSON. Raises Refused."""
    body = await read_body(request, config.subscribe.max_body)
    media = media_type(request)
    topics = config.subscribe.topics
    if media == "application/json":
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise Refused(400, "The body is not valid JSON.") from None
        if not isinstance(data, dict):
            raise Refused(400, 'Send a JSON object: {"email": "...", "name": "...", "tags": [...]}.')
        tags = data.get("tags") or []
        return Submission(email=form_text(data.get("email"), "email"),
                          name=form_text(data.get("name"), "name"),
                          tags=chosen_topics(tags if isinstance(tags, list) else [tags], topics),
                          honeypot=bool(data.get(HONEYPOT)))
    if media in ("application/x-www-form-urlencoded", "multipart/form-data") or (not media and not body):
        form = await parse_form(request, body) if body else FormData()
        return Submission(email=form_text(form.get("email"), "email"),
                          name=form_text(form.get("name"), "name"),
                          tags=chosen_topics(form.getlist("tags"), topics),
                          honeypot=bool(form_text(form.get(HONEYPOT), HONEYPOT).strip()))
    raise Refused(415, "Send the form as application/x-www-form-urlencoded, multipart/form-data "
                       "or application/json.")


# -- the routes ---------------------------------------------------------------------------------

def routes(ctx: WebContext) -> list[Route]:
    """/subscribe (GET, POST, OPTIONS) and /confirm/TOKEN (GET, POST)."""
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
        headers = cors_headers(origins.cors(request))
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
            **cors_headers(origin), "Access-Control-Allow-Methods": "POST",
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
            optin.sign_up, engine, address, name=values.name, tags=values.tags,
            ip_hash=optin.ip_hash(ip, secret), resend_after=timedelta(minutes=settings.resend_minutes))
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
        headers = cors_headers(origins.cors(request))
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

    async def confirm_lookup(request: Request) -> Subscriber | Response:
        """The subscriber the link's token names, or the page that answers a link naming none."""
        value = request.path_params["token"]
        if len(value) > 200:
            subscriber, reason = None, "malformed"
        else:
            subscriber, reason = await run_in_threadpool(optin.resolve_confirm_token, engine, value, secret)
        if subscriber is not None:
            request.state.uid = subscriber.uid        # the request log shows it instead of the token
            return subscriber
        if reason == "expired":
            return signup_page(410, notice="This confirmation link has expired: nothing was changed. "
                                           "Sign up again below and we will send you a new one.")
        if reason == "malformed":
            return confirm_page("error", "Invalid link", 400,
                                message="This confirmation link is incomplete. Open the link "
                                        "from the email, or copy all of it into your browser.")
        return confirm_page("error", "Unknown link", 404,
                            message="This confirmation link is not valid. Use the link from "
                                    "the email, or sign up again.")

    async def confirm_show(request: Request) -> Response:
        found = await confirm_lookup(request)
        return found if isinstance(found, Response) else confirm_state(found, asking=True)

    async def confirm_post(request: Request) -> Response:
        subscriber = await confirm_lookup(request)
        if isinstance(subscriber, Response):
            return subscriber
        try:
            await read_body(request, settings.max_body)     # nothing in it is needed
        except Refused as exc:
            return confirm_page("error", "Bad request", exc.status, message=exc.message)
        if subscriber.status not in (SubscriberStatus.ACTIVE, SubscriberStatus.SUPPRESSED):
            subscriber = await run_in_threadpool(optin.confirm, engine, subscriber.uid) or subscriber
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

    return [Route("/subscribe", show, methods=["GET"]),
            Route("/subscribe", submit, methods=["POST"]),
            Route("/subscribe", preflight, methods=["OPTIONS"]),
            Route("/confirm/{token}", confirm_show, methods=["GET"]),
            Route("/confirm/{token}", confirm_post, methods=["POST"])]
