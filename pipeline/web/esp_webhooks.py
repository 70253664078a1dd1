"""ESP webhooks of `pipeline serve`: `POST /webhooks/ses`, `/postmark`, `/mailgun`, `/sendgrid`.

Each provider configured under `bounces.webhooks` gets its route (the others answer 404). A
request is read whole up to MAX_BODY (413 beyond it), handed to the provider's module
(`pipeline.bounces.esp`), which checks it is genuine and reads its events; each event is then
recorded by `store.events.record`, the one place that decides what a bounce, complaint or
unsubscribe does to a subscriber, whatever its source. A request that is not genuine (bad
signature or credentials, an old timestamp, a replay) or not readable gets 4xx with a one-line
reason and records nothing. A genuine one gets 200 and a small JSON summary, also when it names
addresses that are not on the list (they are counted, and logged by their domain only).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pipeline.bounces.esp.base import Incoming, Provider, Received, WebhookError, domain
from pipeline.bounces.esp.registry import configured_providers
from pipeline.config import BounceSettings
from pipeline.store.events import record
from pipeline.store.subscribers import find
from pipeline.web.context import WebContext

log = logging.getLogger(__name__)

# Bytes of a request body. SNS messages are at most 256 KB and SendGrid posts batches of about
# 768 KB; anything larger is no webhook of theirs.
MAX_BODY = 1_000_000


class TooLarge(WebhookError):
    """A body larger than MAX_BODY."""

    status = 413


def routes(ctx: WebContext) -> list[Route]:
    """POST /webhooks/<name> for each provider configured under `bounces.webhooks`. Building a
    provider may raise ConfigError (e.g. a SendGrid key that is no key), naming the config key."""
    return [Route(f"/webhooks/{name}", _endpoint(ctx, provider), methods=["POST"], name=f"webhook_{name}")
            for name, provider in configured_providers(ctx.config).items()]


def _endpoint(ctx: WebContext, provider: Provider) -> Callable[[Request], Awaitable[Response]]:
    """The endpoint of one provider: read, verify and parse (the provider), then record."""

    async def receive(request: Request) -> Response:
        try:
            body = await _body(request)
            received = await provider.receive(Incoming(body=body, headers=request.headers,
                                                       received_at=datetime.now(UTC)))
        except ClientDisconnect:
            return Response(status_code=400)        # gone before the body was in: nothing to answer
        except WebhookError as exc:
            log.info("webhook %s: refused with %d: %s", provider.name, exc.status, exc)
            return JSONResponse({"error": str(exc)}, status_code=exc.status, headers=exc.headers)
        summary = await run_in_threadpool(_record, ctx.engine, received, ctx.config.bounces, provider.name)
        return JSONResponse(summary)

    return receive


async def _body(request: Request) -> bytes:
    """The whole body, refused (TooLarge) as soon as it passes MAX_BODY, whatever it claims."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise TooLarge(f"the body is larger than {MAX_BODY:,} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise TooLarge(f"the body is larger than {MAX_BODY:,} bytes")
    return bytes(body)


def _record(engine: Engine, received: Received, bounces: BounceSettings, source: str) -> dict[str, Any]:
    """Record each event; the summary the provider gets back."""
    summary: dict[str, Any] = {"events": len(received.events), "recorded": 0, "duplicates": 0,
                               "unknown": 0, "ignored": received.ignored}
    for event in received.events:
        outcome = record(engine, event, soft_limit=bounces.soft_limit, soft_days=bounces.soft_days)
        if outcome.duplicate:
            summary["duplicates"] += 1
            log.info("webhook %s: a %s event seen before: nothing changed", source, event.kind)
        elif not outcome.known:
            summary["unknown"] += 1
            log.info("webhook %s: %s for an address at %s, not on the list", source, event.kind,
                     domain(event.email))
        else:
            summary["recorded"] += 1
            log.info("webhook %s: %s for subscriber %s%s", source, event.kind, _uid(engine, event.email),
                     f": now {outcome.status}" if outcome.status else "")
    if received.note:
        summary["note"] = received.note
    return summary


def _uid(engine: Engine, email: str) -> str:
    """The subscriber's uid, what the log names them by."""
    try:
        subscriber = find(engine, address=email)
    except ValueError:              # on the list by its exact key, yet no longer a valid address
        subscriber = None
    return subscriber.uid if subscriber else f"at {domain(email)}"
