"""ARF (RFC 5965) feedback reports: a mailbox provider telling us a reader marked our mail as spam.

A report is a `multipart/report; report-type=feedback-report` with a human-readable part, a
`message/feedback-report` part (Feedback-Type, Original-Mail-From, Original-Rcpt-To, ...) and
the reported message or its headers. Providers often redact the reader's address; the
reported message's envelope sender (Original-Mail-From, or the Return-Path of the returned
message) is our VERP address and names them anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.message import Message

from pipeline.bounces.headers import (
    address_fields,
    header_blocks,
    header_text,
    header_texts,
    returned_message,
)

# Feedback types that are a complaint about our mail. `not-spam` is the opposite, and
# `auth-failure` (RFC 6591: DMARC/SPF/DKIM failure reports), `virus` and `other` are not
# about a reader's wishes: nothing changes for them.
COMPLAINT_TYPES = frozenset({"abuse", "fraud"})


@dataclass(frozen=True, kw_only=True)
class Report:
    """What a feedback report says: its type, the addresses the reported message went to
    (candidates, most trusted first), the addresses it came from (VERP candidates) and the
    reported message's Message-ID."""

    feedback_type: str
    recipients: tuple[str, ...]
    returned_to: tuple[str, ...]
    message_id: str
    user_agent: str

    @property
    def is_complaint(self) -> bool:
        return self.feedback_type in COMPLAINT_TYPES

    @property
    def detail(self) -> str:
        """One line kept with the event."""
        parts = [f"feedback-type {self.feedback_type}"]
        if self.user_agent:
            parts.append(f"from {self.user_agent}")
        if self.message_id:
            parts.append(f"about <{self.message_id}>")
        return " ".join(parts)[:500]


def feedback_part(msg: Message) -> Message | None:
    """The `message/feedback-report` part of a message, or None: what makes it a report (some
    providers send it inside multipart/mixed rather than multipart/report)."""
    for part in msg.walk():
        if part.get_content_type() == "message/feedback-report":
            return part
    return None


def parse(msg: Message) -> Report | None:
    """The feedback report in `msg`, or None when it has none. Never raises."""
    part = feedback_part(msg)
    if part is None:
        return None
    fields = _fields(part)
    returned = returned_message(msg)
    recipients = [*_addresses(header_texts(fields, "Original-Rcpt-To")),
                  *_addresses(header_texts(fields, "Removal-Recipient"))]
    senders = _addresses(header_texts(fields, "Original-Mail-From"))
    message_id = ""
    if returned is not None:
        recipients += address_fields(returned, "X-Original-Rcpt-To") + address_fields(returned, "To")
        senders += address_fields(returned, "Return-Path")
        message_id = header_text(returned, "Message-ID").strip("<> ")[:200]
    return Report(feedback_type=header_text(fields, "Feedback-Type").lower(),
                  recipients=tuple(dict.fromkeys(recipients)), returned_to=tuple(dict.fromkeys(senders)),
                  message_id=message_id, user_agent=header_text(fields, "User-Agent")[:100])


def _fields(part: Message) -> Message:
    """The report's fields (its first header block; an empty one when it has none)."""
    blocks = header_blocks(part)
    return blocks[0] if blocks else Message()


def _addresses(values: list[str]) -> list[str]:
    """Addresses from report fields, which hold them bare or in angle brackets."""
    out = []
    for value in values:
        address = value.strip().strip("<>").strip()
        if "@" in address and " " not in address and not address.startswith("@"):
            out.append(address)
    return out
