"""The ESP webhooks by name: PROVIDERS maps each one's name (its key under `bounces.webhooks`, its
path under `/webhooks/`) to its Provider."""

from pipeline.bounces.esp.base import Provider
from pipeline.bounces.esp.mailgun import Mailgun
from pipeline.bounces.esp.postmark import Postmark
from pipeline.bounces.esp.sendgrid import Sendgrid
from pipeline.bounces.esp.ses import Ses

PROVIDERS: dict[str, type[Provider]] = {p.name: p for p in (Ses, Postmark, Mailgun, Sendgrid)}
