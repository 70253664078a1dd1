"""A real SMTP server for tests: aiosmtpd on a free loopback port, recording what it accepts.

Behaviour is programmable per recipient: temporary (4xx) or permanent (5xx) refusals, any reply
code and text at RCPT or after the message (`Behaviour.reject`), dropping the connection in the
middle of a message, stalling before the RCPT reply, and taking a message
in but never answering it (silence, or a closed connection, after the end-of-data dot).
The server offers SMTPUTF8 (aiosmtpd's Controller default); `Sink(enable_SMTPUTF8=False)` does not.
"""

from __future__ import annotations

import asyncio
import email
import email.parser
import email.policy
import socket
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    mail_options: list[str] = field(default_factory=list)

    @property
    def message(self) -> email.message.EmailMessage:
        return email.message_from_bytes(self.data, policy=email.policy.default)  # type: ignore[return-value]


@dataclass
class Behaviour:
    """What the server does. Counters are per recipient address."""

    temporary: dict[str, int] = field(default_factory=dict)   # address -> how many 451s first
    always_temporary: set[str] = field(default_factory=set)
    permanent: set[str] = field(default_factory=set)          # 550 at RCPT
    drop_once: set[str] = field(default_factory=set)          # close the connection at RCPT, once
    stall_rcpt: dict[str, int] = field(default_factory=dict)  # address -> how many RCPTs go unanswered
    # Take the message in (it counts as received), then never answer / close the connection.
    silent_after_data: set[str] = field(default_factory=set)
    close_after_data: set[str] = field(default_factory=set)
    # address -> (stage, code, text), every time: "RCPT" answers the RCPT command; "DATA" takes the
    # message in and answers the end-of-data dot (the message is then not received); "MAIL"
    # answers MAIL FROM for this sender address. E.g.
    # {"gone@example.com": ("RCPT", 550, "5.1.1 User unknown")}.
    reject: dict[str, tuple[str, int, str]] = field(default_factory=dict)

    def __setattr__(self, name: str, value: Any) -> None:
        # `sink.behaviour.reject = {...}` is checked like `reject[address] = ...`.
        super().__setattr__(name, _Rejections(value) if name == "reject" else value)


class _Rejections(dict[str, tuple[str, int, str]]):
    """`Behaviour.reject`, checked as it is filled: a typo in a test fails at once, not as a pass."""

    def __init__(self, items: dict[str, tuple[str, int, str]]) -> None:
        super().__init__()
        self.update(items)

    def __setitem__(self, address: str, rule: tuple[str, int, str]) -> None:
        stage, code, _ = rule
        if stage not in ("MAIL", "RCPT", "DATA") or not 400 <= code < 600:
            raise ValueError(f"reject[{address!r}]: stage MAIL, RCPT or DATA and a 4xx/5xx code, "
                             f"not {rule!r}")
        super().__setitem__(address, rule)

    def update(self, *args: Any, **kwargs: Any) -> None:
        for address, rule in dict(*args, **kwargs).items():
            self[address] = rule


class _Handler:
    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    async def handle_MAIL(self, server, session, envelope, address, options):  # type: ignore[no-untyped-def]
        rule = self.sink.behaviour.reject.get(address)
        if rule is not None and rule[0] == "MAIL":
            with self.sink.lock:
                self.sink.refusals[address] += 1
            return f"{rule[1]} {rule[2]}"
        envelope.mail_from = address          # what aiosmtpd does without this hook
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, options):  # type: ignore[no-untyped-def]
        stall = self.sink.behaviour.stall_rcpt
        with self.sink.lock:
            stalled = stall.get(address, 0) > 0
            if stalled:
                stall[address] -= 1
                self.sink.stalls[address] += 1
        if stalled:
            await asyncio.sleep(3600)     # cancelled by stop(); the client times out long before
        with self.sink.lock:
            drop = address in self.sink.behaviour.drop_once
            self.sink.behaviour.drop_once.discard(address)
        if drop:                          # before the message: the client may safely send it again
            server.transport.close()
            return "421 closing"
        if address in self.sink.behaviour.permanent:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        rule = self.sink.behaviour.reject.get(address)
        if rule is not None and rule[0] == "RCPT":
            with self.sink.lock:
                self.sink.refusals[address] += 1
            return f"{rule[1]} {rule[2]}"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        sink, b = self.sink, self.sink.behaviour
        rcpt = envelope.rcpt_tos[0]
        with sink.lock:
            sink.attempts[rcpt] += 1
            if rcpt in b.always_temporary or b.temporary.get(rcpt, 0) > 0:
                if rcpt in b.temporary:
                    b.temporary[rcpt] -= 1
                return "451 4.3.0 Temporary local problem, try again later"
            rule = b.reject.get(rcpt)
            if rule is not None:          # a RCPT rule never lets the message this far
                sink.refusals[rcpt] += 1
                return f"{rule[1]} {rule[2]}"
            sink.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.content,
                                          list(envelope.mail_options)))
            silent, close = rcpt in b.silent_after_data, rcpt in b.close_after_data
        if close:
            server.transport.close()
            return "250 2.0.0 Ok: queued"      # never reaches the client
        if silent:
            await asyncio.sleep(3600)
        return "250 2.0.0 Ok: queued"


class Sink:
    """Start with `Sink(...).start()`; `stop()` in teardown."""

    def __init__(self, **smtp_kwargs: Any) -> None:
        self.port = free_port()
        self.behaviour = Behaviour()
        self.received: list[Received] = []
        self.attempts: Counter[str] = Counter()
        self.stalls: Counter[str] = Counter()
        self.refusals: Counter[str] = Counter()     # replies given by `behaviour.reject`
        self.lock = threading.Lock()
        self.controller = Controller(_Handler(self), hostname="127.0.0.1", port=self.port,
                                     **smtp_kwargs)

    def start(self) -> Sink:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    def recipients(self) -> Counter[str]:
        with self.lock:
            return Counter(r for m in self.received for r in m.rcpt_tos)


def password_checker(username: str, password: str):  # type: ignore[no-untyped-def]
    """An aiosmtpd authenticator accepting exactly one username/password."""

    def authenticator(server, session, envelope, mechanism, auth_data):  # type: ignore[no-untyped-def]
        ok = isinstance(auth_data, LoginPassword) and auth_data.login == username.encode() \
            and auth_data.password == password.encode()
        return AuthResult(success=ok, handled=False)

    return authenticator


class _Recorder:
    """The handler of `python -m tests.smtp_sink`: each message taken in is written to the log as
    one line `recipient TAB Message-ID TAB client port`, flushed before the 250 is sent."""

    def __init__(self, log: Any) -> None:
        self.log, self.lock = log, threading.Lock()

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        headers = email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(envelope.content)
        with self.lock:
            for rcpt in envelope.rcpt_tos:
                self.log.write(f"{rcpt}\t{headers['Message-ID']}\t{session.peer[1]}\n")
            self.log.flush()
        return "250 2.0.0 Ok: queued"


def main() -> None:
    """A sink in a process of its own (so that a test can load it like a real server):
    `python -m tests.smtp_sink PORT LOG`, until SIGTERM."""
    import signal
    import sys

    port, path = int(sys.argv[1]), sys.argv[2]
    with open(path, "a", encoding="utf-8") as log:
        controller = Controller(_Recorder(log), hostname="127.0.0.1", port=port)
        controller.start()
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        stop.wait()
        controller.stop()


if __name__ == "__main__":
    main()
