"""The cheap per-recipient pass over a compiled edition.

MJML runs once per edition and leaves `{{ recipient.FIELD }}` placeholders in the HTML and text.
A `Fill` splits a part at its placeholders once; filling it for a recipient is a join. The
message itself is serialized once (`mime.MessageTemplate`) into `MessageParts`, whose filling is
the standard library alone: an SMTP worker process fills the messages it sends (`wire()` carries
the parts there), and imports nothing else.
"""

from __future__ import annotations

import binascii
import contextlib
import hashlib
import html
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from markupsafe import Markup

FIELDS = ("name", "email", "unsubscribe_url", "manage_url")
PLACEHOLDER = re.compile(r"\{\{ recipient\.(" + "|".join(FIELDS) + r") \}\}")


class Placeholders:
    """What templates see as `recipient`: each field renders as its own placeholder."""

    def __getattr__(self, field: str) -> Markup:
        from markupsafe import Markup  # the renderer's: a worker process never needs it

        if field not in FIELDS:
            raise AttributeError(f"recipient has no field {field!r}; known: {', '.join(FIELDS)}")
        return Markup(f"{{{{ recipient.{field} }}}}")


def neutralize(text: str) -> str:
    """Break up anything in post content that looks like a placeholder (a zero-width space between
    the braces), so a post can never make the per-recipient pass insert someone's data."""
    return PLACEHOLDER.sub(lambda m: "{\u200b" + m.group(0)[1:], text)


@dataclass(frozen=True, kw_only=True)
class Fill:
    """A part split at its placeholders: literal pieces and the fields between them."""

    pieces: tuple[str, ...]
    fields: tuple[str, ...]
    escape: bool

    @classmethod
    def of(cls, template: str, *, escape: bool) -> Fill:
        parts = PLACEHOLDER.split(template)
        return cls(pieces=tuple(parts[0::2]), fields=tuple(parts[1::2]), escape=escape)

    def __call__(self, values: dict[str, str]) -> str:
        out = [self.pieces[0]]
        for field, piece in zip(self.fields, self.pieces[1:], strict=True):
            value = values[field]
            out += [html.escape(value) if self.escape else value, piece]
        return "".join(out)


_SHORT = 72             # a line this long stays whole in quoted-printable (76 at most)
_HTML_SPECIAL = re.compile(r"[&<>\"']")       # what html.escape replaces


def message_id(edition_key: str, recipient: str, domain: str) -> str:
    """A Message-ID that is the same for the same (edition, recipient): a resend after a crash
    is recognisably the same message."""
    digest = hashlib.sha256(f"{edition_key}\0{recipient.lower()}".encode()).hexdigest()[:32]
    return f"<{digest}@{domain}>"


@dataclass(frozen=True, kw_only=True)
class MessageParts:
    """An edition's message as encoded bytes with the per-recipient parts left open: the shared
    headers (`head`), then after the recipient's own (To, Message-ID, List-Unsubscribe) the
    `body` pieces, with `slots` (index in `body`, field, HTML-escaped) where values go. Each value
    stands on lines of its own, joined by soft line breaks, so every quoted-printable line stays
    within RFC 2045's 76 characters and decodes to exactly the text `Fill` would give."""

    edition_key: str
    domain: str
    head: bytes
    body: tuple[bytes, ...]
    slots: tuple[tuple[int, str, bool], ...]

    def render(self, *, to: str, values: Mapping[str, str], list_unsubscribe: str | None = None,
               mid: str | None = None) -> bytes:
        """The complete message for one recipient (`mid`: its Message-ID, if already known)."""
        mid = mid or message_id(self.edition_key, to, self.domain)
        head = [self.head, b"To: ", header_address(to).encode("utf-8"), b"\r\nMessage-ID: ", mid.encode(),
                b"\r\n"]
        if list_unsubscribe:
            head += [b"List-Unsubscribe: ", list_unsubscribe.replace(", ", ",\r\n ").encode(), b"\r\n"]
        # Each value is encoded once, and once more for HTML only if escaping changes it.
        plain: dict[str, bytes] = {}
        escaped: dict[str, bytes] = {}
        for _, field, _ in self.slots:
            if field not in plain:
                value = values[field]
                plain[field] = qp(value, soft_end=True)
                escaped[field] = (qp(html.escape(value), soft_end=True) if _HTML_SPECIAL.search(value)
                                  else plain[field])
        body = list(self.body)
        for at, field, escape in self.slots:
            body[at] = escaped[field] if escape else plain[field]
        return b"".join(head + body)

    def wire(self) -> bytes:
        """These parts as bytes for another process (`from_wire`): JSON, bytes as Latin-1."""
        return json.dumps({"edition_key": self.edition_key, "domain": self.domain,
                           "head": self.head.decode("latin-1"),
                           "body": [b.decode("latin-1") for b in self.body],
                           "slots": self.slots}).encode()

    @classmethod
    def from_wire(cls, data: bytes) -> MessageParts:
        fields = json.loads(data)
        return cls(edition_key=fields["edition_key"], domain=fields["domain"],
                   head=fields["head"].encode("latin-1"),
                   body=tuple(b.encode("latin-1") for b in fields["body"]),
                   slots=tuple((int(at), str(field), bool(escape)) for at, field, escape in fields["slots"]))


def qp(text: str, *, soft_end: bool) -> bytes:
    """`text` quoted-printable encoded, CRLF line ends; `soft_end`: ending in a soft line break."""
    if (soft_end and len(text) <= _SHORT and text.isascii() and text.isprintable() and "=" not in text
            and text[-1:] not in ("", " ") and text != "."):
        # What b2a_qp would give, without the calls: a short printable line has nothing to encode.
        return text.encode("ascii") + b"=\r\n"
    encoded = binascii.b2a_qp(text.replace("\r\n", "\n").encode("utf-8"), istext=True)
    encoded = encoded.replace(b"\n", b"\r\n")
    if soft_end and encoded and not encoded.endswith(b"\r\n"):
        encoded += b"=\r\n"
    return encoded


def header_address(address: str) -> str:
    """The address as a To: header carries it: an internationalized domain as its IDNA A-label,
    so that a header with an ASCII local part stays ASCII and needs no SMTPUTF8; a non-ASCII local
    part as UTF-8 (RFC 6532), which goes out only under SMTPUTF8 anyway."""
    local, _, domain = address.rpartition("@")
    if local.isascii() and not domain.isascii():
        # IDNA 2008, as email-validator checked it. An address that fails here never went through
        # validation; it is left as it is, and the SMTP session fails that one message.
        import idna

        with contextlib.suppress(idna.IDNAError):
            return f"{local}@{idna.encode(domain, uts46=True).decode('ascii')}"
    return address
