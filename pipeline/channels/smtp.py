"""SMTP: any relay or ESP endpoint. STARTTLS or implicit TLS, login from the environment,
`connections` reused connections, an optional rate cap, optional DKIM signing.

Each connection lives in a worker process of its own by default (`processes: true`): the
protocol's CPU work then runs beside the publisher's instead of competing for one interpreter,
which is what lets a publish keep up with a bare SMTP client.

Error rules: a 4xx reply is temporary (retryable); a 5xx reply to one recipient fails that
recipient only; a refusal at RCPT or after the end-of-data dot carries its reply code and enhanced
status code, for the publisher to record as a bounce (a refused MAIL FROM or DATA command does not:
it says nothing about the recipient); a connection dropped before the end-of-data dot went out
reconnects and the message is retried (resending it is safe: its Message-ID is deterministic). No
reply once the dot went out is `unknown`: the server may have the message, so it is never resent
blindly. An address that needs SMTPUTF8 where the server does not offer it, or an unexpected error
with one message, fails that message only. An unreachable server, a refused login or a TLS failure
stops the channel with one clear line, and nothing is marked sent.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import subprocess
import sys
import threading
import time
from typing import Annotated, ClassVar, Literal

from pydantic import Field, SecretStr

from pipeline.bounces.classify import enhanced_code
from pipeline.channels.base import ChannelSettings
from pipeline.channels.smtp_session import Session, SessionSettings, envelope_address, read_frame, write_frame
from pipeline.config import Config
from pipeline.errors import ChannelError
from pipeline.fields import email_address
from pipeline.models import Delivery, Receipt


class SmtpSettings(ChannelSettings):
    host: str
    port: int = Field(default=587, gt=0, lt=65536)
    security: Literal["none", "starttls", "tls"] = "starttls"
    username: str | None = None
    password: SecretStr | None = None
    from_: Annotated[str, email_address(named=True)] | None = Field(default=None, alias="from")
    reply_to: Annotated[str, email_address(named=True)] | None = None
    connections: int = Field(default=4, ge=1, le=64)
    rate: float = Field(default=0, ge=0)           # messages per second over all connections; 0: no cap
    timeout: float = Field(default=30, gt=0)
    tls_verify: bool = True
    ca_file: str | None = None
    local_hostname: str | None = None
    pipelining: bool = True                        # use ESMTP PIPELINING when the server offers it
    processes: bool = True                         # one worker process per connection
    retries: int = Field(default=3, ge=0)          # for temporary (4xx) failures
    retry_wait: float = Field(default=2.0, ge=0)   # first backoff, seconds; doubles, with jitter
    dkim: DkimSettings | None = None


class DkimSettings(ChannelSettings):
    domain: str
    selector: str
    private_key: SecretStr          # PEM text, usually `${DKIM_PRIVATE_KEY}`


SmtpSettings.model_rebuild()


class RateLimit:
    """At most `rate` acquisitions per second across threads (0: unlimited)."""

    def __init__(self, rate: float) -> None:
        self.interval = 1 / rate if rate else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def acquire(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            at = max(now, self._next)
            self._next = at + self.interval
        if at > now:
            time.sleep(at - now)


class Smtp:
    type: ClassVar[str] = "smtp"
    kinds: ClassVar[frozenset[str]] = frozenset({"email"})
    crash_rule: ClassVar[str] = "resend"
    Settings = SmtpSettings

    def __init__(self, *, name: str, settings: SmtpSettings, config: Config) -> None:
        self.name = name
        self.settings = settings
        self.concurrency = settings.connections
        self.sender = settings.from_ or config.sender
        self.reply_to = settings.reply_to or config.email.reply_to
        dkim = settings.dkim
        self.session = SessionSettings(
            host=settings.host, port=settings.port, security=settings.security,
            username=settings.username,
            password=settings.password.get_secret_value() if settings.password else None,
            timeout=settings.timeout, tls_verify=settings.tls_verify,
            ca_file=str(config.path(settings.ca_file)) if settings.ca_file else None,
            local_hostname=settings.local_hostname, pipelining=settings.pipelining, channel=name,
            dkim=(dkim.domain, dkim.selector, dkim.private_key.get_secret_value()) if dkim else None)
        self.limit = RateLimit(settings.rate)
        self._local = threading.local()
        self._all: list[Session | _Worker] = []
        self._lock = threading.Lock()

    def send(self, delivery: Delivery) -> Receipt:
        assert delivery.message is not None and delivery.recipient
        self.limit.acquire()
        outcome = self._session().send(delivery.envelope_from or envelope_address(self.sender),
                                       delivery.recipient, delivery.message)
        kind, text = outcome[0], outcome[1]
        if kind == "ok":
            return Receipt(key=delivery.key, remote_id=_message_id(delivery.message),
                           detail=f"{self.session.where}: {text}")
        if kind == "fatal":
            raise ChannelError(text, retryable=False, fatal=True)
        if kind == "lost":
            raise ChannelError(text, retryable=True)
        if kind == "unknown":
            raise ChannelError(text, retryable=False, unknown=True)
        reply_code, status = _bounce(outcome[3])
        raise ChannelError(text, retryable=bool(outcome[2]), reply_code=reply_code, status=status)

    def _session(self) -> Session | _Worker:
        """This thread's connection (in a worker process, or in this one)."""
        session = getattr(self._local, "session", None)
        if session is None:
            session = _Worker(self.session) if self.settings.processes else Session(self.session)
            self._local.session = session
            with self._lock:
                self._all.append(session)
        return session

    def close(self) -> None:
        with self._lock:
            sessions, self._all = self._all, []
        for session in sessions:
            session.close()


