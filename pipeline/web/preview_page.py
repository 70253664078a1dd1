"""`pipeline preview --serve`: a local page showing what every channel will receive.

Pages are rendered on the server with the project's Jinja2 (templates/web/preview/); there is no
front-end build. Posts, templates and config.yaml are re-read whenever a file under them changes
(a fingerprint of names, sizes and modification times), so editing a post and reloading shows the
change; the page also polls `/api/version` and reloads itself. A post that fails to render shows
its error; the others are unaffected. What the ledger says of each post is read once per change
of the state database, not once per request (`post_status.LedgerCache`).

The server binds to 127.0.0.1 by default and answers only requests whose Host header names this
machine: the loopback names, and with a `--host` beyond loopback also the machine's host name and
its own addresses (a DNS-rebinding page, whose requests carry its own name, gets nothing); "Send
test" needs the page's form token (a page on another site cannot post it).
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import logging
import re
import secrets
import socket
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parseaddr
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jinja2
from slugify import slugify
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from pipeline.channels.devto import article
from pipeline.config import Config, load_config
from pipeline.errors import PipelineError
from pipeline.intake.posts import LoadResult, load_posts
from pipeline.intake.sources import load_all
from pipeline.models import Post, Problem, Rendered, Severity, Snippet
from pipeline.preview import Batch, render_post, render_posts, sample_values
from pipeline.render.email import environment
from pipeline.render.personalize import Fill
from pipeline.store.feed_entries import stored_version
from pipeline.timetable.schedule import NextDigest, next_digests
from pipeline.web.calendar import CalendarPages
from pipeline.web.post_status import LedgerCache, post_states
from pipeline.web.send_test import SentTest, email_channel, send_digest_test, send_test

log = logging.getLogger(__name__)

NETWORK_NAMES = {"x": "X", "mastodon": "Mastodon", "bluesky": "Bluesky"}
WIDTHS = {"desktop": 600, "mobile": 375}
# Injected into the email for "dark background": the client's canvas around the email goes dark,
# as in a mail app in dark mode; the email's own colours are left as they are.
DARK = ('<meta name="color-scheme" content="dark">'
        "<style>html,body{background-color:#121212 !important}</style>")


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    """Config and rendered posts as of one version of the files."""

    version: str
    config: Config | None = None
    batch: Batch | None = None
    error: str | None = None          # the config could not be loaded

    def item(self, slug: str) -> Rendered | None:
        return next((r for r in self.batch.rendered if r.post.slug == slug), None) if self.batch else None

    def broken(self) -> dict[str, Problem]:
        """Slug (as the file name gives it) -> the error that keeps the post from rendering."""
        if self.batch is None:
            return {}
        return {slugify(Path(p.where).stem): p for p in self.batch.errors}


class Workspace:
    """The project as the page shows it: re-rendered when a watched file changes."""

    def __init__(self, config_path: Path) -> None:
        self.config_path = config_path
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._renders: dict[tuple[str, str], Rendered] = {}
        self._renders_base = ""

    def version(self, config: Config | None, *, posts: bool = True) -> str:
        """A fingerprint of config.yaml and of every file under the config's templates folder
        (and posts folder, with `posts`): names, sizes and modification times; and of the feed
        entries stored (`pipeline fetch` adds and updates them)."""
        roots = [self.config_path]
        if config is not None:
            roots += [config.path(config.templates)] + ([config.path(config.posts)] if posts else [])
        digest = hashlib.sha256(stored_version(config).encode() if config is not None else b"")
        for root in roots:
            for path in sorted(root.rglob("*")) if root.is_dir() else [root]:
                digest.update(f"{path}\0{_stat(path)}\n".encode())
        return digest.hexdigest()[:16]

    def current(self) -> Snapshot:
        """The snapshot for the files as they are now (rendered again only if they changed)."""
        with self._lock:
            snap = self._snapshot
            if snap is None or self.version(snap.config) != snap.version:
                self._snapshot = snap = self._load()
            return snap

    def _load(self) -> Snapshot:
        try:
            config = load_config(self.config_path)
        except PipelineError as exc:
            return Snapshot(version=self.version(None), error=str(exc))
        # Taken before rendering: a file saved during the render makes the next request render again.
        version = self.version(config)
        log.info("rendering posts (files changed)")
        # Feed entries still settling are shown too (their state says when they can go out).
        loaded = load_all(config, now=datetime.max.replace(tzinfo=UTC), local=load_posts(config))
        return Snapshot(version=version, config=config,
                        batch=render_posts(config, render=self._memo(config), loaded=loaded))

    def _memo(self, config: Config) -> Callable[[Post, Config], Rendered]:
        """render_post, remembering each post's render while its file, the templates and the config
        stay the same: saving one post renders that post again, not all of them."""
        base = self.version(config, posts=False)
        if base != self._renders_base:
            self._renders, self._renders_base = {}, base

        def render(post: Post, config: Config) -> Rendered:
            # A post file's size and time say whether it changed; a feed entry has no file.
            key = (post.path, _stat(config.root / post.path) if not post.path.startswith("feed:")
                   else hashlib.sha256(repr(post).encode()).hexdigest())
            if key not in self._renders:
                self._renders[key] = render_post(post, config)
            return self._renders[key]

        return render


def _stat(path: Path) -> str:
    """Size and modification time of a file ("" if it is gone)."""
    try:
        stat = path.stat()
    except OSError:
        return ""
    return f"{stat.st_size}\0{stat.st_mtime_ns}"


def create_preview_app(config_path: str | Path, *, host: str = "127.0.0.1",
                       now: datetime | None = None) -> Starlette:
    """The preview app for the project whose config is at `config_path`. `host`: the address
    served (`--host`); see `OwnHosts` for the Host headers answered."""
    workspace = Workspace(Path(config_path).resolve())
    token = secrets.token_urlsafe(24)
    pages = _Pages(workspace, token, now)
    calendar = CalendarPages(workspace.current, pages._render, now)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        pages.ledger.close()
        calendar.close()

    return Starlette(lifespan=lifespan, routes=[
        Route("/", pages.index, methods=["GET"]),
        Route("/posts/{slug}", pages.post, methods=["GET"]),
        Route("/posts/{slug}/email.html", pages.email_html, methods=["GET"]),
        Route("/posts/{slug}/email.txt", pages.email_text, methods=["GET"]),
        Route("/posts/{slug}/send-test", pages.send_test, methods=["POST"]),
        Route("/digests/{entry}/{channel}", pages.digest, methods=["GET"]),
        Route("/digests/{entry}/{channel}/email.html", pages.digest_html, methods=["GET"]),
        Route("/digests/{entry}/{channel}/send-test", pages.digest_send_test, methods=["POST"]),
        Route("/calendar", calendar.page, methods=["GET"]),
        Route("/calendar.ics", calendar.ics, methods=["GET"]),
        Route("/api/version", pages.version, methods=["GET"]),
        Route("/healthz", lambda _: PlainTextResponse("ok"), methods=["GET"]),
    ], middleware=[Middleware(OwnHosts, host=host)])


# A Host header: a name or IPv4 address, or an IPv6 address in brackets; then an optional port.
_HOST_HEADER = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9._-]+))(?::[0-9]{1,5})?")
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})


class OwnHosts:
    """ASGI middleware answering only requests whose Host header names this machine; others get
    400. A page that rebinds its own name to this machine (DNS rebinding) sends that name, so it
    gets nothing; an address typed in a browser (an IP literal) cannot be rebound.

    Served on loopback (`host` 127.0.0.1, the default): the loopback names only. Served beyond it
    (0.0.0.0, ::, a LAN address or name): also `host` itself, the machine's host name (as
    `socket.gethostname()` gives it, its first label, and that label under `.local`, mDNS), and any
    address of the machine's interfaces. Addresses are checked when asked, so one the machine
    gets later (DHCP, a VPN) works without a restart.

    Starlette's TrustedHostMiddleware takes a fixed list of names, which cannot say "an address of
    this machine"; hence this one.
    """

    def __init__(self, app: ASGIApp, host: str) -> None:
        self.app = app
        bound = host.strip("[]").lower()
        self.names = set(LOOPBACK_NAMES) | {bound}
        self.beyond_loopback = not is_loopback(bound)
        if self.beyond_loopback:
            name = socket.gethostname().lower().rstrip(".")
            short = name.split(".")[0]
            self.names |= {name, short, f"{short}.local"} if short else set()

    def allowed(self, header: str) -> bool:
        """Whether a Host header (with or without a port) names this machine."""
        match = _HOST_HEADER.fullmatch(header)
        if match is None:
            return False
        name = (match["v6"] or match["name"]).lower()
        name = name[:-1] if name.endswith(".") else name         # "localhost." is the same name
        return name in self.names or (self.beyond_loopback and _own_address(name))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            header = next((v for k, v in scope["headers"] if k == b"host"), b"")
            if not self.allowed(header.decode("latin-1")):
                await PlainTextResponse("Invalid host header", status_code=400)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or name, IPv6 without brackets) is this machine's loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False                                    # a name: the machine's, on the network


def _own_address(name: str) -> bool:
    """Whether `name` is an IP address of this machine: the system lets a socket bind only to
    those (a bind sends nothing). The unspecified and multicast addresses bind anywhere: refused."""
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        return False
    if ip.is_unspecified or ip.is_multicast:
        return False
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((str(ip), 0))
    except OSError:
        return False
    return True


class _Pages:
    """The request handlers; each one reads the workspace's current snapshot."""

    def __init__(self, workspace: Workspace, token: str, now: datetime | None) -> None:
        self.workspace = workspace
        self.token = token
        self.now = now
        # What the ledger said, kept until the state database changes: the index asks about
        # every post, and a post of a million rows takes a pass over them.
        self.ledger = LedgerCache()

    def _render(self, snap: Snapshot, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        config = snap.config
        # With a broken config, the templates folder beside it still draws the error page.
        templates = (config.path(config.templates) if config
                     else self.workspace.config_path.parent / "templates")
        context = {"item": None, "problem": None, "notice": None, **context}
        try:
            page = _environment(templates.resolve()).get_template(f"web/preview/{name}")
            html = page.render(site=config.site if config else None, version=snap.version,
                               config_error=snap.error, **context)
        except jinja2.TemplateError as exc:
            # An edited page template is a file like the posts: show what is wrong with it.
            where = f"{exc.filename}:{exc.lineno}: " if isinstance(exc, jinja2.TemplateSyntaxError) else ""
            return HTMLResponse(f"<h1>Preview template error</h1><pre>{escape(where + str(exc))}</pre>",
                                status_code=500)
        return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})

    async def version(self, _: Request) -> JSONResponse:
        snap = await run_in_threadpool(self.workspace.current)
        return JSONResponse({"version": snap.version}, headers={"Cache-Control": "no-store"})

    async def index(self, _: Request) -> HTMLResponse:
        snap = await run_in_threadpool(self.workspace.current)
        if snap.config is None or snap.batch is None:
            return self._render(snap, "index.html.j2", 500, rows=[], broken=[], channels=[])
        states = await run_in_threadpool(self._states, snap)
        digests = await run_in_threadpool(self._digests, snap, False)
        rows = [{"item": r, "warnings": _warnings(snap, r), "states": states.get(r.post.slug, [])}
                for r in reversed(snap.batch.rendered)]
        return self._render(snap, "index.html.j2", rows=rows, broken=list(snap.broken().items()),
                            channels=list(snap.config.channels), digests=digests)

    def _states(self, snap: Snapshot, only: list[str] | None = None) -> dict[str, list[Any]]:
        assert snap.config is not None and snap.batch is not None
        return post_states(snap.config, [r.post for r in snap.batch.rendered],
                           now=self.now or datetime.now(UTC), only=only, cache=self.ledger)

    def _digests(self, snap: Snapshot, render: bool = True) -> list[NextDigest]:
        assert snap.config is not None and snap.batch is not None
        local = LoadResult(posts=tuple(r.post for r in snap.batch.rendered), problems=())
        return next_digests(snap.config, now=self.now or datetime.now(UTC), local=local, render=render)

    async def _digest(self, request: Request) -> tuple[Snapshot, NextDigest | None]:
        snap = await run_in_threadpool(self.workspace.current)
        if snap.config is None:
            return snap, None
        wanted = (request.path_params["entry"], request.path_params["channel"])
        digests = await run_in_threadpool(self._digests, snap)
        return snap, next((d for d in digests if (d.entry.name, d.channel) == wanted), None)

    async def digest(self, request: Request, notice: dict[str, Any] | None = None,
                     status: int = 200, to: str | None = None) -> HTMLResponse:
        snap, found = await self._digest(request)
        if snap.config is None or found is None:
            return self._render(snap, "digest.html.j2", 500 if snap.config is None else 404,
                                digest=None, entry=request.path_params["entry"])
        width = request.query_params.get("width", "desktop")
        edition = found.edition
        return self._render(
            snap, "digest.html.j2", status, digest=found, entry=found.entry.name, notice=notice,
            token=self.token, test_channel=_test_channel(snap.config), sender=_sender(snap.config),
            to=to if to is not None else ", ".join(snap.config.preview.test_recipients),
            text=Fill.of(edition.text, escape=False)(sample_values(snap.config)) if edition else "",
            width=width if width in WIDTHS else "desktop", widths=WIDTHS,
            dark=request.query_params.get("theme") == "dark",
            src=f"/digests/{found.entry.name}/{found.channel}/email.html")

    async def digest_html(self, request: Request) -> Response:
        snap, found = await self._digest(request)
        if snap.config is None or found is None or found.edition is None:
            return PlainTextResponse("no such digest (or it has no articles yet)", status_code=404)
        return _email_page(found.edition.html, snap.config, request)

    async def post(self, request: Request, notice: dict[str, Any] | None = None,
                   status: int = 200, to: str | None = None) -> HTMLResponse:
        snap = await run_in_threadpool(self.workspace.current)
        slug = request.path_params["slug"]
        if snap.config is None:
            return self._render(snap, "post.html.j2", 500, slug=slug)
        item = snap.item(slug)
        if item is None:
            problem = snap.broken().get(slug)
            return self._render(snap, "post.html.j2", 200 if problem else 404, slug=slug,
                                problem=problem)
        states = (await run_in_threadpool(self._states, snap, [slug])).get(slug, [])
        width = request.query_params.get("width", "desktop")
        return self._render(
            snap, "post.html.j2", status, slug=slug, item=item, states=states, notice=notice,
            warnings=_warnings(snap, item), sender=_sender(snap.config), cards=_cards(item),
            devto=_devto(snap.config, item), token=self.token,
            text=Fill.of(item.edition.text, escape=False)(sample_values(snap.config)),
            width=width if width in WIDTHS else "desktop", widths=WIDTHS,
            test_channel=_test_channel(snap.config), dark=request.query_params.get("theme") == "dark",
            to=to if to is not None else ", ".join(snap.config.preview.test_recipients))

    async def email_html(self, request: Request) -> Response:
        snap = await run_in_threadpool(self.workspace.current)
        item = snap.item(request.path_params["slug"])
        if item is None or snap.config is None:
            return PlainTextResponse("no such post (or it failed to render)", status_code=404)
        return _email_page(item.edition.html, snap.config, request)

    async def email_text(self, request: Request) -> Response:
        snap = await run_in_threadpool(self.workspace.current)
        item = snap.item(request.path_params["slug"])
        if item is None or snap.config is None:
            return PlainTextResponse("no such post (or it failed to render)", status_code=404)
        return PlainTextResponse(Fill.of(item.edition.text, escape=False)(sample_values(snap.config)))

    async def send_test(self, request: Request) -> Response:
        slug = request.path_params["slug"]
        return await self._send_form(request, self.post, lambda config, to: send_test(config, slug, to))

    async def digest_send_test(self, request: Request) -> Response:
        entry = request.path_params["entry"]
        return await self._send_form(request, self.digest,
                                     lambda config, to: send_digest_test(config, entry, to, now=self.now))

    async def _send_form(self, request: Request, page: Callable[..., Any],
                         send: Callable[[Config, list[str]], list[SentTest]]) -> Response:
        """"Send test": check the form's token, send, and show the page again with the outcome
        (and the addresses as typed)."""
        form = await request.form()
        to = str(form.get("to") or "")
        if not secrets.compare_digest(str(form.get("token") or ""), self.token):
            return PlainTextResponse("this form is out of date: reload the page and try again",
                                     status_code=403)
        snap = await run_in_threadpool(self.workspace.current)
        if snap.config is None:
            return await page(request, status=500)
        try:
            results = await run_in_threadpool(send, snap.config, [to])
        except PipelineError as exc:
            return await page(request, {"ok": False, "message": str(exc)}, 400, to=to)
        failed = [r for r in results if not r.ok]
        message = "; ".join(f"{r.address}: {r.detail}" for r in failed) if failed else \
            f"Test sent to {', '.join(r.address for r in results)}"
        return await page(request, {"ok": not failed, "message": message}, 502 if failed else 200, to=to)


