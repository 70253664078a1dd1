"""Test sends: a post's email edition (or the next digest) to a few addresses before the real send.

A test goes through a real email channel when one is configured (an smtp channel, not the outbox),
exactly as the real send would, with three differences: the subject starts with `[TEST]`, it gets a
Message-ID of its own (so a mail provider cannot take the real send for a duplicate of the test and
drop it), and nothing is written to the ledger: the real send is neither marked done nor blocked.
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from pipeline.channels.base import Channel
from pipeline.channels.registry import CHANNELS, build_channel, channel_settings
from pipeline.channels.smtp_session import envelope_address
from pipeline.config import Config
from pipeline.errors import ChannelError, ConfigError, PipelineError
from pipeline.intake.posts import load_posts
from pipeline.models import Delivery, Edition, Post
from pipeline.preview import sample_values
from pipeline.publish import sender_domain
from pipeline.render.email import render_edition
from pipeline.render.mime import build_message, list_headers
from pipeline.store.subscribers import normalize
from pipeline.timetable.schedule import digest_edition, next_digests

log = logging.getLogger(__name__)

PREFIX = "[TEST] "
MAX_RECIPIENTS = 20     # a test, not a send: a longer list is a mistake (or a pasted subscriber list)


@dataclass(frozen=True, kw_only=True)
class SentTest:
    """What happened to one test message."""

    address: str
    ok: bool
    detail: str


def email_channel(config: Config, name: str | None = None, *,
                  key: tuple[str, str] = ("preview", "test_channel"), purpose: str = "test sends") -> str:
    """The email channel for `purpose`: `name` (a command's option), else the one config names at
    `key` (`preview.test_channel`; `subscribe.channel` for confirmation emails), else the first
    configured channel that sends real email (not an outbox: a test is for seeing the message in a
    real inbox, a confirmation for reaching the reader), else the first outbox. Raises
    ConfigError naming the key."""
    configured = getattr(getattr(config, key[0]), key[1])
    if not name and configured is None:
        sending = [n for n, c in config.channels.items()
                   if "email" in getattr(CHANNELS.get(c.get("type")), "kinds", ())]
        real = [n for n in sending if config.channels[n].get("type") != "outbox"]
        if not sending:
            raise ConfigError(f"{config.source}: channels: no channel sends email; add an smtp or "
                              f"outbox channel for {purpose}")
        return (real or sending)[0]
    if name:
        where = f"{config.source}: channels"
    else:
        name, where = configured or "", config.where(*key)
    entry = config.channels.get(name)
    if entry is None:
        raise ConfigError(f"{where}: no channel named {name!r} "
                          f"(configured: {', '.join(config.channels) or 'none'})")
    if "email" not in getattr(CHANNELS.get(entry.get("type")), "kinds", ()):
        raise ConfigError(f"{where}: channel {name!r} sends no email; name an smtp or outbox "
                          f"channel for {purpose}")
    return name


def describe_channel(config: Config, name: str) -> str:
    """Which channel, and where it sends: "channel newsletter (smtp, smtp.example.com:587)", or
    for an outbox "outbox (out/outbox: nothing leaves this machine)". Raises ConfigError."""
    kind = config.channels[name]["type"]
    _, settings = channel_settings(config, name)
    if kind == "outbox":
        label = "outbox" if name == "outbox" else f"outbox channel {name}"
        return f"{label} ({getattr(settings, 'path', '')}: nothing leaves this machine)"
    host, port = getattr(settings, "host", None), getattr(settings, "port", None)
    return f"channel {name} ({kind}{f', {host}:{port}' if host else ''})"


def parse_addresses(addresses: Sequence[str]) -> list[str]:
    """Validated, normalized, de-duplicated addresses. Raises PipelineError naming a bad one."""
    out: list[str] = []
    for raw in addresses:
        for address in (a.strip() for a in raw.replace(";", ",").split(",")):
            if not address:
                continue
            try:
                normal = normalize(address)
            except ValueError as exc:
                raise PipelineError(f"not an email address: {address!r} ({exc})") from None
            if normal.lower() not in (o.lower() for o in out):   # the subscriber list's rule too
                out.append(normal)
    if not out:
        raise PipelineError("no address to send the test to: give --to ADDRESS or set "
                            "preview.test_recipients in config.yaml")
    if len(out) > MAX_RECIPIENTS:
        raise PipelineError(f"{len(out)} addresses: a test goes to at most {MAX_RECIPIENTS}; "
                            "use `pipeline publish` for a real send")
    return out


def find_post(config: Config, slug: str) -> Post:
    """The post with this slug. Raises PipelineError with the reason when it cannot be loaded,
    or naming the slugs it may be a typo of."""
    loaded = load_posts(config)
    for post in loaded.posts:
        if post.slug == slug:
            return post
    stem = [p for p in loaded.problems if p.where.rsplit("/", 1)[-1].removesuffix(".md") == slug]
    if stem:
        raise PipelineError(str(stem[0]))
    near = near_slugs(slug, loaded.posts)
    if near:
        raise PipelineError(f"no post with slug {slug!r} in {config.posts}; did you mean: {', '.join(near)}?")
    raise PipelineError(f"no post with slug {slug!r} in {config.posts}; `pipeline preview` lists the "
                        f"slugs (a post's `slug:`, else its file name: `ls {config.posts}`)")


_DATE_PREFIX = re.compile(r"^\d{4}-\d{2}-\d{2}-")


def near_slugs(slug: str, posts: Sequence[Post], *, limit: int = 5) -> list[str]:
    """The slugs `slug` may be a typo or a fragment of, best first: those containing it, then those
    whose slug (with or without its date), file name, title or one word of the slug is close to
    it (difflib's ratio of at least 0.6)."""
    wanted = slug.strip().lower()
    if not wanted:
        return []
    by_text: dict[str, list[str]] = {}      # a text a post may be remembered by -> its slugs
    for post in posts:
        undated = _DATE_PREFIX.sub("", post.slug)
        stem = post.path.rsplit("/", 1)[-1].removesuffix(".md")
        for text in {post.slug, undated, stem, post.title, *undated.split("-")}:
            if len(text) >= 3:
                by_text.setdefault(text.lower(), []).append(post.slug)
    contained = [p.slug for p in posts if wanted in p.slug.lower()]
    close = difflib.get_close_matches(wanted, list(by_text), n=limit * 4, cutoff=0.6)
    found = dict.fromkeys([*contained, *(s for text in close for s in by_text[text])])
    return list(found)[:limit]


def send_test(config: Config, slug: str, addresses: Sequence[str], *, channel: str | None = None,
              now: datetime | None = None) -> list[SentTest]:
    """Send the post's edition, marked [TEST], to each address through the email channel.
    Raises PipelineError when nothing can be sent (no post, bad address, channel not usable);
    a failure for one address is reported in its SentTest."""
    to = parse_addresses(addresses)
    post = find_post(config, slug)
    name = email_channel(config, channel)
    return _send(config, render_edition(post, config, channel=name), name, to, now or datetime.now(UTC))


def send_digest_test(config: Config, entry: str, addresses: Sequence[str], *, channel: str | None = None,
                     now: datetime | None = None) -> list[SentTest]:
    """Send the next digest of the timetable entry `entry`, as it stands now, marked [TEST]. Raises
    PipelineError for an unknown entry or a digest with nothing in it (nothing would be sent)."""
    to = parse_addresses(addresses)
    now = now or datetime.now(UTC)
    found = next((d for d in next_digests(config, now=now, render=False) if d.entry.name == entry), None)
    if found is None:
        names = ", ".join(e.name for e in config.schedule if e.edition == "digest") or "none"
        raise PipelineError(f"{config.source}: schedule: no digest entry named {entry!r} (digests: {names})")
    if not found.posts and config.digest.empty == "skip":
        raise PipelineError(f"the next {entry} digest has no articles yet, so nothing would be sent "
                            "(digest.empty: skip); there is nothing to test")
    name = email_channel(config, channel)
    edition = digest_edition(config, found.entry, name, found.fire_time, list(found.posts))
    return _send(config, edition, name, to, now)


def _send(config: Config, edition: Edition, name: str, to: list[str], now: datetime) -> list[SentTest]:
    """The edition, under a test key of its own, to each address through the channel `name`."""
    edition = replace(edition, key=f"test-{edition.key}-{now:%Y%m%dT%H%M%S%f}")
    sender_channel = build_channel(config, name)
    sender = getattr(sender_channel, "sender", config.sender)
    results = []
    try:
        for address in to:
            message = build_message(
                edition, sender=sender, to=address, values={**sample_values(config), "email": address},
                domain=sender_domain(sender, config), date=now, reply_to=config.email.reply_to,
                subject_prefix=PREFIX,
                headers={"X-Pipeline-Test": "yes", **list_headers(config, edition.key)})
            # The bounce mailbox, without VERP: a test address is no subscriber to map a bounce to.
            delivery = Delivery(key=f"{edition.key}:{address}", channel=name, edition=edition.key,
                                kind="email", recipient=address, message=bytes(message),
                                envelope_from=config.bounces.address or envelope_address(sender))
            results.append(_send_one(sender_channel, delivery, address))
    finally:
        sender_channel.close()
    return results


def _send_one(channel: Channel, delivery: Delivery, address: str) -> SentTest:
    try:
        receipt = channel.send(delivery)
    except ChannelError as exc:
        log.warning("test send of %s through %s failed: %s", delivery.edition, delivery.channel, exc)
        return SentTest(address=address, ok=False, detail=str(exc))
    log.info("test send of %s through %s: %s", delivery.edition, delivery.channel, receipt.detail)
    return SentTest(address=address, ok=True, detail=receipt.detail or "sent")
