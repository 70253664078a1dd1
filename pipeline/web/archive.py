"""(being written: routes of `pipeline serve`)"""

from __future__ import annotations

from starlette.routing import Route

from pipeline.web.context import WebContext


def routes(ctx: WebContext) -> list[Route]:
    return []
