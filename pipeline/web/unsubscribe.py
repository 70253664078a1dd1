"""The HTTP side: one-click unsubscribe (RFC 8058) for `pipeline serve`.

`POST /unsubscribe/TOKEN` with the form body `List-Unsubscribe=One-Click` unsubscribes and answers
200 (no redirect, no cookie: mail providers post it without a user). `GET` shows a confirmation
page whose button makes the same POST, so a link scanner that follows GETs unsubscribes no one.
"""

from __future__ import annotations

import logging

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse
from starlette.routing import Route

from pipeline.config import Config
from pipeline.render.email import environment
from pipeline.store.engine import engine_for
from pipeline.store.subscribers import resolve_token, state_secret, unsubscribe

log = logging.getLogger(__name__)


def create_app(config: Config) -> Starlette:
    """The Starlette app serving the unsubscribe endpoints for `config`."""
    engine = engine_for(config)
    secret = (config.unsubscribe.secret.get_secret_value() if config.unsubscribe.secret
              else state_secret(engine))
    page = environment(config.path(config.templates).resolve()).get_template("web/unsubscribe.html.j2")

    def render(state: str, title: str, status: int = 200, **extra: str) -> HTMLResponse:
        html = page.render(state=state, title=title, site_name=config.site.name,
                           language=config.site.locale.split("_")[0], **extra)
        return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})

    def lookup(request: Request):  # type: ignore[no-untyped-def]
        value = request.path_params["token"]
        if "." not in value or len(value) > 200:
            return None, render("error", "Invalid link", 400,
                                message="This unsubscribe link is malformed. Use the link from the email.")
        subscriber = resolve_token(engine, value, secret)
        if subscriber is None:
            return None, render("error", "Unknown link", 404,
                                message="This unsubscribe link is not valid (it may have expired).")
        return subscriber, None

    async def confirm(request: Request) -> HTMLResponse:
        subscriber, error = lookup(request)
        if error:
            return error
        if subscriber.status == "unsubscribed":
            return render("done", "You are unsubscribed", email=subscriber.email)
        return render("confirm", "Unsubscribe", email=subscriber.email)

    async def one_click(request: Request) -> HTMLResponse:
        subscriber, error = lookup(request)
        if error:
            return error
        form = await request.form()
        if form.get("List-Unsubscribe") != "One-Click":
            return render("error", "Bad request", 400,
                          message="Expected the form field List-Unsubscribe=One-Click.")
        unsubscribe(engine, subscriber.email)
        log.info("unsubscribed subscriber %s", subscriber.uid)   # the uid, never the address
        return render("done", "You are unsubscribed", email=subscriber.email)

    async def health(_: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    return Starlette(routes=[
        Route("/unsubscribe/{token}", confirm, methods=["GET"]),
        Route("/unsubscribe/{token}", one_click, methods=["POST"]),
        Route("/healthz", health, methods=["GET"]),
    ])
