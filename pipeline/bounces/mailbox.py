"""The bounce mailbox: its unread messages, one at a time, and marking each one done.

Two kinds, with the standard library: an IMAP folder (imaplib: TLS, STARTTLS or plain, with
timeouts) and a local Maildir (mailbox.Maildir). A message is read up to `MAX_BYTES` (a report
says what it has to say at the start; the rest is the returned message). Done means read
(IMAP \\Seen; Maildir: moved from new/ to cur/ with the S flag) or, with `bounces.delete`,
deleted. Every problem becomes a one-line MailboxError naming the server or folder; the
password is never part of one.
"""

from __future__ import annotations

import contextlib
import imaplib
import mailbox
import os
import re
import socket
import ssl
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from pipeline.config import Config, ImapSettings
from pipeline.errors import PipelineError

MAX_BYTES = 1_000_000


class MailboxError(PipelineError):
    """The bounce mailbox cannot be read: not configured, unreachable, login refused, no such
    folder or Maildir."""


@dataclass(frozen=True, kw_only=True)
class Incoming:
    """One unread message: `ref` (IMAP UID or Maildir key), its first MAX_BYTES, and whether
    there was more."""

    ref: str
    raw: bytes
    truncated: bool


class Mailbox(ABC):
    """An open bounce mailbox (a context manager: leaving it closes it)."""

    where: str                               # for messages: "imap://host:port/folder", a path

    @abstractmethod
    def unread(self) -> list[str]:
        """The refs of the unread messages, oldest first."""

    @abstractmethod
    def read(self, ref: str) -> Incoming | None:
        """A message by ref (None if it is gone: another reader took it)."""

    @abstractmethod
    def done(self, ref: str) -> None:
        """Mark a message read (or delete it, with `bounces.delete`)."""

    @abstractmethod
    def close(self) -> None:
        """Finish (expunge what was deleted) and disconnect."""

    def __enter__(self) -> Mailbox:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def open_mailbox(config: Config) -> Mailbox:
    """The configured bounce mailbox, open. Raises MailboxError when none is configured or it
    cannot be opened."""
    bounces = config.bounces
    if bounces.imap is not None:
        ca_file = config.path(bounces.imap.ca_file) if bounces.imap.ca_file else None
        return ImapMailbox(bounces.imap, delete=bounces.delete, ca_file=ca_file,
                           where=config.where("bounces", "imap"))
    if bounces.maildir is not None:
        return MaildirMailbox(config.path(bounces.maildir), delete=bounces.delete,
                              where=config.where("bounces", "maildir"))
    raise MailboxError(f"{config.source}: no bounce mailbox configured; add `bounces: {{imap: {{host: ..., "
                       'username: ..., password: "${BOUNCE_PASSWORD}"}}` or `bounces: {maildir: PATH}`')


# -- IMAP ---------------------------------------------------------------------------------------

_SIZE = re.compile(rb"RFC822\.SIZE (\d+)")


