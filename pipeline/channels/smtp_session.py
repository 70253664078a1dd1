"""One SMTP connection and the protocol of one message, in this process or in a worker process.

Standard library only (plus dkimpy when signing, idna for an internationalized domain), so a
worker process starts quickly and stays small: it imports neither `typing` nor `logging` (a
megabyte and a half between them). Outcomes are plain tuples that cross a process boundary
unchanged:

    ("ok", reply)                      the server accepted the message
    ("error", message, retryable, reply)
                                       a 4xx (retryable) or 5xx reply for this message, an address
                                       this server cannot take, or an unexpected error (permanent);
                                       `reply` is [stage, code, text] when the server refused
                                       (stage: MAIL, RCPT, DATA, or END after the end-of-data dot),
                                       else None
    ("lost", message)                  the connection dropped before the end-of-data dot went out:
                                       the server has no message, so it may be retried
    ("unknown", message)               no reply once the dot went out: the server may have accepted
                                       it, so it must not be sent again blindly
    ("fatal", message)                 cannot connect, log in or start TLS: stop the channel

`Session.send` never raises: whatever goes wrong with one message is that message's outcome, so
one hostile address never ends a worker process or stops the messages after it.
"""

from __future__ import annotations

import contextlib
import json
import marshal
import os
import re
import signal
import smtplib
import socket
import ssl
from dataclasses import dataclass, replace
from email.utils import parseaddr

TYPE_CHECKING = False       # `typing.TYPE_CHECKING` without importing `typing`
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any, BinaryIO

    from pipeline.render.personalize import MessageParts

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
    """A reusable connection: `send` connects on first use and after a drop. `log_errors`:
    whether an unexpected error is logged here too (a worker process's outcome carries it to
    the publisher, which logs it)."""

    def __init__(self, settings: SessionSettings, *, log_errors: bool = True) -> None:
        self.s = settings
        self.log_errors = log_errors
        self.conn: smtplib.SMTP | None = None
        # Whether the end-of-data dot of the message in hand went out: after it, the server may
        # hold the message, and a lost reply no longer means it was not delivered.
        self.dot_sent = False

    def send(self, sender: str, recipient: str, message: bytes, *, wire: bool = False) -> Outcome:
        """Send one message on this connection (connecting first if needed); its outcome.
        `wire`: the message is already in DATA form (`WireParts`), and is not to be signed."""
        if self.conn is None:
            failure = self._connect()
            if failure:
                return failure
        self.dot_sent = False
        try:
            return self._transaction(sender, recipient, message, wire=wire)
        except OSError as exc:        # smtplib's disconnects and timeouts, resets, TLS errors
            self.close()
            if self.dot_sent:
                return _unanswered(self.s.where, exc)
            return ("lost", f"{self.s.where}: connection lost while sending ({exc or 'disconnected'})")
        except Exception as exc:
            # A bug, or broken state (an address that never went through validation): this message
            # fails and the others go on. The protocol state is unknown, so the connection goes.
            self.close()
            if self.log_errors:
                import logging

                log = logging.getLogger(__name__)
                log.error("%s: unexpected error sending to %s (%s: %s)", self.s.where, recipient,
                          type(exc).__name__, exc, exc_info=log.isEnabledFor(logging.DEBUG))
            if self.dot_sent:
                return _unanswered(self.s.where, exc)
            return ("error", _text(f"{self.s.where}: unexpected error sending to {recipient} "
                                   f"({type(exc).__name__}: {exc})"), False, None)

    def _transaction(self, sender: str, recipient: str, message: bytes, *, wire: bool) -> Outcome:
        """MAIL, RCPT, DATA for one message.

        The protocol steps of `SMTP.sendmail`, with two differences a publisher needs. With ESMTP
        PIPELINING (RFC 2920) the three commands go out in one write and their replies are read
        together: two round trips per message instead of four. And the message, already
        CRLF-encoded, is dot-stuffed with one bytes.replace; sendmail rescans every message with
        two regexes."""
        conn = self.conn
        assert conn is not None
        mail_from, rcpt_to = _smtp_address(sender), _smtp_address(recipient)
        utf8 = not (mail_from + rcpt_to).isascii()
        if utf8 and not conn.has_extn("smtputf8"):
            who = recipient if not rcpt_to.isascii() else f"the sender {sender}"
            return ("error", f"{who}: a non-ASCII local part needs SMTPUTF8, which {self.s.where} "
                             "does not offer", False, None)
        if self.s.dkim:
            if wire:      # a signature covers the message before dot-stuffing: never sent unsigned
                raise ValueError("a message already in DATA form cannot be signed")
            message = _sign(message, self.s.dkim)
        # smtplib's own switch, as `sendmail` uses it: commands go out as UTF-8 under SMTPUTF8 only.
        conn.command_encoding = "utf-8" if utf8 else "ascii"
        commands = [f"MAIL FROM:<{mail_from}>{' SMTPUTF8' if utf8 else ''}", f"RCPT TO:<{rcpt_to}>", "DATA"]
        if self.s.pipelining and conn.has_extn("pipelining"):
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
        conn.send((message if wire else _wire(message)) + b".\r\n")
        self.dot_sent = True
        code, reply = conn.getreply()
        if code != 250:
            return _error(code, reply, "message refused", "END")
        return ("ok", f"{code} {_text(reply)}")

    def _connect(self) -> Outcome | None:
        s = self.s
        context: ssl.SSLContext | None = None
        if s.security != "none":
            # Only for TLS: loading the system's CA certificates costs a worker tens of ms of CPU.
            try:
                context = ssl.create_default_context(cafile=s.ca_file)
            except OSError as exc:
                return ("fatal", f"{s.where}: cannot read ca_file {s.ca_file} ({exc.strerror or exc})")
            if not s.tls_verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
        if s.dkim:
            import dkim.crypto

            try:        # checked once here, not found out message by message
                dkim.crypto.parse_pem_private_key(s.dkim[2].encode())
            except dkim.crypto.UnparsableKeyError as exc:
                return ("fatal", _text(f"{s.where}: the DKIM private key cannot be read ({exc}); check "
                                       f"`dkim: private_key` of channel {s.channel}"))
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
        except Exception as exc:      # whatever it is, every message would meet it: stop the channel
            return ("fatal", _text(f"{s.where}: cannot connect ({type(exc).__name__}: {exc})"))
        self.conn = conn
        return None

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                conn.quit()
            with contextlib.suppress(OSError):
                conn.close()


