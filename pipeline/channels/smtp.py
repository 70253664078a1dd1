"""SMTP: any relay or ESP endpoint. STARTTLS or implicit TLS, login from the environment,
`connections` reused connections, an optional rate cap, optional DKIM signing.

Each connection lives in a worker process of its own by default (`processes: true`): the
protocol's CPU work, and filling each message in for its recipient, then run beside the
publisher's instead of competing for one interpreter, which is what lets a publish keep up with
a bare SMTP client. A publisher drives them all from one thread (`workers()`: it queues
messages to fill in on each and reads the answers in order, keeping a send journal
(`smtp_journal`) so that a crash still resends at most the message each was sending); `send`
is the blocking form, one connection per calling thread.

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
import logging
import marshal
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, ClassVar, Literal

from pydantic import Field, SecretStr

from pipeline.channels.base import ChannelSettings
from pipeline.channels.smtp_session import Session, SessionSettings, envelope_address
from pipeline.config import Config
from pipeline.errors import ChannelError
from pipeline.fields import email_address
from pipeline.models import Delivery, Receipt

if TYPE_CHECKING:
    from pipeline.channels.smtp_journal import Journal
    from pipeline.channels.smtp_session import Outcome
    from pipeline.render.personalize import MessageParts
    from pipeline.store.ledger import Evidence

log = logging.getLogger(__name__)
# Messages a worker is kept ahead when a journal tells the ones on the wire from the others: enough
# that it never waits for the publisher and that each wake-up (a pipe write, a ledger commit for
# half a queue of answers) serves many messages (8 cost a fifth more CPU across the processes
# than 32; 64 cost the publisher 6% and the workers 2% less CPU than 32 at 20k messages, 128
# no less than 64), few enough that a stop leaves little claimed (a fifth of a second of sending).
# A crash still resends at most the one message each worker had on the wire.
QUEUE = 64


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
        """Wait for the next slot."""
        wait = self.reserve()
        if wait > 0:
            time.sleep(wait)

    def reserve(self) -> float:
        """Take the next slot without waiting for it: the seconds until it comes (0: now)."""
        if not self.interval:
            return 0.0
        with self._lock:
            now = time.monotonic()
            at = max(now, self._next)
            self._next = at + self.interval
        return at - now


class Smtp:
    type: ClassVar[str] = "smtp"
    kinds: ClassVar[frozenset[str]] = frozenset({"email"})
    crash_rule: ClassVar[str] = "resend"
    Settings = SmtpSettings

    def __init__(self, *, name: str, settings: SmtpSettings, config: Config) -> None:
        self.name = name
        self.settings = settings
        self.concurrency = settings.connections
        self.depth = 1                  # messages a worker is kept ahead (more with a journal)
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
        self._where = self.session.where
        self._envelope_from = envelope_address(self.sender)
        self._local = threading.local()
        self._all: list[Session | Worker] = []
        self._pool: list[Worker] = []
        self._lock = threading.Lock()
        self._journals = _journal_root(config)
        self.journal: Journal | None = None
        self._recovered: list[Path] = []
        self._spawned: list[subprocess.Popen[bytes]] = []    # started by `start`, not given out yet

    def start(self) -> None:
        """Start the worker processes now, before `workers()` needs them: an interpreter takes a
        while to start, and a publisher that renders and plans meanwhile hides that time. They
        get their settings (and this run's journal) only from `workers()`."""
        if not self.settings.processes:
            return
        with self._lock:
            if not self._pool and not self._spawned:
                self._spawned = [_spawn() for _ in range(self.concurrency)]

    def send(self, delivery: Delivery) -> Receipt:
        assert delivery.message is not None and delivery.recipient
        self.limit.acquire()
        outcome = self._session().send(self.envelope_from(delivery), delivery.recipient, delivery.message)
        return self.receipt(delivery.key, outcome, message=delivery.message)

    @property
    def fills(self) -> bool:
        """Whether a publisher hands this channel's `workers()` messages to fill in (from the
        edition's `MessageParts`) rather than messages: with worker processes, it does."""
        return self.settings.processes

    def envelope_from(self, delivery: Delivery) -> str:
        """The delivery's envelope sender: its own (the bounce address), else the From address."""
        return delivery.envelope_from or self._envelope_from

    def workers(self) -> list[Worker] | None:
        """One worker process per connection, all started now (and kept until `close`), for a
        publisher that drives them from one thread; None with `processes: false`. With a send
        journal (a SQLite state: beside its file), each worker is kept `depth` messages ahead."""
        if not self.settings.processes:
            return None
        with self._lock:
            if not self._pool:
                if self._journals is not None:
                    from pipeline.channels.smtp_journal import Journal

                    try:
                        self.journal = Journal(self._journals, self.name)
                    except OSError as exc:
                        log.warning("%s: no send journal in %s (%s); sending one message per "
                                    "connection at a time", self.name, self._journals, exc.strerror or exc)
                journal = self.journal
                spawned, self._spawned = self._spawned, []
                self._pool = [Worker(self.session, journal=journal.worker_path(i) if journal else None,
                                     process=spawned[i] if i < len(spawned) else None)
                              for i in range(self.concurrency)]
                self._all.extend(self._pool)
                self.depth = QUEUE if journal else 1
            return list(self._pool)

    def crash_evidence(self) -> Evidence | None:
        """What the send journals of this channel's crashed runs say (None: there are none);
        `forget_crashes` once the ledger took it in."""
        if self._journals is None or not self._journals.is_dir():
            return None
        from pipeline.channels.smtp_journal import evidence

        found, self._recovered = evidence(self._journals, self.name)
        return found if self._recovered else None

    def forget_crashes(self) -> None:
        from pipeline.channels.smtp_journal import discard

        discard(self._recovered)
        self._recovered = []

    def receipt(self, key: str, outcome: Outcome, *, message: bytes | None = None) -> Receipt:
        """A session's outcome for the message of `key`: its Receipt (the Message-ID the worker
        gave, else `message`'s), or the ChannelError it is."""
        key, remote_id, _ = self.sent_row(key, outcome, message=message)
        return Receipt(key=key, remote_id=remote_id, detail=f"{self._where}: {outcome[1]}")

    def sent_row(self, key: str, outcome: Outcome, *,
                 message: bytes | None = None) -> tuple[str, str | None, str | None]:
        """`receipt` as the ledger records it, (key, remote id, url), without a Receipt: a
        publisher's workers answer thousands a second."""
        kind, text = outcome[0], outcome[1]
        if kind == "ok":
            return key, outcome[2] if len(outcome) > 2 and outcome[2] else _message_id(message or b""), None
        if kind == "fatal":
            raise ChannelError(text, retryable=False, fatal=True)
        if kind == "lost":
            raise ChannelError(text, retryable=True)
        if kind == "unknown":
            raise ChannelError(text, retryable=False, unknown=True)
        reply_code, status = _bounce(outcome[3])
        raise ChannelError(text, retryable=bool(outcome[2]), reply_code=reply_code, status=status)

    def _session(self) -> Session | Worker:
        """This thread's connection (in a worker process, or in this one)."""
        session = getattr(self._local, "session", None)
        if session is None:
            session = Worker(self.session) if self.settings.processes else Session(self.session)
            self._local.session = session
            with self._lock:
                self._all.append(session)
        return session

    def close(self) -> None:
        with self._lock:
            sessions, self._all, self._pool = self._all, [], []
            journal, self.journal = self.journal, None
            spawned, self._spawned = self._spawned, []
        for process in spawned:         # never given settings: an empty stdin ends them
            with contextlib.suppress(OSError):
                process.stdin.close()   # type: ignore[union-attr]
            process.wait()
            with contextlib.suppress(OSError):
                process.stdout.close()  # type: ignore[union-attr]
        for session in sessions:        # every worker told first: they end side by side
            if isinstance(session, Worker):
                session.finish()
        for session in sessions:
            session.close()
        if journal is not None:
            journal.close()


class Worker:
    """A Session in a worker process (`python -m pipeline.channels.smtp_worker`), spoken to over
    its stdin and stdout in length-prefixed frames (`smtp_session.serve`). The password travels
    in the first frame, never in argv or the env.

    `send` is one message, waited for. A publisher with several workers queues messages
    (`fill`, then `flush`) and reads their outcomes, in order, with `collect` when `fileno()`
    is readable. Raw file descriptors, not buffered streams: a buffer could hold a reply that
    select() would then never report. Queued messages are small (the worker fills them in),
    so the pipe never fills up with them."""

    def __init__(self, settings: SessionSettings, *, journal: str | None = None,
                 process: subprocess.Popen[bytes] | None = None) -> None:
        """`process`: the worker process, when it was started earlier (`Smtp.start`)."""
        self.where = settings.where
        self.process = process or _spawn()
        assert self.process.stdin is not None and self.process.stdout is not None
        self._in, self._out = self.process.stdin.fileno(), self.process.stdout.fileno()
        self._replies = bytearray()
        self._gone = False
        self._parts: MessageParts | None = None    # the edition parts this worker has
        first = dataclasses.asdict(settings)
        if journal:
            first["journal"] = journal
        settings_frame = json.dumps(first).encode()
        self._outgoing: list[bytes] = []           # frames queued, not written yet
        self._write(len(settings_frame).to_bytes(4, "big") + settings_frame)

    def fileno(self) -> int:
        return self._out

    def send(self, sender: str, recipient: str, message: bytes) -> Outcome:
        """One message, sent and answered."""
        if not self.submit(sender, recipient, message):
            return self._ended()
        while not (outcomes := self.collect()):
            pass
        return outcomes[0]

    def submit(self, sender: str, recipient: str, message: bytes, *, key: str | None = None,
               message_id: str | None = None) -> bool:
        """Send one message to the worker (with what was queued before it); False if the worker
        is gone. `key` and `message_id` go to its journal."""
        self._queue(marshal.dumps((sender, recipient, key, message_id, None, None)), message)
        return self.flush()

    def fill(self, sender: str, recipient: str, parts: MessageParts, values: dict[str, str],
             list_unsubscribe: str | None, *, key: str) -> None:
        """Queue a message the worker fills in from `parts` (queued first if they are not the
        ones it has); `flush` sends what is queued."""
        if parts is not self._parts:
            self._queue(marshal.dumps(("T",)), parts.wire())
            self._parts = parts
        self._queue(marshal.dumps((sender, recipient, key, None, values, list_unsubscribe)), b"")

    def _queue(self, header: bytes, payload: bytes) -> None:
        self._outgoing += [len(header).to_bytes(4, "big"), header, len(payload).to_bytes(4, "big"), payload]

    def flush(self) -> bool:
        """Write what is queued, in one system call when the pipe has room; False if the worker
        is gone."""
        data, self._outgoing = b"".join(self._outgoing), []
        return self._write(data)

    def collect(self) -> list[Outcome]:
        """Read what the worker wrote (blocks until it writes something): the outcomes whose
        whole frame is in, in the order of the messages; the worker's end, once it is gone."""
        if not self._gone:
            try:
                data = os.read(self._out, 65536)
            except OSError:
                data = b""
            self._replies += data
            self._gone = not data
        outcomes: list[Outcome] = []
        start = 0
        while len(self._replies) - start >= 4:
            end = start + 4 + int.from_bytes(self._replies[start:start + 4], "big")
            if len(self._replies) < end:
                break
            frame = bytes(self._replies[start + 4:end])
            if frame[:1] == b"+":            # ("ok", reply, Message-ID)
                message_id, _, reply = frame[1:].decode().partition("\n")
                outcomes.append(("ok", reply, message_id))
            else:
                outcomes.append(tuple(json.loads(frame)))
            start = end
        del self._replies[:start]
        if self._gone and not outcomes:
            outcomes.append(self._ended())
        return outcomes

    def _write(self, data: bytes) -> bool:
        """Write every byte of `data`; False if the worker is gone."""
        view = memoryview(data)
        try:
            while view and not self._gone:
                view = view[os.write(self._in, view):]
        except OSError:
            self._gone = True
        return not self._gone

    def _ended(self) -> Outcome:
        return ("fatal", f"{self.where}: the SMTP worker process ended unexpectedly")

    def abandon(self) -> None:
        """End the worker now, whatever it was sending or has queued (a publish interrupted)."""
        with contextlib.suppress(OSError):
            self.process.kill()

    def finish(self) -> None:
        """No more messages: the worker sends what it has, then ends."""
        with contextlib.suppress(OSError):
            self.process.stdin.close()    # type: ignore[union-attr]

    def close(self) -> None:
        self.finish()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        with contextlib.suppress(OSError):
            self.process.stdout.close()   # type: ignore[union-attr]


def _spawn() -> subprocess.Popen[bytes]:
    """A worker process, waiting for its settings frame."""
    return subprocess.Popen([sys.executable, "-m", "pipeline.channels.smtp_worker"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)


def _journal_root(config: Config) -> Path | None:
    """Where send journals go: beside a SQLite state file (`state/pipeline.sends/`); None for a
    database elsewhere (then each connection has one message at a time)."""
    state = config.state
    if state.startswith("sqlite:///"):
        path = Path(state.removeprefix("sqlite:///"))
    elif "://" in state:
        return None
    else:
        path = config.path(state)
    if not path.name or path.name == ":memory:":
        return None
    return path.with_name(path.stem + ".sends")


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
    # Imported here: it loads the events store (SQLAlchemy), which a publish's channel would
    # otherwise load before its worker processes are started.
    from pipeline.bounces.classify import enhanced_code

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