class ImapMailbox(Mailbox):
    """A folder on an IMAP server, opened (connected, logged in, selected) on creation."""

    def __init__(self, settings: ImapSettings, *, delete: bool, ca_file: Path | None = None,
                 where: str = "bounces.imap") -> None:
        self.settings = settings
        self.delete = delete
        self.where = f"imap://{settings.host}:{settings.port}/{settings.folder}"
        self._key = where
        self._deleted = False
        self._conn = self._connect(ca_file)
        self._login()
        self._select()

    def _fail(self, what: str, exc: BaseException | str) -> MailboxError:
        reason = exc if isinstance(exc, str) else _reason(exc)
        password = self.settings.password.get_secret_value()
        if password:
            reason = reason.replace(password, "***")     # a server that echoes it is not trusted
        return MailboxError(f"{self._key}: {self.settings.host}:{self.settings.port}: {what}: {reason}")

    def _connect(self, ca_file: Path | None) -> imaplib.IMAP4:
        s = self.settings
        try:
            context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        except (OSError, ssl.SSLError) as exc:
            raise self._fail(f"cannot use bounces.imap.ca_file {ca_file}", exc) from None
        if not s.tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        try:
            if s.security == "tls":
                return imaplib.IMAP4_SSL(s.host, s.port, ssl_context=context, timeout=s.timeout)
            conn = imaplib.IMAP4(s.host, s.port, timeout=s.timeout)
            if s.security == "starttls":
                try:
                    conn.starttls(ssl_context=context)
                except BaseException:
                    with contextlib.suppress(OSError):
                        conn.shutdown()
                    raise
            return conn
        except (OSError, imaplib.IMAP4.error) as exc:
            # A handshake that fails for another reason than the certificate: often the wrong port.
            protocol = isinstance(exc, ssl.SSLError | imaplib.IMAP4.error) \
                and not isinstance(exc, ssl.SSLCertVerificationError)
            hint = {"tls": " (is the port an IMAPS port? 993 is the usual one)",
                    "starttls": " (does the server offer STARTTLS on this port? 143 is the usual one)",
                    "none": ""}[s.security] if protocol else ""
            raise self._fail(f"cannot connect ({s.security}){hint}", exc) from None

    def _login(self) -> None:
        s = self.settings
        try:
            self._conn.login(s.username, s.password.get_secret_value())
        except imaplib.IMAP4.abort as exc:
            self._drop()
            raise self._fail("connection lost while logging in", exc) from None
        except imaplib.IMAP4.error as exc:
            self._drop()
            raise self._fail(f"login as {s.username!r} refused (check bounces.imap.username and "
                             "the password's environment variable)", exc) from None
        except OSError as exc:
            self._drop()
            raise self._fail("connection lost while logging in", exc) from None

    def _select(self) -> None:
        typ, data = self._command("select", _quote(self.settings.folder))
        if typ != "OK":
            self._drop()
            raise self._fail(f"cannot open folder {self.settings.folder!r} (bounces.imap.folder)",
                             _text(data))

    def _command(self, name: str, *args: str) -> tuple[str, list]:  # type: ignore[type-arg]
        try:
            return getattr(self._conn, name)(*args)  # type: ignore[no-any-return]
        except (OSError, imaplib.IMAP4.abort) as exc:
            raise self._fail("connection lost", exc) from None
        except imaplib.IMAP4.error as exc:
            return "NO", [str(exc).encode()]

    def unread(self) -> list[str]:
        typ, data = self._command("uid", "SEARCH", "UNSEEN")
        if typ != "OK":
            raise self._fail("cannot search for unread messages", _text(data))
        return [uid.decode() for uid in b" ".join(d for d in data if isinstance(d, bytes)).split()]

    def read(self, ref: str) -> Incoming | None:
        typ, data = self._command("uid", "FETCH", ref, f"(RFC822.SIZE BODY.PEEK[]<0.{MAX_BYTES}>)")
        if typ != "OK":
            raise self._fail(f"cannot fetch message {ref}", _text(data))
        raw = None
        size = None
        for item in data:
            head = item[0] if isinstance(item, tuple) else item
            if isinstance(head, bytes) and (match := _SIZE.search(head)):
                size = int(match[1])
            if isinstance(item, tuple) and raw is None:
                raw = item[1]
        if raw is None:
            return None
        return Incoming(ref=ref, raw=raw, truncated=size is not None and size > len(raw))

    def done(self, ref: str) -> None:
        flags = r"(\Seen \Deleted)" if self.delete else r"(\Seen)"
        typ, data = self._command("uid", "STORE", ref, "+FLAGS.SILENT", flags)
        if typ != "OK":
            raise self._fail(f"cannot mark message {ref} read", _text(data))
        self._deleted |= self.delete

    def close(self) -> None:
        try:
            if self._deleted:
                self._conn.expunge()
            self._conn.close()
            self._conn.logout()
        except (OSError, imaplib.IMAP4.error):
            self._drop()

    def _drop(self) -> None:
        """Close the connection without a word to the server (it may be gone already)."""
        with contextlib.suppress(OSError):
            self._conn.shutdown()


