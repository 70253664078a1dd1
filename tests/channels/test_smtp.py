"""The SMTP channel against a real aiosmtpd server on loopback: delivery, headers, faults."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import pytest
import trustme
from sqlalchemy import insert

from pipeline.config import Config, load_config
from pipeline.models import Status
from pipeline.publish import retry
from pipeline.store import subscribers as store
from pipeline.store.engine import engine_for
from pipeline.store.ledger import Ledger
from pipeline.store.schema import subscribers
from tests.conftest import send_through
from tests.smtp_sink import Sink, free_port, password_checker


def smtp_config(project: Path, port: int, **extra: object) -> Config:
    lines = [f"    {k}: {v}" for k, v in {"host": "127.0.0.1", "port": port, "security": "none",
                                           "connections": 2, "retries": 2, "retry_wait": 0.01,
                                           "timeout": 5, **extra}.items()]
    path = project / "config.yaml"
    text = path.read_text(encoding="utf-8")
    path.write_text(text + "\n" + "\n".join(["  newsletter:", "    type: smtp", *lines]) + "\n",
                    encoding="utf-8")
    return load_config(path)


def add(config: Config, *addresses: str) -> None:
    engine = engine_for(config)
    for i, address in enumerate(addresses):
        store.upsert(engine, address, name=f"Reader {i}")


send = partial(send_through, name="newsletter")


def statuses(config: Config) -> dict[str, str]:
    rows = Ledger(engine_for(config)).rows(channel="newsletter")
    return {r.key.rsplit(":", 1)[1]: r.status for r in rows}


def test_delivers_personalized_messages_with_compliance_headers(project, sink):
    config = smtp_config(project, sink.port, **{"from": '"RTR News <news@example.com>"'})
    add(config, "ada@example.com", "bob@example.org")
    report = send(config)
    assert (report.sent, report.failed, report.error) == (2, 0, None)
    assert sink.recipients() == {"ada@example.com": 1, "bob@example.org": 1}
    by_to = {r.rcpt_tos[0]: r for r in sink.received}
    msg = by_to["ada@example.com"].message
    assert by_to["ada@example.com"].mail_from == "news@example.com"
    assert msg["From"] == "RTR News <news@example.com>"
    assert msg["Subject"] == "Ketamine’s Potential Ability to Heal Neurological Damage"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["List-Unsubscribe"].startswith("<http://127.0.0.1:8080/unsubscribe/")
    assert msg["Message-ID"].endswith("@example.com>") and msg["Date"]
    html = msg.get_body(("html",)).get_content()
    url = msg["List-Unsubscribe"].strip("<>")
    assert f'href="{url}"' in html and "Hi Reader 0," in html
    assert "Hi Reader 0," in msg.get_body(("plain",)).get_content()
    assert by_to["bob@example.org"].message["Message-ID"] != msg["Message-ID"]


def test_second_publish_sends_nothing(project, sink):
    config = smtp_config(project, sink.port)
    add(config, "ada@example.com")
    send(config)
    again = send(config)
    assert (again.total, again.sent, again.already_sent) == (0, 0, 1)
    assert len(sink.received) == 1


def test_temporary_failure_is_retried_then_sent(project, sink):
    config = smtp_config(project, sink.port)
    add(config, "ada@example.com", "bob@example.org")
    sink.behaviour.temporary["ada@example.com"] = 2
    report = send(config)
    assert report.sent == 2
    assert sink.attempts["ada@example.com"] == 3
    assert sink.recipients()["ada@example.com"] == 1


def test_temporary_failure_that_persists_fails_with_the_reply(project, sink):
    config = smtp_config(project, sink.port)
    add(config, "ada@example.com", "bob@example.org")
    sink.behaviour.always_temporary.add("ada@example.com")
    report = send(config)
    assert (report.sent, report.failed) == (1, 1)
    assert sink.attempts["ada@example.com"] == 3          # 1 + retries: 2
    [row] = Ledger(engine_for(config)).rows(channel="newsletter", status=Status.FAILED)
    assert "451 4.3.0 Temporary local problem" in (row.last_error or "")


def test_permanent_refusal_fails_one_recipient_and_the_rest_go_on(project, sink):
    config = smtp_config(project, sink.port)
    add(config, "ada@example.com", "gone@example.com", "zed@example.com")
    sink.behaviour.permanent.add("gone@example.com")
    report = send(config)
    assert (report.sent, report.failed) == (2, 1)
    assert statuses(config) == {"ada@example.com": "sent", "gone@example.com": "failed",
                                "zed@example.com": "sent"}
    assert sink.attempts["gone@example.com"] == 0         # refused at RCPT, never retried
    row = Ledger(engine_for(config)).rows(channel="newsletter", status=Status.FAILED)[0]
    assert "550 5.1.1" in (row.last_error or "")


def test_disconnect_mid_send_reconnects_and_continues(project, sink):
    config = smtp_config(project, sink.port, connections=1)
    addresses = [f"r{i}@example.com" for i in range(6)]
    add(config, *addresses)
    sink.behaviour.drop_once.update({"r1@example.com", "r4@example.com"})
    report = send(config)
    assert (report.sent, report.failed) == (6, 0)
    assert sink.recipients() == dict.fromkeys(addresses, 1)


def test_unreachable_server_is_one_clear_line_and_nothing_is_sent(project):
    config = smtp_config(project, free_port())
    add(config, "ada@example.com", "bob@example.org")
    report = send(config)
    assert report.error is not None and "\n" not in report.error
    assert "cannot connect" in report.error and "connection refused" in report.error
    assert set(statuses(config).values()) == {"pending"}


def test_wrong_password_is_one_clear_line_and_secret_never_shown(project, monkeypatch):
    server = Sink(auth_required=True, auth_require_tls=False,
                  authenticator=password_checker("mailer", "right-password")).start()
    try:
        monkeypatch.setenv("SMTP_PASSWORD", "wrong-secret-value")
        config = smtp_config(project, server.port, username="mailer", password="${SMTP_PASSWORD}")
        add(config, "ada@example.com")
        report = send(config)
    finally:
        server.stop()
    assert report.error is not None and "login refused for user 'mailer'" in report.error
    assert "wrong-secret-value" not in report.error
    assert statuses(config) == {"ada@example.com": "pending"}


def test_right_password_logs_in(project, monkeypatch):
    server = Sink(auth_required=True, auth_require_tls=False,
                  authenticator=password_checker("mailer", "right-password")).start()
    try:
        monkeypatch.setenv("SMTP_PASSWORD", "right-password")
        config = smtp_config(project, server.port, username="mailer", password="${SMTP_PASSWORD}")
        add(config, "ada@example.com")
        assert send(config).sent == 1
    finally:
        server.stop()


def test_starttls_refused_by_server_is_one_clear_line(project, sink):
    config = smtp_config(project, sink.port, security="starttls")
    add(config, "ada@example.com")
    report = send(config)
    assert report.error is not None and "does not offer STARTTLS" in report.error
    assert statuses(config) == {"ada@example.com": "pending"}


@pytest.fixture
def tls(tmp_path: Path):  # type: ignore[no-untyped-def]
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return server_ctx, ca_file


def test_starttls_with_a_trusted_certificate(project, tls):
    server_ctx, ca_file = tls
    server = Sink(tls_context=server_ctx, require_starttls=True).start()
    try:
        config = smtp_config(project, server.port, security="starttls", ca_file=str(ca_file))
        add(config, "ada@example.com")
        assert send(config).sent == 1
    finally:
        server.stop()


def test_implicit_tls(project, tls):
    server_ctx, ca_file = tls
    server = Sink(ssl_context=server_ctx).start()
    try:
        config = smtp_config(project, server.port, security="tls", ca_file=str(ca_file))
        add(config, "ada@example.com")
        assert send(config).sent == 1
        assert server.recipients() == {"ada@example.com": 1}
    finally:
        server.stop()


def test_untrusted_certificate_is_refused_clearly(project, tls):
    server_ctx, _ = tls
    server = Sink(tls_context=server_ctx, require_starttls=True).start()
    try:
        config = smtp_config(project, server.port, security="starttls")
        add(config, "ada@example.com")
        report = send(config)
    finally:
        server.stop()
    assert report.error is not None and "TLS failed" in report.error
    assert "CERTIFICATE_VERIFY_FAILED" in report.error
    assert statuses(config) == {"ada@example.com": "pending"}


def test_unsubscribed_address_is_never_mailed(project, sink):
    config = smtp_config(project, sink.port)
    add(config, "ada@example.com", "bob@example.org")
    store.unsubscribe(engine_for(config), "bob@example.org")
    send(config)
    assert sink.recipients() == {"ada@example.com": 1}


def test_rate_cap_spaces_messages(project, sink):
    import time

    config = smtp_config(project, sink.port, rate=20, connections=2)
    add(config, *(f"r{i}@example.com" for i in range(6)))
    started = time.monotonic()
    assert send(config).sent == 6
    # 6 messages at 20/s need at least 5 intervals of 50 ms: a bound on the cap, not a timing test.
    assert time.monotonic() - started >= 0.25


def test_dkim_signature_covers_both_list_unsubscribe_headers_and_verifies(project, sink, monkeypatch):
    import base64

    import dkim
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption()).decode()
    public = base64.b64encode(key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
    monkeypatch.setenv("DKIM_PRIVATE_KEY", pem)
    config = smtp_config(project, sink.port, dkim="{domain: example.com, selector: news, "
                                                  "private_key: '${DKIM_PRIVATE_KEY}'}")
    add(config, "ada@example.com")
    assert send(config).sent == 1
    data = sink.received[0].data
    signature = sink.received[0].message["DKIM-Signature"]
    signed = {h.strip().lower() for h in signature.split("h=")[1].split(";")[0].split(":")}
    assert {"list-unsubscribe", "list-unsubscribe-post", "from", "subject", "message-id"} <= signed
    assert "d=example.com" in signature and "s=news" in signature

    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"news._domainkey.example.com."
        return f"v=DKIM1; k=rsa; p={public}".encode()

    assert dkim.verify(data, dnsfunc=dns)
    assert b"Reader 0" in data
    assert not dkim.verify(data.replace(b"Reader 0", b"Mallory!"), dnsfunc=dns)


# -- internationalized addresses (#12) ---------------------------------------------------------

@pytest.fixture
def ascii_sink() -> Iterator[Sink]:
    """A server that does not offer SMTPUTF8."""
    server = Sink(enable_SMTPUTF8=False).start()
    yield server
    server.stop()


def test_idn_domain_is_sent_as_punycode(project, ascii_sink):
    sink = ascii_sink
    config = smtp_config(project, sink.port)
    add(config, "user@exämple.com", "ada@example.com")
    report = send(config)
    assert (report.sent, report.failed, report.error) == (2, 0, None)
    # The subscriber is stored as email-validator normalizes it: the Unicode form.
    assert statuses(config) == {"user@exämple.com": "sent", "ada@example.com": "sent"}
    by_to = {r.rcpt_tos[0]: r for r in sink.received}
    idn = by_to["user@xn--exmple-cua.com"]
    assert "SMTPUTF8" not in idn.mail_options
    msg = idn.message
    assert msg["To"] == "user@xn--exmple-cua.com" and msg.defects == []
    assert idn.data.split(b"\r\n\r\n", 1)[0].isascii()   # 7-bit headers: no SMTPUTF8 needed


def test_non_ascii_local_part_uses_smtputf8_when_the_server_offers_it(project):
    server = Sink(enable_SMTPUTF8=True).start()
    try:
        config = smtp_config(project, server.port)
        add(config, "ü@example.com", "ada@example.com")
        report = send(config)
    finally:
        server.stop()
    assert (report.sent, report.failed, report.error) == (2, 0, None)
    by_to = {r.rcpt_tos[0]: r for r in server.received}
    assert "SMTPUTF8" in by_to["ü@example.com"].mail_options
    assert "SMTPUTF8" not in by_to["ada@example.com"].mail_options     # only where it is needed
    assert by_to["ü@example.com"].message["To"] == "ü@example.com"


@pytest.mark.parametrize("processes", [False, True], ids=["in-process", "worker-processes"])
def test_non_ascii_local_part_without_smtputf8_fails_alone(project, ascii_sink, processes):
    sink = ascii_sink
    config = smtp_config(project, sink.port, connections=1, processes=str(processes).lower())
    add(config, "ada@example.com", "ü@example.com", "zed@example.com")
    report = send(config)
    assert (report.sent, report.failed, report.unknown, report.error) == (2, 1, 0, None)
    assert statuses(config) == {"ada@example.com": "sent", "ü@example.com": "failed",
                                "zed@example.com": "sent"}
    [row] = Ledger(engine_for(config)).rows(channel="newsletter", status=Status.FAILED)
    assert "SMTPUTF8" in (row.last_error or "") and "\n" not in (row.last_error or "")
    # The same connection (worker) went on: a later publish does not stop on the address either.
    add(config, "new@example.com")
    again = send(config)
    assert (again.sent, again.error) == (1, None)
    retried = retry(config, failed=True, channels=["newsletter"])
    assert [(r.sent, r.failed, r.error) for r in retried] == [(0, 1, None)]
    assert sink.recipients() == {"ada@example.com": 1, "zed@example.com": 1, "new@example.com": 1}


@pytest.mark.parametrize("processes", [False, True], ids=["in-process", "worker-processes"])
def test_unexpected_error_for_one_recipient_fails_that_message_only(project, sink, processes):
    config = smtp_config(project, sink.port, connections=1, processes=str(processes).lower())
    add(config, "ada@example.com", "zed@example.com")
    # Broken state: a row written around the validation (by hand, or by an older version), whose
    # domain no IDNA encoder accepts.
    with engine_for(config).begin() as conn:
        now = datetime.now(UTC)
        conn.execute(insert(subscribers).values(
            uid="0" * 32, email="bob@exa☃mple.com", email_key="bob@exa☃mple.com", name="Bob", tags="",
            status="active", created_at=now, updated_at=now))
    report = send(config)
    assert (report.sent, report.failed, report.error) == (2, 1, None)
    assert statuses(config)["bob@exa☃mple.com"] == "failed"
    [row] = Ledger(engine_for(config)).rows(channel="newsletter", status=Status.FAILED)
    assert "bob@exa☃mple.com" in (row.last_error or "") and "\n" not in (row.last_error or "")


# -- a lost reply after the end-of-data dot (#12) ----------------------------------------------

@pytest.mark.parametrize("fault", ["silent_after_data", "close_after_data"])
@pytest.mark.parametrize("processes", [False, True], ids=["in-process", "worker-processes"])
def test_lost_reply_after_the_dot_is_unknown_and_never_resent(project, sink, fault, processes):
    config = smtp_config(project, sink.port, connections=1, timeout=0.5, processes=str(processes).lower())
    add(config, "ada@example.com", "bob@example.org", "zed@example.com")
    getattr(sink.behaviour, fault).add("bob@example.org")
    report = send(config)
    assert (report.sent, report.unknown, report.failed, report.error) == (2, 1, 0, None)
    assert statuses(config) == {"ada@example.com": "sent", "bob@example.org": "unknown",
                                "zed@example.com": "sent"}
    [row] = Ledger(engine_for(config)).rows(channel="newsletter", status=Status.UNKNOWN)
    assert "retry --unknown" in (row.last_error or "") and "\n" not in (row.last_error or "")
    retry(config, failed=True, channels=["newsletter"])
    send(config)
    assert statuses(config)["bob@example.org"] == "unknown"
    assert sink.recipients() == {"ada@example.com": 1, "bob@example.org": 1, "zed@example.com": 1}


def test_stall_before_the_data_reply_stays_retryable(project, sink):
    config = smtp_config(project, sink.port, connections=1, timeout=0.5)
    add(config, "ada@example.com", "bob@example.org")
    sink.behaviour.stall_rcpt["bob@example.org"] = 3          # 1 + retries: 2, all unanswered
    report = send(config)
    assert (report.sent, report.failed, report.unknown) == (1, 1, 0)
    assert sink.stalls["bob@example.org"] == 3
    [row] = Ledger(engine_for(config)).rows(channel="newsletter", status=Status.FAILED)
    assert "connection lost" in (row.last_error or "")
    [again] = retry(config, failed=True, channels=["newsletter"])
    assert (again.sent, again.failed) == (1, 0)
    assert sink.recipients() == {"ada@example.com": 1, "bob@example.org": 1}


@pytest.mark.parametrize("processes", [False, True], ids=["in-process", "worker-processes"])
def test_unreadable_dkim_key_stops_the_channel_with_one_line(project, sink, monkeypatch, processes):
    # Checked once when connecting: otherwise every message would fail (or end the worker) on it.
    monkeypatch.setenv("DKIM_PRIVATE_KEY", "not a key")
    config = smtp_config(project, sink.port, processes=str(processes).lower(),
                         dkim="{domain: example.com, selector: news, private_key: '${DKIM_PRIVATE_KEY}'}")
    add(config, "ada@example.com", "bob@example.org")
    report = send(config)
    assert report.error is not None and "\n" not in report.error
    assert "the DKIM private key cannot be read" in report.error
    assert set(statuses(config).values()) == {"pending"}
    assert sink.received == []


def test_channel_from_is_one_address(project, run_cli):
    """#12: a channel's `from:` with a line break is a config error naming the key, never a header."""
    cfg = project / "config.yaml"
    cfg.write_text(cfg.read_text(encoding="utf-8").replace(
        "outbox: {type: outbox, path: out/outbox}",
        "outbox: {type: outbox, path: out/outbox}\n"
        '  mail: {type: smtp, host: 127.0.0.1, from: "a@example.com\\r\\nBcc: all@example.com"}'),
        encoding="utf-8")
    result = run_cli("check", cwd=project)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert any("channels.mail.from: must be a single line" in line for line in result.stderr.splitlines())


