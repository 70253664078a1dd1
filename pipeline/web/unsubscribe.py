"""One-click unsubscribe (RFC 8058) for `pipeline serve`.

`POST /unsubscribe/TOKEN` with the form body `List-Unsubscribe=One-Click` unsubscribes and answers
200 (no redirect, no cookie: mail providers post it without a user). `GET` shows a confirmation
page whose button makes the same POST, so a link scanner that follows GETs unsubscribes no one.
"""

from __future__ import annotations

import logging

from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

from pipeline.store.subscribers import resolve_token, unsubscribe
from pipeline.web.context import WebContext

log = logging.getLogger(__name__)


def routes(ctx: WebContext) -> list[Route]:
    """GET and POST /unsubscribe/TOKEN."""
    engine = ctx.engine

    def render(state: str, title: str, status: int = 200, **extra: str) -> HTMLResponse:
        return ctx.page("unsubscribe.html.j2", title, status, state=state, **extra)

    def lookup(request: Request):  # type: ignore[no-untyped-def]
        value = request.path_params["token"]
        if "." not in value or len(value) > 200:
            return None, render("error", "Invalid link", 400,
                                message="This unsubscribe link is malformed. Use the link from the email.")
        subscriber = resolve_token(engine, value, ctx.secret)
        if subscriber is None:
            return None, render("error", "Unknown link", 404,
                                message="This unsubscribe link is not valid (it may have expired).")
        request.state.uid = subscriber.uid          # the request log shows it instead of the token
        return subscriber, None

    async def confirm(request: Request) -> HTMLResponse:
        subscriber, error = lookup(request)
        if error:
            return error
        if subscriber.status != "active" and subscriber.status != "pending":
            return render("done", "You are unsubscribed", email=subscriber.email)
        return render("confirm", "Unsubscribe", email=subscriber.email)

    async def one_click(request: Request) -> Response:
        subscriber, error = lookup(request)
        if error:
            return error
        try:
            form = await request.form()
        except ClientDisconnect:
            # Gone before the whole form arrived (or cut off by the request deadline): nothing
            # changes, and this answer goes nowhere.
            return PlainTextResponse("", status_code=400)
        if form.get("List-Unsubscribe") != "One-Click":
            return render("error", "Bad request", 400,
                          message="Expected the form field List-Unsubscribe=One-Click.")
        unsubscribe(engine, subscriber.email, reason="one-click unsubscribe")
        log.info("unsubscribed subscriber %s", subscriber.uid)   # the uid, never the address
        return render("done", "You are unsubscribed", email=subscriber.email)

    return [Route("/unsubscribe/{token}", confirm, methods=["GET"]),
            Route("/unsubscribe/{token}", one_click, methods=["POST"])]
