"""Edition -> an RFC 5322 message (multipart/alternative: text, then HTML) with the standard
`email` package. Header values are single lines: a newline from a post cannot reach a header."""

from __future__ import annotations

import contextlib
import hashlib
import re
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from urllib.parse import urlsplit

import idna

from pipeline.bounces.verp import edition_tag
from pipeline.config import Config
from pipeline.models import Edition
from pipeline.render.email import one_line
from pipeline.render.personalize import Fill, MessageParts, header_address, message_id, qp

__all__ = ["MessageTemplate", "build_message", "feedback_id", "list_headers", "list_host", "message_id"]

HEADER_LINE = 78        # RFC 5322's recommended line length, which `Feedback-ID` is kept within
_UNSAFE_ID = re.compile(r"[^A-Za-z0-9._-]+")


def list_headers(config: Config, edition_key: str) -> dict[str, str]:
    """`List-Id` (RFC 2919) and `Feedback-ID` (Gmail's feedback loop) of a newsletter message:
    `"<site.name>" <<email.list_name>.<site host>>` and `<edition>:<list_name>:<site host>`, the
    host without its port and as its IDNA A-label."""
    host = list_host(config)
    name = config.site.name.replace("\\", "\\\\").replace('"', '\\"')
    return {"List-Id": f'"{name}" <{config.email.list_name}.{host}>',
            "Feedback-ID": feedback_id(edition_key, config.email.list_name, host)}


def list_host(config: Config) -> str:
    """The site's host as a domain: no port, no trailing dot, an internationalized name as its
    A-label (a header stays ASCII)."""
    host = (urlsplit(config.site.url).hostname or config.site.host).rstrip(".")
    with contextlib.suppress(idna.IDNAError, UnicodeError):
        return idna.encode(host, uts46=True).decode("ascii")
    return host


def feedback_id(edition_key: str, list_name: str, host: str) -> str:
    """`<edition>:<list>:<host>`, the edition key in letters, digits, `.`, `_` and `-` (a colon
    would split it). Gmail groups its spam reports by each field; a key too long for one header
    line is cut and keeps 8 hex digits of its hash, so that two editions never share an id."""
    edition = _UNSAFE_ID.sub("-", edition_key).strip("-") or edition_tag(edition_key)
    room = HEADER_LINE - len(f"Feedback-ID: :{list_name}:{host}")
    if len(edition) > room:
        edition = f"{edition[:max(room - 9, 0)].rstrip('-')}-{edition_tag(edition_key)}".lstrip("-")
    return f"{edition}:{list_name}:{host}"


def build_message(edition: Edition, *, sender: str, to: str, values: dict[str, str], domain: str,
                  date: datetime, reply_to: str | None = None,
                  headers: dict[str, str] | None = None, subject_prefix: str = "") -> EmailMessage:
    """One personalized message. `values` fills the recipient placeholders (a value for a field
    the edition does not use is ignored); `headers` adds more: a newsletter's `list_headers`,
    List-Unsubscribe, ..."""
    msg = EmailMessage(policy=SMTP)
    msg["Subject"] = one_line(subject_prefix + edition.subject)
    msg["From"] = one_line(sender)
    msg["To"] = one_line(header_address(to))
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


class MessageTemplate:
    """An edition's message serialized once, with the per-recipient parts left open.

    Filling it for a recipient joins pre-encoded bytes: MIME is never rebuilt per recipient.
    Bodies are quoted-printable; each filled-in value stands on lines of its own, joined by soft
    line breaks, so every line stays within RFC 2045's 76 characters and decodes to exactly the
    text `Fill` would give. `extra_headers`: the same for every recipient (a newsletter's
    `list_headers`).
    """

    def __init__(self, edition: Edition, *, sender: str, domain: str, date: datetime,
                 reply_to: str | None = None, one_click: bool = True, subject_prefix: str = "",
                 extra_headers: dict[str, str] | None = None) -> None:
        self.edition_key = edition.key
        self.domain = domain
        boundary = "==_" + hashlib.sha256(edition.html.encode()).hexdigest()[:24]
        static = EmailMessage(policy=SMTP)
        static["Subject"] = one_line(subject_prefix + edition.subject)
        static["From"] = one_line(sender)
        if reply_to:
            static["Reply-To"] = one_line(reply_to)
        static["Date"] = format_datetime(date)
        static["MIME-Version"] = "1.0"
        if one_click:
            static["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        for name, value in (extra_headers or {}).items():
            static[name] = one_line(value)
        part = ('--{b}\r\nContent-Type: text/{t}; charset="utf-8"\r\n'
                'Content-Transfer-Encoding: quoted-printable\r\n\r\n')
        text_head = part.format(b=boundary, t="plain").encode()
        html_head = ("\r\n" + part.format(b=boundary, t="html")).encode()
        # Everything after the recipient's headers as one list of encoded pieces, with a slot
        # (index, field, HTML-escaped) where each filled-in value goes.
        body: list[bytes] = [f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'.encode()]
        slots: list[tuple[int, str, bool]] = []
        for head, fill in ((text_head, Fill.of(edition.text, escape=False)),
                           (html_head, Fill.of(edition.html, escape=True))):
            pieces = [qp(p, soft_end=i < len(fill.fields)) for i, p in enumerate(fill.pieces)]
            body += [head, pieces[0]]
            for field, piece in zip(fill.fields, pieces[1:], strict=True):
                slots.append((len(body), field, fill.escape))
                body += [b"", piece]
        body.append(f"\r\n--{boundary}--\r\n".encode())
        self.parts = MessageParts(edition_key=edition.key, domain=domain,
                                  head=bytes(static).split(b"\r\n\r\n", 1)[0] + b"\r\n",
                                  body=tuple(body), slots=tuple(slots))

    def render(self, *, to: str, values: dict[str, str], list_unsubscribe: str | None = None) -> bytes:
        """The complete message for one recipient."""
        return self.parts.render(to=to, values=values, list_unsubscribe=list_unsubscribe)
