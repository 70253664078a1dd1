"""An edition's message parts, filled in by an SMTP worker process: the same bytes as the
publisher's own filling, through the worker's frames and a real SMTP server; and the
quoted-printable shortcut, which must encode exactly as `binascii.b2a_qp` does."""

from __future__ import annotations

import binascii
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.channels.smtp import Worker
from pipeline.channels.smtp_session import SessionSettings, WireParts, _wire
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
            worker.fill("bounces@example.com", to, template.parts, {**VALUES, "email": to}, "<x>, <y>",
                        key=f"newsletter:ed:{to}")
        assert worker.flush()
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


# -- filled straight into DATA form (`smtp_session.WireParts`) ----------------------------------------------

FIELD_TEXTS = (TEXTS
               | st.builds(lambda a, b: a + b, st.sampled_from([".", "..", "x" * 73 + ".", "a\r", "b\n"]),
                           st.text(alphabet="ab.\r\n <&=", max_size=100)))


def _parts(template: MessageTemplate) -> MessageParts:
    return MessageParts.from_wire(template.parts.wire())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=FIELD_TEXTS, url=FIELD_TEXTS)
def test_a_message_filled_into_data_form_is_what_the_session_would_send(template, name, url):
    parts = _parts(template)
    ready = WireParts.of(parts)
    assert ready is not None                    # the shipped edition's parts qualify
    values = {**VALUES, "name": name, "unsubscribe_url": url}
    mid = "<0123@example.com>"
    filled = ready.render(to="zoe@example.com", values=values, list_unsubscribe="<x>, <y>", mid=mid)
    usual = _wire(parts.render(to="zoe@example.com", values=values, list_unsubscribe="<x>, <y>", mid=mid))
    assert filled is None or filled == usual    # None: the session converts it, as for any message


def test_ordinary_values_are_filled_into_data_form(template):
    ready = WireParts.of(_parts(template))
    assert ready is not None
    for name in ("Zoë O'Brien <&>", "Ada", ""):
        assert ready.render(to="zoe@example.com", values={**VALUES, "name": name}, list_unsubscribe="<x>",
                            mid="<0123@example.com>") is not None


def _hand_made(head: bytes, body: tuple[bytes, ...],
               slots: tuple[tuple[int, str, bool], ...]) -> MessageParts:
    return MessageParts(edition_key="ed", domain="example.com", head=head, body=body, slots=slots)


def test_fixed_pieces_opening_lines_with_dots_are_stuffed_once():
    parts = _hand_made(b".Subject: x\r\n", (b"\r\n.one\r\n", b"", b".two\r\nand.\r\n..three", b"\r\n.four"),
                       ((1, "name", False),))
    ready = WireParts.of(parts)
    assert ready is not None
    values = {**VALUES, "name": "Zoe"}
    filled = ready.render(to="zoe@example.com", values=values, list_unsubscribe=None, mid="<m@example.com>")
    assert filled == _wire(parts.render(to="zoe@example.com", values=values, mid="<m@example.com>"))
    assert filled.endswith(b"\r\n..four\r\n")


@pytest.mark.parametrize("body", [
    (b"a bare\nline feed\r\n",),                     # not CRLF: the usual conversion must see it
    (b"a CRLF split\r", b"\n across pieces"),
    (b"no line end before the value", b"", b"\r\n"),  # the value would not start a line
])
def test_parts_not_as_the_template_makes_them_take_the_usual_way(body):
    slots = ((1, "name", False),) if b"" in body else ()
    assert WireParts.of(_hand_made(b"Subject: x\r\n", body, slots)) is None


def test_a_worker_sends_values_that_need_the_usual_way_unchanged(template, sink):
    """Values opening a line with a dot, or with a bare line feed, through a real worker and a real
    SMTP server (which undoes the dot-stuffing): exactly the publisher's message arrives."""
    settings = SessionSettings(host="127.0.0.1", port=sink.port, security="none", username=None,
                               password=None, timeout=5, tls_verify=True, ca_file=None, local_hostname=None,
                               pipelining=True, channel="newsletter")
    names = [".Zoë", "Bob\nSmith", "x" * 73 + ".tail", "Ada"]
    worker = Worker(settings)
    try:
        for i, name in enumerate(names):
            to = f"r{i}@example.com"
            worker.fill("bounces@example.com", to, template.parts, {**VALUES, "email": to, "name": name},
                        "<x>", key=f"newsletter:ed:{i}")
        assert worker.flush()
        outcomes = []
        while len(outcomes) < len(names):
            outcomes += worker.collect()
    finally:
        worker.close()
    assert [o[0] for o in outcomes] == ["ok"] * len(names)
    for i, (name, received) in enumerate(zip(names, sink.received, strict=True)):
        to = f"r{i}@example.com"
        assert received.data == template.render(to=to, values={**VALUES, "email": to, "name": name},
                                                list_unsubscribe="<x>")
