"""The Channel protocol: where deliveries go. One module per channel type, one CHANNELS dict."""

from __future__ import annotations

from typing import ClassVar, Protocol

from pydantic import BaseModel, ConfigDict

from pipeline.config import Config
from pipeline.errors import ConfigError
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


def network_problem(config: Config, name: str, network: str, *, key: str | None = None) -> str | None:
    """Why the channel `name` would post nothing on `network` (it is not enabled under `networks:`,
    so no snippet is rendered for it), as a `config.yaml:LINE: key: message` line; None if it is.
    `key`: the channel's setting that names the network, when it has one."""
    settings = config.networks.get(network)
    if settings is not None and settings.enabled:
        return None
    where = config.where("channels", name, *((key,) if key else ()))
    other = f" or choose another `{key}`" if key else ""
    return (f"{where}: the {network} network is not enabled under `networks:`; "
            f"add `{network}: {{}}` there{other}")


def require_network(config: Config, name: str, network: str, *, key: str | None = None) -> None:
    """Raise ConfigError when `network_problem` finds one."""
    if (problem := network_problem(config, name, network, key=key)) is not None:
        raise ConfigError(problem)