def _quote(folder: str) -> str:
    """A folder name as an IMAP quoted string (imaplib sends arguments as they are)."""
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _text(data: list) -> str:  # type: ignore[type-arg]
    return " ".join(d.decode("utf-8", "replace") if isinstance(d, bytes) else str(d) for d in data)[:300]


def _reason(exc: BaseException) -> str:
    """An exception as a short phrase (`[Errno 111] Connection refused` -> connection refused)."""
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted ({exc.verify_message}); set bounces.imap.ca_file " \
               "to its CA, or tls_verify: false for a test server"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[0].lower() + exc.strerror[1:]
    text = str(exc)
    if text[:2] in ("b'", 'b"'):             # imaplib puts the server's reply bytes' repr
        text = text[2:-1]
    return " ".join(text.split())[:300] or type(exc).__name__


# -- Maildir ------------------------------------------------------------------------------------

class _NoBody(mailbox.MaildirMessage):
    """What `Maildir.get_message` gives with this factory: the message's subdir and flags, with
    nothing read from the file (its bytes are read, capped, with `get_file`)."""

    def __init__(self, _file: object) -> None:
        super().__init__()


class MaildirMailbox(Mailbox):
    """A Maildir folder (cur/, new/, tmp/) on this machine."""

    def __init__(self, path: Path, *, delete: bool, where: str = "bounces.maildir") -> None:
        self.path = path
        self.delete = delete
        self.where = str(path)
        if not all((path / sub).is_dir() for sub in ("cur", "new", "tmp")):
            raise MailboxError(f"{where}: {path} is not a Maildir (it needs the folders cur/, new/ and "
                               "tmp/); give the path of the mailbox your mail server delivers bounces to")
        self._box = mailbox.Maildir(path, factory=_NoBody, create=False)

    def unread(self) -> list[str]:
        unread = []
        for key, msg in self._messages():
            if msg.get_subdir() == "new" or "S" not in msg.get_flags():
                unread.append((msg.get_date(), key))
        return [key for _, key in sorted(unread)]

    def _messages(self) -> Iterator[tuple[str, mailbox.MaildirMessage]]:
        try:
            keys = list(self._box.iterkeys())
        except OSError as exc:
            raise MailboxError(f"{self.path}: cannot list the Maildir: {_reason(exc)}") from None
        for key in keys:
            try:
                yield key, self._box.get_message(key)
            except (KeyError, FileNotFoundError):
                continue                      # taken by another reader meanwhile

    def read(self, ref: str) -> Incoming | None:
        try:
            with self._box.get_file(ref) as file:
                raw = file.read(MAX_BYTES + 1)
        except (KeyError, FileNotFoundError):
            return None
        except OSError as exc:
            raise MailboxError(f"{self.path}: cannot read message {ref}: {_reason(exc)}") from None
        return Incoming(ref=ref, raw=raw[:MAX_BYTES], truncated=len(raw) > MAX_BYTES)

    def done(self, ref: str) -> None:
        try:
            if self.delete:
                self._box.discard(ref)
                return
            msg = self._box.get_message(ref)
        except (KeyError, FileNotFoundError):
            return                            # already taken by another reader
        # Python before 3.13 can set a Maildir flag only by rewriting the whole message; the
        # Maildir convention is a rename (new/KEY -> cur/KEY:2,S), atomic, done here.
        colon = self._box.colon
        info = msg.get_info()
        old = self.path / msg.get_subdir() / (f"{ref}{colon}{info}" if info else ref)
        flags = "".join(sorted({*msg.get_flags(), "S"}))
        try:
            os.rename(old, self.path / "cur" / f"{ref}{colon}2,{flags}")
        except FileNotFoundError:
            return
        except OSError as exc:
            raise MailboxError(f"{self.path}: cannot mark message {ref} read: {_reason(exc)}") from None

    def close(self) -> None:
        self._box.close()
