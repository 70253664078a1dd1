"""The ESP webhooks by name: PROVIDERS maps each one's name (its key under `bounces.webhooks`, its
path under `/webhooks/`) to its Provider."""

from pipeline.bounces.esp.base import Provider
from pipeline.bounces.esp.mailgun import Mailgun
from pipeline.bounces.esp.postmark import Postmark
from pipeline.bounces.esp.sendgrid import Sendgrid
from pipeline.bounces.esp.ses import Ses
from pipeline.config import Config

PROVIDERS: dict[str, type[Provider]] = {p.name: p for p in (Ses, Postmark, Mailgun, Sendgrid)}


def configured_providers(config: Config) -> dict[str, Provider]:
    """The providers configured under `bounces.webhooks`, built. Raises ConfigError naming the key
    of one that cannot be (a SendGrid key that is no key)."""
    settings = config.bounces.webhooks
    return {name: kind(getattr(settings, name), where=config.where("bounces", "webhooks", name))
            for name, kind in PROVIDERS.items() if getattr(settings, name) is not None}