class _Worker:
    """A Session in a worker process (`python -m pipeline.channels.smtp_worker`), spoken to over
    its stdin and stdout. The password travels in the first frame, never in argv or the env."""

    def __init__(self, settings: SessionSettings) -> None:
        self.where = settings.where
        self.process = subprocess.Popen([sys.executable, "-m", "pipeline.channels.smtp_worker"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.process.stdin is not None and self.process.stdout is not None
        self.stdin, self.stdout = self.process.stdin, self.process.stdout
        write_frame(self.stdin, json.dumps(dataclasses.asdict(settings)).encode())

    def send(self, sender: str, recipient: str, message: bytes) -> tuple[object, ...]:
        try:
            write_frame(self.stdin, json.dumps([sender, recipient]).encode())
            write_frame(self.stdin, message)
            reply = read_frame(self.stdout)
        except OSError:
            reply = None
        if reply is None:
            return ("fatal", f"{self.where}: the SMTP worker process ended unexpectedly")
        return tuple(json.loads(reply))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


# The stages whose refusal is about the recipient: RCPT, and the reply after the end-of-data dot
# (one recipient per transaction, so a refused message is refused for that recipient).
_RECIPIENT_STAGES = frozenset({"RCPT", "END"})


def _bounce(reply: object) -> tuple[int | None, str | None]:
    """(reply code, enhanced status code) of a session's refusal [stage, code, text] that is about
    the recipient; (None, None) otherwise. The enhanced code opens the reply's text (RFC 2034):
    looked for there only, so that a number later in the text (an IP address) is not taken for
    one. One whose class differs from the reply's ("550 4.2.2") contradicts it (RFC 3463): the
    reply code alone decides then."""
    if not isinstance(reply, list | tuple) or len(reply) != 3 or reply[0] not in _RECIPIENT_STAGES:
        return None, None
    _, code, text = reply
    status = enhanced_code(str(text).split(maxsplit=1)[0]) if str(text).strip() else None
    if status is not None and status[0] != str(code)[:1]:
        status = None
    return int(code), status


def _message_id(message: bytes) -> str | None:
    start = message.find(b"\nMessage-ID: ")
    if start < 0:
        return None
    end = message.find(b"\n", start + 1)
    return message[start + 13:end].strip().decode("ascii", "replace")
