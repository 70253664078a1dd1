"""The SMTP channel against a real aiosmtpd server on loopback: delivery, headers, faults."""

from __future__ import annotations

import ssl
from functools import partial
from pathlib import Path

import pytest
import trustme

from pipeline.config import Config, load_config
from pipeline.models import Status
from pipeline.store import subscribers as store
from pipeline.store.engine import engine_for
from pipeline.store.ledger import Ledger
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