def serve(stdin: int, stdout: int) -> None:
    """A worker process (`python -m pipeline.channels.smtp_worker`), on the file descriptors of
    its standard input and output. Frames arrive on stdin, length-prefixed: the settings (JSON),
    then pairs of a header and a payload. Headers are `marshal`ed tuples (the publisher runs this
    same interpreter: a tenth of JSON's cost, per message): `("T",)` brings an edition's
    `MessageParts` (`personalize.MessageParts.wire`); `(sender, recipient, key, message_id,
    values, list_unsubscribe)` a message: with `values`, the parts filled in for the recipient
    (the payload is empty; straight into DATA form, `WireParts`, unless DKIM signs), else the
    payload itself. The publisher may queue several. Each outcome goes back as a frame on
    stdout, in order: `+`, the Message-ID, a newline and the reply for a message the server
    took, else the outcome as JSON; a few at a time while more messages are queued, all of them
    before this process waits for more.

    With a `journal` path among the settings, an `S` line goes there before a message goes on
    the wire, then a `D` line once the server said 250 or an `F` line once it surely does not
    have the message (`smtp_journal` reads them after a crash); a message's last line goes out
    with the next one's `S`, or before this process waits. Ends when stdin closes, and sends
    nothing more once the publisher is gone (killed: this process is no longer its child), so
    that a crash leaves at most the one message in hand on the wire. After an outcome that stops
    the channel (cannot connect, log in, start TLS), every message gets it without a try."""
    # Ctrl-C reaches the whole process group: the publisher decides when to stop, and this
    # process finishes the message in hand, then ends when its stdin closes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    publisher = os.getppid()
    frames = _Frames(stdin)
    first = frames.next()
    if first is None:
        return
    fields = json.loads(first)
    journal_path = fields.pop("journal", None)
    fields["dkim"] = tuple(fields["dkim"]) if fields.get("dkim") else None
    # Every outcome goes back in a frame and the publisher logs it: nothing on this stderr.
    session = Session(SessionSettings(**fields), log_errors=False)
    out = _Output(stdout, journal_path)
    parts = ready = None
    stopped: Outcome | None = None
    try:
        while True:
            if not frames.pair_ready() and not out.flush():
                return                      # the publisher is gone (the journal has the outcomes)
            if (header := frames.next()) is None or (payload := frames.next()) is None:
                return
            if os.getppid() != publisher:
                return
            fields = marshal.loads(header)
            if fields == ("T",):
                from pipeline.render.personalize import MessageParts

                parts = MessageParts.from_wire(payload)
                ready = None if session.s.dkim else WireParts.of(parts)
                continue
            if stopped:
                outcome, message_id = stopped, None
            else:
                outcome, message_id = _deliver(session, out, (parts, ready), fields, payload)
                if outcome[0] == "fatal":
                    stopped = outcome
            if not out.reply(f"+{message_id or ''}\n{outcome[1]}".encode() if outcome[0] == "ok"
                             else json.dumps(outcome).encode()):
                return
    finally:
        out.flush()
        out.close()
        session.close()