def _email_page(html: str, config: Config, request: Request) -> HTMLResponse:
    """A compiled edition filled for the sample reader, links opening outside the page's frame,
    on a dark canvas with `?theme=dark`."""
    html = Fill.of(html, escape=True)(sample_values(config))
    extra = '<base target="_blank">' + (DARK if request.query_params.get("theme") == "dark" else "")
    return HTMLResponse(html.replace("<head>", "<head>" + extra, 1), headers={"Cache-Control": "no-store"})


def _test_channel(config: Config) -> str | None:
    try:
        return email_channel(config)
    except PipelineError:
        return None       # the send itself reports why


def _warnings(snap: Snapshot, item: Rendered) -> list[Problem]:
    """The post's warnings: email lint, and problems found while loading it."""
    assert snap.batch is not None
    return [p for p in snap.batch.problems
            if p.where == item.post.path and p.severity is Severity.WARNING]


def _sender(config: Config) -> dict[str, str]:
    name, address = parseaddr(config.sender)
    return {"name": name or address, "address": address}


def _cards(item: Rendered) -> list[dict[str, Any]]:
    """Each network's post (or thread) as the page draws it."""
    cards = []
    for network, single in item.snippets.items():
        parts = item.threads.get(network) or (single,)
        cards.append({"network": network, "label": NETWORK_NAMES.get(network, network.title()),
                      "parts": [_part(s) for s in parts], "post": item.post,
                      "host": urlsplit(item.post.canonical_url).netloc})
    return cards


def _part(snippet: Snippet) -> dict[str, Any]:
    """A snippet cut around its link, so the template can draw the link as one."""
    link = snippet.link
    text = snippet.text
    if link is None:
        return {"before": text, "link": None, "after": "", "uri": None, "snippet": snippet}
    return {"before": text[:link.start], "link": text[link.start:link.end], "after": text[link.end:],
            "uri": link.uri, "snippet": snippet}


def _devto(config: Config, item: Rendered) -> dict[str, Any]:
    """The dev.to cross-post as the first `type: devto` channel (or a default one) sends it."""
    name, settings = next(((n, c) for n, c in config.channels.items() if c.get("type") == "devto"),
                          (None, {}))
    tags = settings.get("tags")
    fields = article(item, published=settings.get("published") is True,
                     tags=tags if isinstance(tags, list) else None)
    return {"channel": name, "article": fields}


@functools.lru_cache(maxsize=4)
def _environment(templates: Path) -> jinja2.Environment:
    """One Jinja2 environment per templates folder (it reloads a template whose file changed)."""
    return environment(templates)
