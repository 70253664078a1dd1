"""VERP: a bounce address per message, `LOCAL+<uid>.<edition tag>@DOMAIN`.

A bounce goes to the envelope sender. With one address per subscriber and edition, a bounce names
both even when its report is unreadable (many are): the address it came back to is enough. The uid
is the subscriber's random public id (32 hex digits, also in their unsubscribe link), the edition
tag the first 8 hex digits of the SHA-256 of the edition key, so the local part stays within
RFC 5321's 64 characters for a local part of up to 22.
"""

from __future__ import annotations

import hashlib
import re

_TOKEN = re.compile(r"^([0-9a-f]{32})\.([0-9a-f]{8})$")


def edition_tag(edition: str) -> str:
    """The 8 hex digits that stand for an edition key in a VERP address."""
    return hashlib.sha256(edition.encode()).hexdigest()[:8]


def envelope(bounce_address: str, uid: str, edition: str) -> str:
    """The envelope sender for one subscriber's copy of an edition."""
    local, _, domain = bounce_address.rpartition("@")
    return f"{local}+{uid}.{edition_tag(edition)}@{domain}"


def decode(address: str, bounce_address: str) -> tuple[str, str] | None:
    """(uid, edition tag) from an address `envelope` made for `bounce_address`, or None."""
    local, _, domain = address.strip().strip("<>").rpartition("@")
    base_local, _, base_domain = bounce_address.rpartition("@")
    if domain.lower() != base_domain.lower() or not local.lower().startswith(base_local.lower() + "+"):
        return None
    match = _TOKEN.match(local[len(base_local) + 1:].lower())
    return (match[1], match[2]) if match else None
