"""The outbox: email into a Maildir (readable by any mail client), social posts into a JSON Lines
file, cross-posts as Markdown files. The default channel, and what `--dry-run` sends to."""

from __future__ import annotations

import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from pipeline.channels.base import ChannelSettings
from pipeline.config import Config
from pipeline.models import Delivery, Receipt

if TYPE_CHECKING:
    import mailbox

DEFAULT_PATH = "out/outbox"


class OutboxSettings(ChannelSettings):
    path: str = DEFAULT_PATH


class Outbox:
    type: ClassVar[str] = "outbox"
    kinds: ClassVar[frozenset[str]] = frozenset({"email", "social", "article"})
    crash_rule: ClassVar[str] = "resend"
    Settings = OutboxSettings

    def __init__(self, *, name: str, settings: OutboxSettings, config: Config,
                 kinds: frozenset[str] | None = None, network: str | None = None) -> None:
        self.name = name
        self.network = network        # standing in for one network's channel: only its snippets
        self.concurrency = 1
        self.folder = config.path(settings.path)
        if kinds is not None:
            self.kinds = kinds  # type: ignore[misc]
        self._lock = threading.Lock()
        self._maildir: mailbox.Maildir | None = None

    @classmethod
    def standing_in_for(cls, name: str, kinds: frozenset[str], config: Config,
                        network: str | None = None) -> Outbox:
        """An outbox named like another channel, for `--dry-run`: it writes to the configured
        outbox folder (the first `type: outbox` channel's path, else out/outbox)."""
        path = next((c.get("path", DEFAULT_PATH) for c in config.channels.values()
                     if c.get("type") == "outbox"), DEFAULT_PATH)
        return cls(name=name, settings=OutboxSettings(path=path), config=config, kinds=kinds,
                   network=network)

    def send(self, delivery: Delivery) -> Receipt:
        with self._lock:
            if delivery.kind == "email":
                return self._mail(delivery)
            if delivery.kind == "article":
                return self._article(delivery)
            return self._social(delivery)

    def _mail(self, delivery: Delivery) -> Receipt:
        if self._maildir is None:
            # Imported here: `check` validates this channel's settings and writes no mail.
            import mailbox

            (self.folder / "mail").parent.mkdir(parents=True, exist_ok=True)
            self._maildir = mailbox.Maildir(self.folder / "mail", create=True)
        assert delivery.message is not None
        file_key = self._maildir.add(delivery.message)
        return Receipt(key=delivery.key, remote_id=file_key,
                       url=str(self.folder / "mail" / "new" / file_key))

    def _social(self, delivery: Delivery) -> Receipt:
        snippet = delivery.snippet
        assert snippet is not None
        line = {"key": delivery.key, "channel": self.name, "network": snippet.network,
                "post": delivery.edition, "part": delivery.part, "text": snippet.text,
                "length": snippet.length, "limit": snippet.limit,
                "link": snippet.link.uri if snippet.link else None,
                "in_reply_to": delivery.reply_to_remote,
                "at": datetime.now(UTC).isoformat(timespec="seconds")}
        path = self.folder / "social.jsonl"
        _append(path, json.dumps(line, ensure_ascii=False) + "\n")
        return Receipt(key=delivery.key, remote_id=delivery.key, url=f"{path}#{delivery.key}")

    def _article(self, delivery: Delivery) -> Receipt:
        assert delivery.rendered is not None
        post, footer = delivery.rendered.post, delivery.rendered.footer
        path = self.folder / "articles" / f"{post.slug}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"---\ntitle: {json.dumps(post.title, ensure_ascii=False)}\n"
                        f"canonical_url: {post.canonical_url}\n---\n\n"
                        f"{post.body_markdown.strip()}\n\n*{footer.text}*\n", encoding="utf-8")
        return Receipt(key=delivery.key, remote_id=post.slug, url=str(path))

    def close(self) -> None:
        self._maildir = None


def _append(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
