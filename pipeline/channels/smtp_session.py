"""One SMTP connection and the protocol of one message, in this process or in a worker process.

Standard library only (plus dkimpy when signing), so a worker process starts quickly. Outcomes
are plain tuples that cross a process boundary unchanged:

    ("ok", reply)                      the server accepted the message
    ("error", message, retryable)      a 4xx (retryable) or 5xx reply for this message
    ("lost", message)                  the connection dropped; the message may be retried
    ("fatal", message)                 cannot connect, log in or start TLS: stop the channel
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import smtplib
import socket
import ssl
from dataclasses import dataclass
from email.utils import parseaddr
from typing import Any, BinaryIO

Outcome = tuple[Any, ...]


@dataclass(frozen=True, kw_only=True)
class SessionSettings:
    """What a session needs; plain values so that it pickles into a worker process."""

    host: str
    port: int
    security: str
    username: str | None
    password: str | None
    timeout: float
    tls_verify: bool
    ca_file: str | None
    local_hostname: str | None
    pipelining: bool
    channel: str
    dkim: tuple[str, str, str] | None = None     # (domain, selector, private key PEM)

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


class Session:
    """A reusable connection: `send` connects on first use and after a drop."""

    def __init__(self, settings: SessionSettings) -> None:
        self.s = settings
        self.conn: smtplib.SMTP | None = None

    def send(self, sender: str, recipient: str, message: bytes) -> Outcome:
        if self.conn is None:
            failure = self._connect()
            if failure:
                return failure
        assert self.conn is not None
        if self.s.dkim:
            message = _sign(message, self.s.dkim)
        try:
            return _transaction(self.conn, sender, recipient, message, pipelining=self.s.pipelining)
        except (smtplib.SMTPServerDisconnected, ConnectionError, TimeoutError) as exc:
            self.close()
            return ("lost", f"{self.s.where}: connection lost while sending ({exc or 'disconnected'})")

    def _connect(self) -> Outcome | None:
        s = self.s
        context = ssl.create_default_context(cafile=s.ca_file)
        if not s.tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        try:
            if s.security == "tls":
                conn: smtplib.SMTP = smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout,
                                                      local_hostname=s.local_hostname, context=context)
            else:
                conn = smtplib.SMTP(s.host, s.port, timeout=s.timeout, local_hostname=s.local_hostname)
            conn.ehlo()
            if s.security == "starttls":
                if not conn.has_extn("starttls"):
                    conn.close()
                    return ("fatal", f"{s.where}: the server does not offer STARTTLS; set `security: tls` "
                                     f"or `none` for channel {s.channel}")
                conn.starttls(context=context)
                conn.ehlo()
            if s.username:
                conn.login(s.username, s.password or "")
        except smtplib.SMTPAuthenticationError as exc:
            return ("fatal", f"{s.where}: login refused for user {s.username!r} ({exc.smtp_code} "
                             f"{_text(exc.smtp_error)}); check the username and password")
        except ssl.SSLError as exc:
            return ("fatal", f"{s.where}: TLS failed ({exc.reason or exc}); check `security:` and the "
                             "server's certificate")
        except (OSError, smtplib.SMTPException) as exc:
            return ("fatal", f"{s.where}: cannot connect ({_describe(exc)})")
        self.conn = conn
        return None

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                conn.quit()
            with contextlib.suppress(OSError):
                conn.close()


def serve(stdin: BinaryIO, stdout: BinaryIO) -> None:
    """A worker process (`python -m pipeline.channels.smtp_worker`): settings, then messages
    arrive as length-prefixed frames on stdin; each outcome goes back as a frame on stdout. Ends
    when stdin closes (the publisher finished, or was killed: then at most the one message in
    hand was in flight)."""
    # Ctrl-C reaches the whole process group: the publisher decides when to stop, and this
    # process finishes the message in hand, then ends when its stdin closes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    first = _read_frame(stdin)
    if first is None:
        return
    fields = json.loads(first)
    fields["dkim"] = tuple(fields["dkim"]) if fields.get("dkim") else None
    session = Session(SessionSettings(**fields))
    try:
        while (header := _read_frame(stdin)) is not None and (message := _read_frame(stdin)) is not None:
            sender, recipient = json.loads(header)
            write_frame(stdout, json.dumps(session.send(sender, recipient, message)).encode())
    finally:
        session.close()


def write_frame(stream: BinaryIO, data: bytes) -> None:
    """One frame: a 4-byte big-endian length, then the bytes."""
    stream.write(len(data).to_bytes(4, "big") + data)
    stream.flush()


def _read_frame(stream: BinaryIO) -> bytes | None:
    head = stream.read(4)
    if len(head) < 4:
        return None
    size = int.from_bytes(head, "big")
    data = stream.read(size)
    return data if len(data) == size else None


read_frame = _read_frame


def _transaction(conn: smtplib.SMTP, sender: str, recipient: str, message: bytes, *,
                 pipelining: bool) -> Outcome:
    """MAIL, RCPT, DATA for one message.

    The protocol steps of `SMTP.sendmail`, with two differences a publisher needs. With ESMTP
    PIPELINING (RFC 2920) the three commands go out in one write and their replies are read
    together: two round trips per message instead of four. And the message, already CRLF-encoded,
    is dot-stuffed with one bytes.replace; sendmail rescans every message with two regexes."""
    options = " SMTPUTF8" if not (sender + recipient).isascii() and conn.has_extn("smtputf8") else ""
    commands = [f"MAIL FROM:<{sender}>{options}", f"RCPT TO:<{recipient}>", "DATA"]
    if pipelining and conn.has_extn("pipelining"):
        conn.send("".join(c + "\r\n" for c in commands))
        replies = [conn.getreply() for _ in commands]
    else:
        replies = []
        for command in commands:
            replies.append(conn.docmd(command))
            if replies[-1][0] not in (250, 251, 354):
                break
    refused = _refusal(conn, replies)
    if refused:
        return refused
    conn.send(_wire(message) + b".\r\n")
    code, reply = conn.getreply()
    if code != 250:
        return _error(code, reply, "message refused")
    return ("ok", f"{code} {_text(reply)}")


def _refusal(conn: smtplib.SMTP, replies: list[tuple[int, bytes]]) -> Outcome | None:
    codes = [code for code, _ in replies] + [0] * (3 - len(replies))
    if codes[0] == 250 and codes[1] in (250, 251) and codes[2] == 354:
        return None
    if codes[2] == 354:             # pipelined: the server wants a body it must not get
        conn.send(b".\r\n")
        conn.getreply()
    for (code, reply), (ok, what) in zip(replies, (((250,), "sender refused"),
                                                   ((250, 251), "recipient refused"),
                                                   ((354,), "message refused")), strict=False):
        if code not in ok:
            if code == 421:
                raise smtplib.SMTPServerDisconnected("421 service not available, closing connection")
            conn.rset()
            return _error(code, reply, what)
    return None


def _wire(message: bytes) -> bytes:
    """The message as DATA sends it: CRLF line endings, ending in CRLF, leading dots doubled."""
    if message.count(b"\n") != message.count(b"\r\n"):
        message = re.sub(rb"\r\n|\r|\n", b"\r\n", message)
    message = message.replace(b"\r\n.", b"\r\n..")      # C speed; a regex took 100 µs here
    if message.startswith(b"."):
        message = b"." + message
    return message if message.endswith(b"\r\n") else message + b"\r\n"


def _sign(message: bytes, dkim_settings: tuple[str, str, str]) -> bytes:
    """A DKIM-Signature header (RFC 6376) over the headers that matter, both List-Unsubscribe
    headers included (as RFC 8058 requires for one-click), prepended to the message."""
    import dkim

    domain, selector, key = dkim_settings
    wanted = [b"from", b"to", b"subject", b"date", b"message-id", b"mime-version", b"content-type",
              b"reply-to", b"list-unsubscribe", b"list-unsubscribe-post"]
    present = {line.split(b":", 1)[0].strip().lower()
               for line in message.split(b"\r\n\r\n", 1)[0].split(b"\r\n") if line[:1] not in b" \t"}
    signature = dkim.sign(message, selector.encode(), domain.encode(), key.encode(),
                          include_headers=[h for h in wanted if h in present])
    return signature.replace(b"\n", b"\r\n").replace(b"\r\r\n", b"\r\n") + message


def _error(code: int, reply: bytes | str, what: str) -> Outcome:
    return ("error", f"{what}: {code} {_text(reply)}", 400 <= code < 500)


def _text(reply: bytes | str) -> str:
    return (reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply).replace("\n", " ")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, socket.gaierror):
        return f"unknown host: {exc.strerror}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused: is the server running and the port right?"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    return str(exc) or type(exc).__name__


def envelope_address(sender: str) -> str:
    """The bare address of a From value ("Name <a@b>" -> "a@b")."""
    return parseaddr(sender)[1] or sender

