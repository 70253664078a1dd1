"""Values that flow through the pipeline. Frozen, keyword-only, no I/O; validated where built."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"
    NOTE = "note"        # worth knowing, nothing to fix (a file in the posts folder that is not a post)


@dataclass(frozen=True, kw_only=True)
class Problem:
    """One finding about an input: where (file, key), what, and how bad."""

    where: str
    message: str
    severity: Severity = Severity.ERROR

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class Converted:
    """A text field given either as the text or as a function that makes it, called on the first
    read and kept: a post's HTML is converted from its Markdown only when something reads it
    (`schedule` reads dates and titles; `publish` renders one post of many). A data descriptor,
    so that a frozen dataclass's `__init__` stores through it (dataclasses call `__get__(None,
    cls)` for the default: there is none)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> str:
        if obj is None:
            raise AttributeError(self.name)
        value = obj.__dict__[self.name]
        if callable(value):
            value = value()
            obj.__dict__[self.name] = value
        return value

    def __set__(self, obj: Any, value: str | Callable[[], str]) -> None:
        obj.__dict__[self.name] = value


@dataclass(frozen=True, kw_only=True)
class Post:
    """An article as loaded from `posts/`: front matter and sanitized HTML body."""

    path: str                     # as shown to the user, e.g. posts/2020-09-01-ketamine.md
    slug: str
    title: str
    date: datetime                # always timezone-aware
    canonical_url: str
    body_markdown: str
    # Sanitized, links absolute; given as the HTML or as a function that converts it when read.
    body_html: Converted = Converted()
    author: str | None = None
    summary: str | None = None
    tags: tuple[str, ...] = ()
    image: str | None = None      # absolute URL
    image_alt: str | None = None
    draft: bool = False
    subject: str | None = None
    social: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    thread: bool = False
    publish_at: datetime | None = None
    channels: tuple[str, ...] = ()
    available_at: datetime | None = None   # a feed entry: when it was fetched and had settled

    def __post_init__(self) -> None:
        if self.date.tzinfo is None:
            raise ValueError(f"{self.path}: date must be timezone-aware")
        if not self.title.strip():
            raise ValueError(f"{self.path}: empty title")

    @property
    def sendable_from(self) -> datetime:
        """When the post could first be sent: its date, or for a feed entry (seen after it was
        dated) the later of its date and the time it was fetched and had settled."""
        return max(self.date, self.available_at) if self.available_at else self.date


@dataclass(frozen=True, kw_only=True)
class Footer:
    """The canonical-link footer: "Originally published at <site> on <date>."."""

    html: str
    text: str


@dataclass(frozen=True, kw_only=True)
class Edition:
    """One compiled email edition. `html` and `text` still hold per-recipient placeholders."""

    key: str                      # slug of the post (or digest id)
    subject: str
    preheader: str
    html: str
    text: str
    lint: tuple[Problem, ...] = ()

    def __post_init__(self) -> None:
        if "\n" in self.subject or "\r" in self.subject:
            raise ValueError("subject must be a single line")

    @property
    def size(self) -> int:
        """Size of the HTML part in bytes, as Gmail measures it for clipping."""
        return len(self.html.encode("utf-8"))


@dataclass(frozen=True, kw_only=True)
class Link:
    """A link inside a snippet: `text` as shown (character offsets), `uri` the target."""

    start: int
    end: int
    uri: str


@dataclass(frozen=True, kw_only=True)
class Snippet:
    """A post's text for one social network, counted the way that network counts."""

    network: str
    text: str
    length: int
    limit: int
    link: Link | None             # None for a thread part that does not carry the link
    tags: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()   # for the author: what the snippet left out and why (a tag "2024")

    def __post_init__(self) -> None:
        if self.length > self.limit:
            raise ValueError(f"{self.network} snippet is {self.length} long, limit {self.limit}")

    def as_json(self) -> dict[str, object]:
        return {"text": self.text, "length": self.length, "limit": self.limit,
                "link": self.link.uri if self.link else None, "tags": list(self.tags),
                **({"notes": list(self.notes)} if self.notes else {})}


@dataclass(frozen=True, kw_only=True)
class Rendered:
    """Everything rendered for one post: the email edition, snippets, footer."""

    post: Post
    edition: Edition
    snippets: Mapping[str, Snippet]
    footer: Footer
    # For a post with `social: {thread: true}`: per network, the parts of the thread in order.
    threads: Mapping[str, tuple[Snippet, ...]] = field(default_factory=lambda: MappingProxyType({}))

    def parts(self, network: str) -> tuple[Snippet, ...]:
        """What a network channel posts for this post: the thread's parts, or the one snippet."""
        return self.threads.get(network) or ((self.snippets[network],) if network in self.snippets else ())


class Status(StrEnum):
    """A delivery's state in the ledger."""

    PENDING = "pending"     # planned, not yet attempted (or deferred to `next_attempt_at`)
    SENDING = "sending"     # intent written; the result is not yet known
    SENT = "sent"
    FAILED = "failed"       # permanent: will not be retried unless asked (`pipeline retry --failed`)
    UNKNOWN = "unknown"     # the request may have reached the remote side; not retried blindly


@dataclass(frozen=True, kw_only=True)
class Recipient:
    """A subscriber as the email channel needs it."""

    email: str
    name: str | None
    uid: str


@dataclass(frozen=True, kw_only=True)
class Delivery:
    """One send: a deterministic `key`, the channel it goes through, and what it carries."""

    key: str
    channel: str
    edition: str                  # the post slug (or digest id) this delivery belongs to
    kind: str                     # "email" | "social" | "article"
    recipient: str | None = None  # the address, for email
    network: str | None = None    # the snippet's network, for social
    part: int = 0                 # part number within a thread (0: not a thread)
    message: bytes | None = None  # the complete RFC 5322 message, for email
    envelope_from: str | None = None
    snippet: Snippet | None = None
    rendered: Rendered | None = None
    reply_to_remote: str | None = None   # a thread's previous part, for chained replies
    thread_root_remote: str | None = None  # a thread's first part

    def __post_init__(self) -> None:
        if self.kind == "email" and (self.message is None or not self.recipient):
            raise ValueError(f"{self.key}: an email delivery needs a message and a recipient")


@dataclass(frozen=True, kw_only=True)
class Receipt:
    """The remote side's answer to a successful send."""

    key: str
    remote_id: str | None = None  # Message-ID, post id
    url: str | None = None        # where the post can be seen
    detail: str | None = None     # the server's reply, for the log
