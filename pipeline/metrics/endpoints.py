"""`/healthz`, `/readyz` and `/metrics` as Starlette routes, for `pipeline serve`'s app.

`/metrics` shows edition names, list sizes and the scheduler's host name, and `pipeline serve`
faces the open internet: it answers a client that presents the token in `PIPELINE_METRICS_TOKEN`
(`Authorization: Bearer ...`, as Prometheus' `authorization:` sends it), and, when that variable
is not set, loopback clients only (uvicorn takes the client from X-Forwarded-For when a proxy on
this host sets it, so a reader reached through a local proxy is not loopback).
"""

from __future__ import annotations

import hmac
import ipaddress
import os

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from pipeline.metrics.health import ReadinessCheck

TOKEN_VARIABLE = "PIPELINE_METRICS_TOKEN"
NO_STORE = {"Cache-Control": "no-store"}


def routes(engine: Engine, registry: CollectorRegistry) -> list[Route]:
    """GET /healthz (200 while the process runs), /readyz (200, or 503 with the reason as JSON)
    and /metrics (the registry, in the format the scraper asks for)."""
    check = ReadinessCheck(engine)
    token = os.environ.get(TOKEN_VARIABLE) or None

    async def healthz(_: Request) -> Response:
        return PlainTextResponse("ok", headers=NO_STORE)

    async def readyz(_: Request) -> Response:
        result = await check.check()
        if result.ready:
            return JSONResponse({"ready": True}, headers=NO_STORE)
        return JSONResponse({"ready": False, "reason": result.reason}, status_code=503, headers=NO_STORE)

    async def metrics(request: Request) -> Response:
        refused = _refusal(request, token)
        if refused is not None:
            return refused
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        body = await run_in_threadpool(encoder, registry)     # the collector may read the database
        return Response(body, media_type=content_type, headers=NO_STORE)

    return [Route("/healthz", healthz, methods=["GET"]), Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"])]


def _refusal(request: Request, token: str | None) -> Response | None:
    """None when the client may read the metrics, else the answer that says how it could."""
    if token is not None:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
            return None
        return PlainTextResponse(f"send the token of {TOKEN_VARIABLE} as Authorization: Bearer\n",
                                 status_code=401, headers={"WWW-Authenticate": "Bearer", **NO_STORE})
    host = request.client.host if request.client else ""
    try:
        if ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:
        pass
    return PlainTextResponse(f"metrics are served to loopback clients only; set {TOKEN_VARIABLE} on the "
                             "server to let a scraper elsewhere in with that token\n",
                             status_code=403, headers=NO_STORE)
