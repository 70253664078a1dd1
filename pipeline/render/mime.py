"""Edition -> an RFC 5322 message (multipart/alternative: text, then HTML) with the standard
`email` package. Header values are single lines: a newline from a post cannot reach a header."""

from __future__ import annotations

import hashlib
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime

from pipeline.models import Edition
from pipeline.render.email import one_line
from pipeline.render.personalize import Fill


def message_id(edition_key: str, recipient: str, domain: str) -> str:
    """A Message-ID that is the same for the same (edition, recipient): a resend after a crash
    is recognisably the same message."""
    digest = hashlib.sha256(f"{edition_key}\0{recipient.lower()}".encode()).hexdigest()[:32]
    return f"<{digest}@{domain}>"


def build_message(edition: Edition, *, sender: str, to: str, values: dict[str, str], domain: str,
                  date: datetime, reply_to: str | None = None,
                  headers: dict[str, str] | None = None, subject_prefix: str = "") -> EmailMessage:
    """One personalized message. `values` fills the recipient placeholders; `headers` adds
    more (List-Unsubscribe, ...)."""
    msg = EmailMessage(policy=SMTP)
    msg["Subject"] = one_line(subject_prefix + edition.subject)
    msg["From"] = one_line(sender)
    msg["To"] = one_line(to)
    if reply_to:
        msg["Reply-To"] = one_line(reply_to)
    msg["Date"] = format_datetime(date)
    msg["Message-ID"] = message_id(edition.key, to, domain)
    msg["MIME-Version"] = "1.0"
    for name, value in (headers or {}).items():
        msg[name] = one_line(value)
    msg.set_content(Fill.of(edition.text, escape=False)(values), subtype="plain", cte="quoted-printable")
    msg.add_alternative(Fill.of(edition.html, escape=True)(values), subtype="html", cte="quoted-printable")
    return msg
