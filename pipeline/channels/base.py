"""The Channel protocol: where deliveries go. One module per channel type, one CHANNELS dict."""

from __future__ import annotations

from typing import ClassVar, Protocol

from pydantic import BaseModel, ConfigDict

from pipeline.models import Delivery, Receipt


class ChannelSettings(BaseModel):
    """Base of each channel type's settings (the keys under `channels.<name>:` besides `type`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Channel(Protocol):
    """Sends deliveries. `send` is called from up to `concurrency` threads at once; it returns a
    Receipt or raises ChannelError (`retryable`, `unknown`, `fatal`, `retry_after`)."""

    type: ClassVar[str]
    kinds: ClassVar[frozenset[str]]     # what it accepts: "email", "social", "article"
    # What a row left `sending` by a crash becomes: "resend" (safe: same identity) or "unknown".
    crash_rule: ClassVar[str]
    name: str                           # the name in config.yaml
    concurrency: int

    def send(self, delivery: Delivery) -> Receipt:
        """Deliver one item."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...
