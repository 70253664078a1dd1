"""Channels, built from `config.yaml` `channels:` entries by `type`."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from pipeline.channels.base import Channel, ChannelSettings
from pipeline.channels.bluesky import Bluesky
from pipeline.channels.devto import Devto
from pipeline.channels.mastodon import Mastodon
from pipeline.channels.outbox import Outbox
from pipeline.channels.smtp import Smtp
from pipeline.channels.webhook import Webhook
from pipeline.channels.x import X
from pipeline.config import Config, resolve_env
from pipeline.errors import ConfigError

CHANNELS: dict[str, Any] = {c.type: c for c in (Outbox, Smtp, X, Mastodon, Bluesky, Webhook, Devto)}

__all__ = ["CHANNELS", "Channel", "ChannelSettings", "build_channel", "channel_settings"]


def channel_settings(config: Config, name: str) -> tuple[Any, ChannelSettings]:
    """The channel class and validated settings of `channels.<name>`, environment references
    filled. Raises ConfigError naming the key path."""
    if name not in config.channels:
        known = ", ".join(config.channels) or "none"
        raise ConfigError(f"{config.source}: channels: no channel named {name!r} (configured: {known})")
    entry = dict(config.channels[name])
    kind = entry.pop("type")
    if kind not in CHANNELS:
        raise ConfigError(f"{config.source}: channels.{name}.type: unknown channel type {kind!r}; "
                          f"known types: {', '.join(sorted(CHANNELS))}")
    cls = CHANNELS[kind]
    entry = resolve_env(entry, f"{config.source}: channels.{name}")
    try:
        return cls, cls.Settings.model_validate(entry)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            path = ".".join(str(p) for p in err["loc"])
            msg = ("unknown key; remove it or check its spelling" if err["type"] == "extra_forbidden"
                   else "required key is missing" if err["type"] == "missing"
                   else err["msg"].removeprefix("Value error, "))
            lines.append(f"{config.source}: channels.{name}.{path}: {msg}")
        raise ConfigError("\n".join(lines)) from None


def build_channel(config: Config, name: str, *, dry_run: bool = False) -> Channel:
    """The channel named `name`; with `dry_run`, an outbox that stands in for it (same name and
    kinds, so the plan is the same, but everything lands in the outbox folder)."""
    if dry_run:
        # No settings are validated or secrets read: a dry run needs no credentials.
        entry = config.channels.get(name)
        if entry is None or entry.get("type") not in CHANNELS:
            channel_settings(config, name)          # raises the error naming the problem
        cls = CHANNELS[entry["type"]]
        field = cls.Settings.model_fields.get("network")
        network = entry.get("network") or getattr(cls, "network", None) or (field and field.default)
        return Outbox.standing_in_for(name, cls.kinds, config, network=network)
    cls, settings = channel_settings(config, name)
    return cls(name=name, settings=settings, config=config)
