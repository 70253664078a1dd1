"""A bounce message -> who failed, and how badly.

flufl.bounce (GNU Mailman's detectors) finds the failed recipients in RFC 3464 DSNs and in the
many older formats MTAs still send (Exim, qmail, Gmail's and Yahoo's plain-text notices...).
Where the bounce has RFC 3464 `message/delivery-status` blocks, their per-recipient fields
(Action, Status, Diagnostic-Code) give the status code; for the other formats the first status
code in the human-readable notice stands for it. `classify` turns the code into an event kind.

The address a bounce came back to (its envelope recipient: our VERP envelope sender) is
gathered too: it names the subscriber and the edition even when the report names nobody usable
(an alias that forwarded, a redacted address).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from email.message import Message

from flufl.bounce import all_failures

from pipeline.bounces.classify import classify, enhanced_code
from pipeline.bounces.headers import address_fields, header_blocks, header_text, returned_message
from pipeline.store.events import EventKind

log = logging.getLogger(__name__)
# flufl.bounce logs a traceback for each detector that raises (then re-raises), and a line per
# detector at INFO: `_flufl` reports the failure itself, on one line.
logging.getLogger("flufl.bounce").propagate = False

# A basic SMTP reply code where a line of a notice starts (after indentation or quoting), or
# after "said:" (Postfix), "returned:" or "error:".
_REPLY_CODE = re.compile(r"(?:^[ \t>]*|said:\s*|returned:\s*|error:\s*)([45][0-5][0-9])[ -]", re.MULTILINE)
# How much of a notice's text is searched for a status code.
_NOTICE_CHARS = 64_000


@dataclass(frozen=True, kw_only=True)
class Failure:
    """One recipient a bounce reports: the address as the report gives it (the one we sent to
    when the report says so), `action` (failed / delayed), the enhanced status code, the
    diagnostic text, and the event kind (None: no failure to act on, e.g. a delay)."""

    recipient: str
    action: str
    status: str | None
    diagnostic: str
    kind: EventKind | None

    @property
    def detail(self) -> str:
        """The status and diagnostic on one line, as kept with the event."""
        text = " ".join(f"{self.status or ''} {self.diagnostic}".split())
        return text[:500] or self.action


@dataclass(frozen=True, kw_only=True)
class Bounce:
    """What a bounce message says: its failures (empty when no report could be read), the
    addresses it came back to (VERP candidates, in order of trust), and the status code found in
    its human-readable notice, if any (for a report nobody could read)."""

    failures: tuple[Failure, ...]
    returned_to: tuple[str, ...]
    notice_status: str | None
    notice_reply: int | None

    @property
    def is_bounce(self) -> bool:
        """Whether any report was found (the message says something failed or was delayed)."""
        return bool(self.failures)


def parse(msg: Message) -> Bounce:
    """Read a bounce. Never raises on a malformed message: what cannot be read is left out."""
    blocks = _status_failures(msg)
    seen = {f.recipient.lower() for f in blocks}
    notice = _notice_text(msg)
    notice_status = enhanced_code(notice)
    reply = _REPLY_CODE.search(notice)
    notice_reply = int(reply[1]) if reply else None
    extra: list[Failure] = []
    temporary, permanent = _flufl(msg)
    for action, found in (("failed", permanent), ("delayed", temporary)):
        for address in sorted(found):
            if address.lower() in seen or "@" not in address:
                continue
            seen.add(address.lower())
            # No delivery-status block for this one: the notice's own code stands for it. A
            # permanent failure found by wording alone ("user unknown") with no code at all
            # counts as soft: it is a heuristic's reading, and `soft_limit` of them still bounce.
            kind = None
            if action == "failed":
                kind = classify(notice_status, notice_reply) or EventKind.SOFT
            extra.append(Failure(recipient=address, action=action, status=notice_status,
                                 diagnostic=_notice_line(notice, address), kind=kind))
    return Bounce(failures=(*blocks, *extra), returned_to=tuple(_returned_to(msg)),
                  notice_status=notice_status, notice_reply=notice_reply)


def _flufl(msg: Message) -> tuple[set[str], set[str]]:
    """flufl.bounce's (temporary, permanent) failures as text. Its detectors are heuristics run
    on untrusted text: one that trips on a malformed message must not stop the mailbox."""
    try:
        temporary, permanent = all_failures(msg)
    except Exception as exc:     # a detector's bug on a hostile message: read it as no report
        log.debug("flufl.bounce could not read a message: %s: %s", type(exc).__name__, exc)
        return set(), set()
    decode = lambda found: {a.decode("ascii", "replace").strip().strip("<>") for a in found if a}  # noqa: E731
    return decode(temporary), decode(permanent)


def _status_failures(msg: Message) -> list[Failure]:
    """The per-recipient blocks of every `message/delivery-status` part (RFC 3464 section 2.3)."""
    out: list[Failure] = []
    for part in msg.walk():
        if part.get_content_type() not in ("message/delivery-status", "message/global-delivery-status"):
            continue
        for block in header_blocks(part)[1:]:          # the first block is about the message
            failure = _block_failure(block)
            if failure is not None:
                out.append(failure)
    return out


def _block_failure(block: Message) -> Failure | None:
    action = header_text(block, "Action").split("(")[0].strip().lower()
    if not action:
        return None
    recipient = _typed_address(header_text(block, "Original-Recipient")) \
        or _typed_address(header_text(block, "Final-Recipient")) \
        or _typed_address(header_text(block, "X-Actual-Recipient"))
    if not recipient:
        return None
    diagnostic = header_text(block, "Diagnostic-Code")
    status = enhanced_code(header_text(block, "Status"))
    from_diagnostic = enhanced_code(diagnostic)
    # A generic status (5.0.0, 4.0.0) says less than the remote server's own code, when given.
    if from_diagnostic and (status is None or (status.endswith(".0.0") and from_diagnostic[0] == status[0])):
        status = from_diagnostic
    reply = _REPLY_CODE.search(diagnostic.split(";", 1)[-1])
    kind = None
    # opensmtpd says `error` for `failed`; anything else (delayed, delivered, relayed, expanded)
    # is no failure to act on.
    if action.startswith(("fail", "error")):
        action = "failed"
        # Status is required; a failure without a usable one counts as soft, as below.
        kind = classify(status, int(reply[1]) if reply else None) or EventKind.SOFT
    return Failure(recipient=recipient, action=action, status=status, diagnostic=diagnostic, kind=kind)


def _typed_address(value: str) -> str:
    """The address of an `address-type; address` field (`rfc822; a@b.example`), or ""."""
    kind, sep, address = value.partition(";")
    if not sep:
        address, kind = kind, "rfc822"
    address = address.strip().strip("<>").strip()
    if kind.strip().lower() not in ("rfc822", "utf-8") or "@" not in address or " " in address:
        return ""
    return address


def _notice_text(msg: Message) -> str:
    """The human-readable text of a bounce (its text parts, not the returned message's)."""
    texts: list[str] = []
    size = 0
    stack = [msg]
    while stack and size < _NOTICE_CHARS:
        part = stack.pop(0)
        if part.get_content_maintype() == "message" or part.get_content_type() == "text/rfc822-headers":
            continue                              # the returned message: its text is not the notice
        if part.is_multipart():
            payload = part.get_payload()
            stack[:0] = [p for p in payload if isinstance(p, Message)] if isinstance(payload, list) else []
            continue
        if part.get_content_maintype() != "text":
            continue
        raw = part.get_payload(decode=True)
        if isinstance(raw, bytes):
            charset = part.get_content_charset() or "utf-8"
            try:
                text = raw.decode(charset, "replace")
            except LookupError:
                text = raw.decode("utf-8", "replace")
            texts.append(text[:_NOTICE_CHARS - size])
            size += len(texts[-1])
    return "\n".join(texts)


def _notice_line(notice: str, address: str) -> str:
    """The notice's line naming `address` with the lines after it, as the failure's diagnostic."""
    at = notice.lower().find(address.lower())
    if at < 0:
        return ""
    start = notice.rfind("\n", 0, at) + 1
    return " ".join(notice[start:start + 400].split())[:300]


def _returned_to(msg: Message) -> list[str]:
    """The addresses a bounce came back to, most trusted first: the delivery headers our mail
    server adds (Delivered-To, X-Original-To, Envelope-To), the To of the bounce (the MTA writes
    the envelope sender there), the Postfix extension naming the original sender in the report,
    and the Return-Path of the returned message itself."""
    out: list[str] = []
    for name in ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "To"):
        out += address_fields(msg, name)
    for part in msg.walk():
        if part.get_content_type() in ("message/delivery-status", "message/global-delivery-status"):
            blocks = header_blocks(part)
            if blocks:
                out += [a for a in (_typed_address(header_text(blocks[0], "X-Postfix-Sender")),) if a]
    returned = returned_message(msg)
    if returned is not None:
        out += address_fields(returned, "Return-Path")
    return list(dict.fromkeys(out))
