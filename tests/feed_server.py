"""A real HTTP server for feed tests (pytest-httpserver, on a free loopback port) that serves feed
documents, honours conditional GET (ETag / Last-Modified -> 304) and records each request's
headers; plus builders for small RSS documents and a config with feed sources."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime
from html import escape
from pathlib import Path
from typing import Any

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
