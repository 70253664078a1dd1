"""The manage page of `pipeline serve`: `GET/POST /manage/TOKEN`, with the token of the unsubscribe
link in every email. It shows the subscription's state and lets the reader change their name and
topics, unsubscribe, or subscribe again, as far as the subscription's status allows.
"""

from __future__ import annotations

import logging

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pipeline.store import optin
from pipeline.store import subscribers as store
from pipeline.store.subscribers import Subscriber, SubscriberStatus
from pipeline.web.context import WebContext
from pipeline.web.guards import Refused, form_text, media_type, parse_form, read_body
from pipeline.web.signup import chosen_topics

log = logging.getLogger(__name__)

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


def routes(ctx: WebContext) -> list[Route]:
    """/manage/TOKEN (GET, POST)."""
    config, engine, secret = ctx.config, ctx.engine, ctx.secret
    settings = config.subscribe

    def link_error(title: str, status: int, message: str) -> Response:
        # The same page as a confirmation link's error: both are links from an email.
        return ctx.page("confirm.html.j2", title, status, state="error", message=message)

    def manage_page(subscriber: Subscriber, status: int = 200, *, notice: str = "",
                    error: str = "") -> Response:
        return ctx.page("manage.html.j2", "Your subscription", status, email=subscriber.email,
                        name=subscriber.name or "", state=subscriber.status,
                        status_text=STATUS_TEXT.get(SubscriberStatus(subscriber.status), subscriber.status),
                        actions=ACTIONS.get(SubscriberStatus(subscriber.status), ()),
                        topics=[(t, t in subscriber.tags) for t in settings.topics],
                        notice=notice, error=error)

    async def manage_lookup(request: Request) -> Subscriber | Response:
        """The subscriber the link's token names, or the page that answers a link naming none."""
        value = request.path_params["token"]
        if "." not in value or len(value) > 200:
            return link_error("Invalid link", 400, "This link is incomplete. Use the link from the email.")
        subscriber = await run_in_threadpool(store.resolve_token, engine, value, secret)
        if subscriber is None:
            return link_error("Unknown link", 404,
                              "This link is not valid. Use the link from the latest email.")
        request.state.uid = subscriber.uid
        return subscriber

    async def manage_show(request: Request) -> Response:
        found = await manage_lookup(request)
        return found if isinstance(found, Response) else manage_page(found)

    async def manage_post(request: Request) -> Response:
        subscriber = await manage_lookup(request)
        if isinstance(subscriber, Response):
            return subscriber
        try:
            body = await read_body(request, settings.max_body)
            if media_type(request) not in ("application/x-www-form-urlencoded", "multipart/form-data"):
                raise Refused(415, "Send the form as application/x-www-form-urlencoded.")
            form = await parse_form(request, body)
            action = form_text(form.get("action"), "action")
            allowed = ACTIONS.get(SubscriberStatus(subscriber.status), ())
            if action not in ("save", "unsubscribe", "resubscribe"):
                raise Refused(400, "Choose an action: save, unsubscribe or resubscribe.")
            if action not in allowed:
                raise Refused(409, f"This address is {subscriber.status}: it cannot {action} here.")
            name = form_text(form.get("name"), "name")
        except Refused as exc:
            return manage_page(subscriber, exc.status, error=exc.message)
        uid = subscriber.uid
        if action == "save":
            topics = chosen_topics(form.getlist("tags"), settings.topics)
            changed = await run_in_threadpool(
                lambda: optin.update_preferences(engine, uid, name=name, topics=topics,
                                                 all_topics=tuple(settings.topics)))
            notice = "Your preferences are saved."
        elif action == "unsubscribe":
            await run_in_threadpool(lambda: store.unsubscribe(engine, subscriber.email, reason="manage page"))
            changed, notice = None, "You are unsubscribed: you will receive no more emails from us."
        else:
            changed = await run_in_threadpool(optin.resubscribe, engine, uid)
            notice = "You are subscribed again."
        log.info("manage page: subscriber %s: %s", uid, action)
        latest = changed or await run_in_threadpool(lambda: store.find(engine, uid=uid))
        return manage_page(latest or subscriber, notice=notice)

    return [Route("/manage/{token}", manage_show, methods=["GET"]),
            Route("/manage/{token}", manage_post, methods=["POST"])]