class _Frames:
    """Length-prefixed frames from a file descriptor, read in large chunks: `pair_ready` says
    whether the next header and payload are already in, so that nothing waits on them."""

    def __init__(self, fd: int) -> None:
        self.fd, self.buffer, self.start, self.eof = fd, bytearray(), 0, False

    def _end(self, at: int) -> int | None:
        """Where the frame starting at `at` ends, if it is all in."""
        if len(self.buffer) - at < 4:
            return None
        end = at + 4 + int.from_bytes(self.buffer[at:at + 4], "big")
        return end if len(self.buffer) >= end else None

    def pair_ready(self) -> bool:
        first = self._end(self.start)
        return first is not None and self._end(first) is not None

    def next(self) -> bytes | None:
        """The next frame, waiting for it; None at the end of the input."""
        while (end := self._end(self.start)) is None:
            if self.eof:
                return None
            chunk = os.read(self.fd, 1 << 16)
            self.eof = not chunk
            del self.buffer[:self.start]
            self.start = 0
            self.buffer += chunk
        frame = bytes(self.buffer[self.start + 4:end])
        self.start = end
        return frame


class _Output:
    """The replies to the publisher and the journal's lines, held briefly and written in few
    system calls: a line that must be written before a message goes on the wire is written
    then (`journal(..., now=True)`), replies a few at a time (`REPLIES`) or when `flush`ed."""

    # Half a publisher's queue (`smtp.QUEUE`): it claims more once half a queue is answered, and
    # each write of replies wakes it.
    REPLIES = 16

    def __init__(self, stdout: int, journal: str | None) -> None:
        self.stdout, self.journal_path = stdout, journal
        self.journal_fd = (os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
                           if journal else None)
        self.replies: list[bytes] = []
        self.lines = b""

    def journal(self, line: bytes, *, now: bool = False) -> None:
        """Add a line; with `now`, write the lines held (OSError if that fails)."""
        if self.journal_fd is None:
            return
        self.lines += line
        if now:
            lines, self.lines = self.lines, b""
            _write_all(self.journal_fd, lines)

    def reply(self, frame: bytes) -> bool:
        """Queue a reply; False if the publisher is gone."""
        self.replies.append(len(frame).to_bytes(4, "big") + frame)
        return len(self.replies) < self.REPLIES or self.flush()

    def flush(self) -> bool:
        """Write what is held, the journal first; False if the publisher is gone."""
        if self.lines and self.journal_fd is not None:
            lines, self.lines = self.lines, b""
            with contextlib.suppress(OSError):      # a lost line only means a resend after a crash
                _write_all(self.journal_fd, lines)
        if self.replies:
            data, self.replies = b"".join(self.replies), []
            try:
                _write_all(self.stdout, data)
            except OSError:
                return False
        return True

    def close(self) -> None:
        if self.journal_fd is not None:
            os.close(self.journal_fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _deliver(session: Session, out: _Output, edition: tuple[Any, WireParts | None],
             fields: tuple[Any, ...], payload: bytes) -> tuple[Outcome, str | None]:
    """One message of `serve` (its header `fields` and `payload`): filled in from the edition's
    (parts, the same in DATA form or None) when it comes as values, sent, and journaled around
    the send. Its outcome and Message-ID."""
    sender, recipient, key, message_id, values, list_unsubscribe = fields
    wire = False
    if values is not None:
        parts, ready = edition
        try:
            from pipeline.render.personalize import message_id as make_id

            message_id = message_id or make_id(parts.edition_key, recipient, parts.domain)
            filled = (ready.render(to=recipient, values=values, list_unsubscribe=list_unsubscribe,
                                   mid=message_id) if ready else None)
            wire = filled is not None
            payload = filled or parts.render(to=recipient, values=values, list_unsubscribe=list_unsubscribe,
                                             mid=message_id)
        except Exception as exc:     # a bug: this message fails, the others go on
            return ("error", _text(f"cannot fill in the message to {recipient} ({type(exc).__name__}: "
                                   f"{exc})"), False, None), message_id
    quoted = json.dumps(key)
    try:
        out.journal(f'["S", {quoted}]\n'.encode(), now=True)      # before anything goes on the wire
    except OSError as exc:           # not sent: without the line, a crash could not be told apart
        return ("fatal", f"cannot write the send journal {out.journal_path} ({exc.strerror or exc}); "
                         "check the free space and permissions of the state folder"), message_id
    outcome = session.send(sender, recipient, payload, wire=wire)
    if outcome[0] != "unknown":         # unknown: it may have arrived, as if still on the wire
        out.journal(f'["D", {quoted}, {json.dumps(message_id)}]\n'.encode() if outcome[0] == "ok"
                    else f'["F", {quoted}]\n'.encode())
    return outcome, message_id


def journal_line(kind: str, key: str | list[str], message_id: str | None = None) -> bytes:
    """One line of a send journal: `C` keys claimed, `S` a key on the wire, `D` delivered (with
    the Message-ID), `F` not delivered; JSON, so that no key can break a line."""
    return (json.dumps([kind, key] if message_id is None else [kind, key, message_id]) + "\n").encode()


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


def _refusal(conn: smtplib.SMTP, replies: list[tuple[int, bytes]]) -> Outcome | None:
    codes = [code for code, _ in replies] + [0] * (3 - len(replies))
    if codes[0] == 250 and codes[1] in (250, 251) and codes[2] == 354:
        return None
    if codes[2] == 354:             # pipelined: the server wants a body it must not get
        conn.send(b".\r\n")
        conn.getreply()
    for (code, reply), (ok, what, stage) in zip(replies, (((250,), "sender refused", "MAIL"),
                                                          ((250, 251), "recipient refused", "RCPT"),
                                                          ((354,), "message refused", "DATA")),
                                                strict=False):
        if code not in ok:
            if code == 421:
                raise smtplib.SMTPServerDisconnected("421 service not available, closing connection")
            conn.rset()
            return _error(code, reply, what, stage)
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
    headers included (as RFC 8058 requires for one-click) and Feedback-ID (which Gmail's feedback
    loop trusts only when signed), prepended to the message."""
    import dkim

    domain, selector, key = dkim_settings
    wanted = [b"from", b"to", b"subject", b"date", b"message-id", b"mime-version", b"content-type",
              b"reply-to", b"list-unsubscribe", b"list-unsubscribe-post", b"list-id", b"feedback-id"]
    present = {line.split(b":", 1)[0].strip().lower()
               for line in message.split(b"\r\n\r\n", 1)[0].split(b"\r\n") if line[:1] not in b" \t"}
    signature = dkim.sign(message, selector.encode(), domain.encode(), key.encode(),
                          include_headers=[h for h in wanted if h in present])
    return signature.replace(b"\n", b"\r\n").replace(b"\r\r\n", b"\r\n") + message


def _smtp_address(address: str) -> str:
    """An address as the envelope carries it: the domain as its IDNA A-label (ASCII), the local
    part as it is (non-ASCII needs SMTPUTF8)."""
    if "\r" in address or "\n" in address:      # what smtplib's putcmd refuses; the pipelined path
        raise ValueError("the address contains a line break")    # writes past putcmd
    local, at, domain = address.rpartition("@")
    if not at or domain.isascii():
        return address
    # IDNA 2008 (UTS 46), as email-validator checked the address when it was stored; the idna
    # codec of the standard library is IDNA 2003, which maps "ß" to "ss": another domain.
    import idna

    return f"{local}@{idna.encode(domain, uts46=True).decode('ascii')}"


def _unanswered(where: str, exc: BaseException) -> Outcome:
    return ("unknown", _text(f"{where}: no reply after the message was sent ({exc or type(exc).__name__}); "
                             "the server may have accepted it: check, then `pipeline retry --unknown`"))


def _error(code: int, reply: bytes | str, what: str, stage: str) -> Outcome:
    """A refusal: its message, whether it is temporary, and the reply itself ([stage, code, text],
    lists as JSON carries them) for the publisher to classify."""
    text = _text(reply)
    return ("error", f"{what}: {code} {text}", 400 <= code < 500, [stage, code, text])


def _text(reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    return text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")


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


# -- messages filled straight into DATA form -----------------------------------------------------
#
# A bare sender of arbitrary bytes must check every message's line ends and double its leading
# dots (`_wire`: two thirds of a worker's own time on a 20 KB message). An edition's
# `MessageParts` are the same for every recipient: their fixed pieces are checked and dot-stuffed
# once, when they reach the worker; a message then needs only its recipient's few short values
# looked at. A value that would need the long way (a line of it opening with a dot, a stray CR or
# LF) gets it: that message is filled in as usual and goes through `Session.send`'s conversion.
# Not for DKIM: a signature covers the message before dot-stuffing. `personalize` is imported
# when the parts arrive, not when the worker starts.


@dataclass(frozen=True, kw_only=True, slots=True)
class WireParts:
    """An edition's parts with their fixed pieces already in DATA form (`of`)."""

    parts: MessageParts             # head and fixed body pieces dot-stuffed
    fields: tuple[str, ...]         # the values the slots take, each once

    @classmethod
    def of(cls, parts: MessageParts) -> WireParts | None:
        """These parts made ready for DATA; None when they are not as `mime.MessageTemplate`
        makes them (a bare CR or LF, a value not on lines of its own): every message then takes
        the usual way."""
        slots = {at for at, _, _ in parts.slots}
        if not _crlf_only(parts.head):
            return None
        body = list(parts.body)
        line_start = True       # the recipient's header lines, each ending in CRLF, come before
        for at, piece in enumerate(parts.body):
            if at in slots:
                if not line_start:
                    return None
                continue        # a filled value ends in CRLF, or is empty
            if not _crlf_only(piece):
                return None
            body[at] = _stuff(piece, line_start=line_start)
            line_start = piece.endswith(b"\r\n") if piece else line_start
        return cls(parts=replace(parts, head=_stuff(parts.head, line_start=True), body=tuple(body)),
                   fields=tuple(dict.fromkeys(field for _, field, _ in parts.slots)))

    def render(self, *, to: str, values: Mapping[str, str], list_unsubscribe: str | None,
               mid: str) -> bytes | None:
        """The message for one recipient in DATA form, ending in CRLF (without the end-of-data
        dot); None when one of its values needs the usual conversion."""
        # Both loaded with the parts (`personalize` imports `html`): lookups, not loads.
        import html

        from pipeline.render.personalize import qp

        for text in (to, mid, list_unsubscribe or ""):
            if "\r" in text or "\n" in text:
                return None
        for field in self.fields:
            value = values[field]
            escaped = html.escape(value)
            if not _ready(qp(value, soft_end=True)) or (escaped != value
                                                         and not _ready(qp(escaped, soft_end=True))):
                return None
        message = self.parts.render(to=to, values=values, list_unsubscribe=list_unsubscribe, mid=mid)
        return message if message.endswith(b"\r\n") else message + b"\r\n"


def _crlf_only(data: bytes) -> bool:
    """Whether every CR and LF of `data` is part of a CRLF."""
    crlf = data.count(b"\r\n")
    return data.count(b"\r") == crlf and data.count(b"\n") == crlf


def _stuff(data: bytes, *, line_start: bool) -> bytes:
    stuffed = data.replace(b"\r\n.", b"\r\n..")
    return b"." + stuffed if line_start and stuffed.startswith(b".") else stuffed


def _ready(encoded: bytes) -> bool:
    """Whether a filled-in value needs nothing done for DATA: CRLF line ends only, no line of it
    opening with a dot, and ending a line (or empty), so that what follows starts one."""
    return (_crlf_only(encoded) and not encoded.startswith(b".") and b"\r\n." not in encoded
            and (not encoded or encoded.endswith(b"\r\n")))
