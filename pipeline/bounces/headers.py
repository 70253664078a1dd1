"""Reading the headers of mail anyone can send us, without ever raising.

Messages are parsed with the email package's compat32 policy, which keeps header values as
they came (the modern policy's header parser raises on some malformed headers); these helpers
decode and unfold them where the value is needed as text.
"""

from __future__ import annotations

import binascii
import contextlib
import email
import hashlib
import quopri
import re
from email.header import decode_header, make_header
from email.message import Message
from email.parser import BytesHeaderParser
from email.utils import getaddresses

# Longest header value read (a hostile message may carry megabytes in one header).
MAX_HEADER = 8192


def parse(raw: bytes) -> Message:
    """A message from its bytes (never raises: the email package records defects instead)."""
    return email.message_from_bytes(raw)


def header_text(msg: Message, name: str) -> str:
    """The first `name` header as one line of text (RFC 2047 words decoded), "" when absent."""
    value = msg.get(name)
    return _text(value) if value is not None else ""


def header_texts(msg: Message, name: str) -> list[str]:
    """Every `name` header, each as `header_text` gives it."""
    return [_text(v) for v in msg.get_all(name) or []]


def _text(value: object) -> str:
    text = str(value)[:MAX_HEADER]
    # An undecodable encoded word: the raw text is kept.
    with contextlib.suppress(ValueError, LookupError, UnicodeError, AssertionError, IndexError):
        text = str(make_header(decode_header(text)))
    return " ".join(text.split())


def address_fields(msg: Message, name: str) -> list[str]:
    """The addresses in every `name` header (lower-cased domain left as given), in order."""
    out = []
    for value in header_texts(msg, name):
        for _, address in getaddresses([value]):
            address = address.strip().strip("<>")
            if "@" in address and " " not in address:
                out.append(address)
    return out


def message_key(msg: Message, raw: bytes) -> str:
    """What identifies a message for deduplication: its Message-ID, else a hash of its bytes
    (the same message read twice gives the same key either way)."""
    mid = header_text(msg, "Message-ID").strip("<> ")
    if mid and len(mid) <= 200 and " " not in mid:
        return mid
    return "sha256-" + hashlib.sha256(raw).hexdigest()[:40]


def returned_message(msg: Message) -> Message | None:
    """The message a report returns (`message/rfc822`, `message/global`, or only its headers as
    `text/rfc822-headers`), or None."""
    for part in msg.walk():
        kind = part.get_content_type()
        if kind in ("message/rfc822", "message/global", "message/rfc822-headers"):
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                return payload[0]
        if kind in ("text/rfc822-headers", "message/rfc822-headers", "message/global-headers"):
            raw = part.get_payload(decode=True)
            if isinstance(raw, bytes):
                return BytesHeaderParser().parsebytes(raw)
    return None


def header_blocks(part: Message) -> list[Message]:
    """The header blocks of a `message/delivery-status` or `message/feedback-report` part. The
    email package parses them itself, unless the part was sent encoded (base64 or
    quoted-printable, which RFC 2046 forbids for message/* but some MTAs do): then it holds the
    encoded text, which is decoded here and parsed block by block."""
    payload = part.get_payload()
    encoding = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
    if encoding not in ("base64", "quoted-printable"):
        return [p for p in payload if isinstance(p, Message)] if isinstance(payload, list) else []
    if isinstance(payload, list):
        text = "".join(p.get_payload() for p in payload
                       if isinstance(p, Message) and isinstance(p.get_payload(), str))
    else:
        text = str(payload)
    try:
        raw = binascii.a2b_base64(text.encode("ascii", "ignore")) if encoding == "base64" \
            else quopri.decodestring(text.encode("ascii", "ignore"))
    except (binascii.Error, ValueError):
        return []
    parser = BytesHeaderParser()
    chunks = re.split(rb"\r?\n[ \t]*\r?\n", raw.strip())
    return [parser.parsebytes(chunk + b"\n") for chunk in chunks if chunk.strip()]


def first_text(msg: Message, limit: int = 4096) -> str:
    """The start of the message's first text/plain part (its body when it is not multipart)."""
    for part in msg.walk():
        if part.get_content_type() != "text/plain":
            continue
        raw = part.get_payload(decode=True)
        if isinstance(raw, bytes):
            charset = part.get_content_charset() or "utf-8"
            try:
                return raw[:limit].decode(charset, "replace")
            except LookupError:
                return raw[:limit].decode("utf-8", "replace")
    return ""
