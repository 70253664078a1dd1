"""A real HTTP server for feed tests (pytest-httpserver, on a free loopback port) that serves feed
documents, honours conditional GET (ETag / Last-Modified -> 304) and records each request's
headers; a server that drips its answer a byte at a time; a network (resolver and connector)
the tests control; plus builders for small RSS documents and a config with feed sources."""

from __future__ import annotations

import ipaddress
import json
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import format_datetime
from html import escape
from pathlib import Path
from typing import Any

import httpcore
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from pipeline.config import Config, load_config

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "feeds"
RSS_TYPE = "application/rss+xml; charset=utf-8"
ATOM_TYPE = "application/atom+xml; charset=utf-8"


@dataclass
class Document:
    body: bytes
    content_type: str = RSS_TYPE
    status: int = 200
    etag: str | None = None
    last_modified: str | None = None
    location: str | None = None      # a redirect (status 301)


class FeedServer:
    """Serves `put` documents by path; `requests` holds (path, headers) of every request."""

    def __init__(self, http: HTTPServer) -> None:
        self.http = http
        self.documents: dict[str, Document] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        http.expect_request(re.compile(r"/.*")).respond_with_handler(self._handle)

    def put(self, path: str, body: str | bytes, **settings: Any) -> str:
        """Serve `body` at `path` (replacing what was there); returns its URL."""
        data = body.encode("utf-8") if isinstance(body, str) else body
        self.documents[path] = Document(body=data, **settings)
        return self.url(path)

    def fixture(self, path: str, name: str, **settings: Any) -> str:
        """Serve tests/fixtures/feeds/NAME at `path`, byte for byte."""
        return self.put(path, (FIXTURES / name).read_bytes(), **settings)

    def redirect(self, path: str, to: str) -> str:
        """Answer `path` with a 301 to the URL `to`; returns the URL of `path`."""
        return self.put(path, b"", status=301, location=to)

    def url(self, path: str) -> str:
        return self.http.url_for(path)

    def requests_to(self, path: str) -> list[dict[str, str]]:
        return [headers for p, headers in self.requests if p == path]

    def _handle(self, request: Request) -> Response:
        self.requests.append((request.path, dict(request.headers)))
        doc = self.documents.get(request.path)
        if doc is None:
            return Response("not found", status=404)
        if doc.location:
            return Response("moved", status=doc.status, headers={"Location": doc.location})
        if doc.status != 200:
            return Response("server trouble", status=doc.status)
        validators = {k: v for k, v in (("ETag", doc.etag), ("Last-Modified", doc.last_modified)) if v}
        if ((doc.etag and request.headers.get("If-None-Match") == doc.etag)
                or (doc.last_modified and request.headers.get("If-Modified-Since") == doc.last_modified)):
            return Response(status=304, headers=validators)
        return Response(doc.body, status=200, content_type=doc.content_type, headers=validators)


class DripServer:
    """A loopback HTTP server that answers 200 with a Content-Length, then sends the body one byte
    every `interval` seconds: a peer slow enough to hold a reader whose timeout is per read. It
    gives up after `limit` seconds (so a reader without a total deadline is not held forever)."""

    def __init__(self, body: bytes, *, interval: float = 0.05, limit: float = 20) -> None:
        self.body, self.interval, self.limit = body, interval, limit
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}/feed.xml"

    def __enter__(self) -> DripServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._listener.close()
        self._thread.join(timeout=5)

    def _serve(self) -> None:
        self._listener.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:             # the accept timed out, or the listener was closed
                continue
            with conn:
                self._drip(conn)

    def _drip(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        request = b""
        try:
            while b"\r\n\r\n" not in request:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                request += chunk
            conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Type: {RSS_TYPE}\r\n"
                         f"Content-Length: {len(self.body)}\r\n\r\n".encode())
            give_up = time.monotonic() + self.limit
            for byte in self.body:
                if self._stop.wait(self.interval) or time.monotonic() > give_up:
                    return
                conn.sendall(bytes([byte]))
        except OSError:                 # the reader gave up and closed the connection
            return


@dataclass
class Network:
    """A resolver and a connector for `pipeline.intake.feeds` (`resolve`, `connect`) that the test
    controls, so a feed can live at a public-looking name without any traffic leaving 127.0.0.0/8:
    `names` maps a host name to its addresses (an IP literal resolves to itself), `routes` maps a
    public-looking address to the loopback address that stands in for it, `connected` records
    every (address, port) connected to, and `rebind` gives a name changing answers (DNS
    rebinding). A connection to any other address is refused without a packet sent."""

    names: dict[str, list[str]] = field(default_factory=dict)
    routes: dict[str, tuple[str, int]] = field(default_factory=dict)
    connected: list[tuple[str, int]] = field(default_factory=list)
    rebind: dict[str, list[list[str]]] = field(default_factory=dict)   # one answer per lookup, then `names`

    def resolve(self, host: str, port: int) -> list[str]:
        try:
            ipaddress.ip_address(host)
            return [host]                   # as getaddrinfo does
        except ValueError:
            pass
        if self.rebind.get(host):
            return self.rebind[host].pop(0)
        if host not in self.names:
            raise socket.gaierror(socket.EAI_NONAME, f"test network: no such host {host!r}")
        return self.names[host]

    def connect(self, address: str, port: int, timeout: float | None) -> httpcore.NetworkStream:
        self.connected.append((address, port))
        target = self.routes.get(address)
        if target is None and ipaddress.ip_address(address) in ipaddress.ip_network("127.0.0.0/8"):
            target = (address, port)
        if target is None:
            raise httpcore.ConnectError(f"test network: no route to {address}")
        return httpcore.SyncBackend().connect_tcp(*target, timeout=timeout)


def item(key: str, *, title: str | None = None, date: datetime | None = None, body: str | None = None,
         categories: tuple[str, ...] = ()) -> str:
    """One RSS <item> with guid `key`, linking https://blog.example/KEY/."""
    parts = [f"<title>{escape(title or f'Post {key}')}</title>",
             f"<link>https://blog.example/{key}/</link>",
             f'<guid isPermaLink="false">{escape(key)}</guid>',
             f"<description>{escape(body or f'<p>Body of {key}.</p>')}</description>"]
    if date is not None:
        parts.append(f"<pubDate>{format_datetime(date)}</pubDate>")
    parts += [f"<category>{escape(c)}</category>" for c in categories]
    return "<item>" + "".join(parts) + "</item>"


def rss(*items: str, title: str = "Example Blog") -> str:
    """An RSS 2.0 document holding `items` (newest first, as feeds list them)."""
    return ('<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel>'
            f"<title>{escape(title)}</title><link>https://blog.example/</link>"
            f"<description>Test feed</description>{''.join(items)}</channel></rss>")


def with_sources(project: Path, *feeds: dict[str, Any], posts: bool = True) -> Config:
    """Write `sources:` (the posts folder unless `posts=False`, then `feeds`) into the project's
    config.yaml, before `channels:` (which stays last), and load it."""
    path = project / "config.yaml"
    text = path.read_text(encoding="utf-8")
    entries = ([{"type": "posts"}] if posts else []) + [{"type": "feed", **f} for f in feeds]
    block = "sources:\n" + "".join(f"  - {json.dumps(e)}\n" for e in entries)   # JSON is YAML
    assert text.count("\nchannels:\n") == 1
    path.write_text(text.replace("\nchannels:\n", f"\n{block}\nchannels:\n"), encoding="utf-8")
    return load_config(path)