# -- refusals carry their reply for bounce handling (#14) ---------------------------------------

@pytest.mark.parametrize("processes", [False, True], ids=["in-process", "worker-processes"])
def test_a_refusal_carries_its_reply_code_and_enhanced_status(project, sink, processes):
    from pipeline.channels.registry import build_channel
    from pipeline.errors import ChannelError
    from pipeline.models import Delivery

    config = smtp_config(project, sink.port, processes=str(processes).lower())
    sink.behaviour.reject.update({
        "gone@example.com": ("RCPT", 550, "5.1.1 User unknown"),
        "full@example.com": ("DATA", 452, "4.2.2 Mailbox full"),
        "plain@example.com": ("RCPT", 550, "Mailbox unavailable"),
        "bad@example.com": ("MAIL", 553, "5.1.8 Sender address rejected: Domain not found"),
    })
    channel = build_channel(config, "newsletter")

    def refusal(recipient: str, sender: str = "news@example.com") -> tuple[object, ...]:
        delivery = Delivery(key=f"k:{recipient}", channel="newsletter", edition="e", kind="email",
                            recipient=recipient, envelope_from=sender,
                            message=b"Subject: hello\r\n\r\nHello.\r\n")
        with pytest.raises(ChannelError) as caught:
            channel.send(delivery)
        exc = caught.value
        return exc.reply_code, exc.status, exc.retryable, exc.bounce

    try:
        assert refusal("gone@example.com") == (550, "5.1.1", False, True)
        assert refusal("full@example.com") == (452, "4.2.2", True, True)
        assert refusal("plain@example.com") == (550, None, False, True)
        # The sender's refusal says nothing about the recipient (whose pipelined RCPT then gets
        # "503 5.5.1 need MAIL command"): no bounce.
        assert refusal("ada@example.com", sender="bad@example.com") == (None, None, False, False)
    finally:
        channel.close()
    assert sink.received == []
