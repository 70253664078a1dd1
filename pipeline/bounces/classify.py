"""A delivery status -> the kind of event it is, the one rule every source uses.

RFC 3463 enhanced status codes (`class.subject.detail`) decide where there is one:

- 5.1.x (bad address), 5.2.1 (mailbox disabled), 5.5.x (protocol: e.g. a refused recipient
  syntax): the address will never work: `hard`;
- 5.7.x (policy, spam, authentication): the message was refused, not the address: `policy`;
- any other 5.x.x (mailbox full 5.2.2, system 5.3.x, routing 5.4.x, content 5.6.x) and every
  4.x.x: might work later: `soft`.

Without an enhanced code, the basic reply code decides: 550, 551, 553 -> `hard`; 554 -> `policy`;
other 5xx and all 4xx -> `soft`.
"""

from __future__ import annotations

import re

from pipeline.store.events import EventKind

# An enhanced status code at the start of a reply's text (after the basic code, if any).
ENHANCED = re.compile(r"(?:^|\s)([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$|[;,.:])")


def enhanced_code(text: str) -> str | None:
    """The first enhanced status code in a reply or diagnostic text ("5.1.1"), or None."""
    match = ENHANCED.search(text)
    return ".".join(match.groups()) if match else None


def classify(status: str | None, reply_code: int | None = None) -> EventKind | None:
    """The event kind of a failed delivery, from its enhanced status ("5.1.1") and/or its basic
    reply code (550). None when it is no failure (2.x.x, or nothing to go on)."""
    if status:
        klass, subject, detail = [*status.split("."), "0", "0"][:3]
        if klass == "5":
            if subject == "7":
                return EventKind.POLICY
            if subject in ("1", "5") or (subject == "2" and detail == "1"):
                return EventKind.HARD
            return EventKind.SOFT
        if klass == "4":
            return EventKind.SOFT
        return None
    if reply_code is None:
        return None
    if reply_code in (550, 551, 553):
        return EventKind.HARD
    if reply_code == 554:
        return EventKind.POLICY
    if 400 <= reply_code < 600:
        return EventKind.SOFT
    return None
