"""An edition's message parts, filled in by an SMTP worker process: the same bytes as the
publisher's own filling, through the worker's frames and a real SMTP server; and the
quoted-printable shortcut, which must encode exactly as `binascii.b2a_qp` does."""

from __future__ import annotations

import binascii
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.channels.smtp import Worker
from pipeline.channels.smtp_session import SessionSettings
from pipeline.config import load_config
from pipeline.intake.posts import load_posts
from pipeline.render.email import render_edition
from pipeline.render.mime import MessageTemplate, list_headers
from pipeline.render.personalize import MessageParts, qp
from tests.conftest import SEED_SLUG

VALUES = {"name": "Zoë O'Brien <&>", "email": "zoe@example.com",
          "unsubscribe_url": "https://news.example.com/unsubscribe/" + "0f" * 40,
          "manage_url": "https://news.example.com/manage/tok?a=1&b=2"}


def _reference_qp(text: str, *, soft_end: bool) -> bytes:
    """Quoted-printable the long way, as the filling did before its shortcut."""
    encoded = binascii.b2a_qp(text.replace("\r\n", "\n").encode("utf-8"), istext=True).replace(b"\n", b"\r\n")
    if soft_end and encoded and not encoded.endswith(b"\r\n"):
        encoded += b"=\r\n"
    return encoded


TEXTS = (st.text(alphabet=st.characters(codec="utf-8"), max_size=120)
         | st.text(alphabet=" .=\t-azAZ09", max_size=90)
         | st.text(alphabet="ab .-", min_size=60, max_size=90))       # long lines, nothing to encode


@settings(max_examples=500)
@given(TEXTS, st.booleans())
def test_quoted_printable_matches_b2a_qp(text, soft_end):
    assert qp(text, soft_end=soft_end) == _reference_qp(text, soft_end=soft_end)


@pytest.fixture
def template(project) -> MessageTemplate:
    config = load_config(project / "config.yaml")
    post = next(p for p in load_posts(config).posts if p.slug == SEED_SLUG)
    edition = render_edition(post, config, channel="newsletter")
    return MessageTemplate(edition, sender="RTR Wellness Center <news@example.com>", domain="example.com",
                           date=datetime(2026, 1, 5, 9, 0, tzinfo=UTC), reply_to="help@example.com",
                           extra_headers=list_headers(config, edition.key))


def test_parts_cross_a_process_boundary_unchanged(template):
    parts = MessageParts.from_wire(template.parts.wire())
    assert parts == template.parts
    assert parts.render(to="zoe@example.com", values=VALUES, list_unsubscribe="<x>") == \
        template.render(to="zoe@example.com", values=VALUES, list_unsubscribe="<x>")


def test_a_worker_fills_in_exactly_the_message_the_publisher_would(template, sink):
    settings = SessionSettings(host="127.0.0.1", port=sink.port, security="none", username=None,
                               password=None, timeout=5, tls_verify=True, ca_file=None, local_hostname=None,
                               pipelining=True, channel="newsletter")
    worker = Worker(settings)
    try:
        recipients = ["zoe@example.com", "bob@bücher.example"]       # an IDN domain as its A-label
        for to in recipients:
            assert worker.fill("bounces@example.com", to, template.parts, {**VALUES, "email": to}, "<x>, <y>",
                               key=f"newsletter:ed:{to}")
        outcomes = []
        while len(outcomes) < len(recipients):
            outcomes += worker.collect()
    finally:
        worker.close()
    assert [o[0] for o in outcomes] == ["ok", "ok"]
    for to, outcome, received in zip(recipients, outcomes, sink.received, strict=True):
        expected = template.render(to=to, values={**VALUES, "email": to}, list_unsubscribe="<x>, <y>")
        assert received.data == expected
        assert outcome[2] == received.message["Message-ID"]      # the Message-ID comes back too
        assert received.mail_from == "bounces@example.com"
