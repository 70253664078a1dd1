"""Channel limits that hold across every `pipeline worker` (store/throttle.py's `SharedRate`, a row
of the state database per limit), not per process:

- an SMTP channel's `rate:` becomes its `limit` (the same `reserve()` / `acquire()` its sends and
  the pump already call), so all workers together send at most `rate` messages a second;
- an HTTP channel's 429: the reset the network asked for holds every worker. A send first asks
  whether another worker got a 429 still in force; if so it fails with that wait (`retry_after`),
  which the publisher's rules then wait out or leave for later, as for the network's own 429.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from pipeline.channels.base import Channel
from pipeline.errors import ChannelError
from pipeline.models import Delivery, Receipt
from pipeline.store.throttle import SharedRate


def shared(channel: Channel, engine: Engine, limits: dict[str, SharedRate]) -> Channel:
    """`channel` with its limits shared through `engine` (`limits`: this process's SharedRate per
    channel name, made here on first use)."""
    settings = getattr(channel, "settings", None)
    rate = float(getattr(settings, "rate", 0) or 0)
    if channel.type == "smtp":
        if rate:
            limit = limits.setdefault(channel.name, SharedRate(engine, f"channel:{channel.name}", rate))
            channel.limit = limit  # type: ignore[attr-defined]
        return channel
    if hasattr(settings, "max_wait"):      # an HTTP channel: its 429s hold every worker
        limit = limits.setdefault(channel.name, SharedRate(engine, f"channel:{channel.name}", 0))
        return _HeldTogether(channel, limit)  # type: ignore[return-value]
    return channel


class _HeldTogether:
    """An HTTP channel whose 429s hold every worker (everything else is the channel's own)."""

    def __init__(self, channel: Channel, limit: SharedRate) -> None:
        self._channel, self._limit = channel, limit

    def __getattr__(self, name: str) -> Any:
        return getattr(self._channel, name)

    def send(self, delivery: Delivery) -> Receipt:
        held = self._limit.held_for()
        if held > 0:
            raise ChannelError(f"{self._channel.name}: rate limited (429, for every worker); the limit "
                               f"resets in {held:.0f} s", retryable=True, retry_after=held)
        try:
            return self._channel.send(delivery)
        except ChannelError as exc:
            if exc.retry_after is not None:
                self._limit.hold(datetime.now(UTC) + timedelta(seconds=exc.retry_after))
            raise

    def close(self) -> None:
        self._channel.close()
