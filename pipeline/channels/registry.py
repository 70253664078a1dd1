"""The channel types, and channels built from `config.yaml` `channels:` entries by `type`.

CHANNELS maps each type to its class. A channel's module, and the client library it brings
(tweepy, Mastodon.py, atproto...), is imported the first time its type is looked up: an email
send does not pay for the social networks' libraries (about 40 MB of memory).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import ValidationError

from pipeline.channels.base import Channel, ChannelSettings
from pipeline.channels.outbox import Outbox
from pipeline.config import Config, mask_secrets, resolve_env
from pipeline.errors import ConfigError

_MODULES = {"outbox": "outbox:Outbox", "smtp": "smtp:Smtp", "x": "x:X", "mastodon": "mastodon:Mastodon",
            "bluesky": "bluesky:Bluesky", "webhook": "webhook:Webhook", "devto": "devto:Devto",
            "threads": "threads:Threads", "telegram": "telegram:Telegram",
            "linkedin": "linkedin:LinkedIn", "facebook": "facebook:Facebook"}


class _Registry(Mapping[str, Any]):
    """type -> channel class, each module imported on first use."""

    def __init__(self) -> None:
        self._loaded: dict[str, Any] = {}

    def __getitem__(self, kind: str) -> Any:
        if kind not in self._loaded:
            module, _, cls = _MODULES[kind].partition(":")
            self._loaded[kind] = getattr(importlib.import_module(f"pipeline.channels.{module}"), cls)
        return self._loaded[kind]

    def __contains__(self, kind: object) -> bool:
        return kind in _MODULES

    def __iter__(self) -> Iterator[str]:
        return iter(_MODULES)

    def __len__(self) -> int:
        return len(_MODULES)


CHANNELS: Mapping[str, Any] = _Registry()


def channel_settings(config: Config, name: str) -> tuple[Any, ChannelSettings]:
    """The channel class and validated settings of `channels.<name>`, environment references
    filled. Raises ConfigError naming the key path."""
    if name not in config.channels:
        known = ", ".join(config.channels) or "none"
        raise ConfigError(f"{config.source}: channels: no channel named {name!r} (configured: {known})")
    entry = dict(config.channels[name])
    kind = entry.pop("type")
    if kind not in CHANNELS:
        raise ConfigError(f"{config.where('channels', name, 'type')}: unknown channel type {kind!r}; "
                          f"known types: {', '.join(sorted(CHANNELS))}")
    cls = CHANNELS[kind]
    raw = entry
    entry = resolve_env(entry, f"{config.source}: channels.{name}")
    try:
        return cls, cls.Settings.model_validate(entry)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            msg = ("unknown key; remove it or check its spelling" if err["type"] == "extra_forbidden"
                   else "required key is missing" if err["type"] == "missing"
                   else err["msg"].removeprefix("Value error, "))
            lines.append(f"{config.where('channels', name, *err['loc'])}: {msg}")
        raise ConfigError(mask_secrets("\n".join(lines), raw)) from None


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
