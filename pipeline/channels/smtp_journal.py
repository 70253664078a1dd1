"""The send journal of a publish through SMTP worker processes: what tells the rows a crash left
`sending` apart.

A publisher keeps each worker a few messages ahead, so more rows are `sending` than messages are
on the wire. Each run keeps a journal folder: the publisher writes a `C` line for each key before
the commit that claims it, and each worker an `S` line before a message goes on the wire, then
`D` (with the Message-ID) once the server said 250 or `F` once it surely does not have the
message. After a crash, `Ledger.recover` marks `D` rows sent, resends rows still on the wire
(counted as resent: they may have arrived), and puts back, uncounted, rows that never left
(`C` only, or `S` closed by `F`). A row no journal names is resent and counted, as it is
without a journal: the journal can only spare a resend the server's 250 proved needless.

The lines are plain appends, not synced: a killed process's writes are in the page cache, as the
ledger's own commits are (WAL, synchronous=NORMAL). Losing lines (a power cut) only means more
resends. A run holds a lock on its folder while it lives, so that another run's recovery never
reads a journal still being written; the folder is removed when the run ends cleanly, or by the
recovery that used it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from pipeline.channels.smtp_session import journal_line
from pipeline.store.ledger import Evidence

log = logging.getLogger(__name__)


def channel_folder(root: Path, channel: str) -> Path:
    """The folder of a channel's journals: its name made safe for a path, and a hash of it so
    that two names never share one."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", channel)[:60]
    return root / f"{safe}-{hashlib.sha256(channel.encode()).hexdigest()[:8]}"


class Journal:
    """This run's journal: a locked folder, the publisher's claims, a file per worker."""

    def __init__(self, root: Path, channel: str) -> None:
        folder = channel_folder(root, channel)
        self.folder = folder / f"run-{os.getpid()}-{time.time_ns()}"
        self.folder.mkdir(parents=True)
        self._lock = os.open(self.folder / "lock", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        self._claims = os.open(self.folder / "claims", os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                               0o600)
        self.clean = False       # set when a run ended with every claim recorded

    def worker_path(self, number: int) -> str:
        return str(self.folder / f"worker-{number}")

    def claim(self, keys: list[str]) -> None:
        """A `C` line for keys about to be claimed (before the commit: a key claimed and not
        written would count as resent after a crash)."""
        if keys:
            os.write(self._claims, journal_line("C", keys))

    def close(self) -> None:
        """Release the folder: removed if the run ended cleanly (with its parents, if nothing
        else is in them), else kept for recovery."""
        os.close(self._claims)
        if self.clean:
            shutil.rmtree(self.folder, ignore_errors=True)
            for parent in (self.folder.parent, self.folder.parent.parent):
                with contextlib.suppress(OSError):
                    parent.rmdir()
        os.close(self._lock)


def evidence(root: Path, channel: str) -> tuple[Evidence, list[Path]]:
    """What the journals of the channel's ended runs say, and their folders (for `discard`,
    once the recovery that used them is committed). Runs still alive are left alone."""
    delivered: dict[str, str | None] = {}
    open_sends: set[str] = set()
    closed: set[str] = set()
    claimed: set[str] = set()
    runs = []
    folder = channel_folder(root, channel)
    for run in sorted(folder.glob("run-*")) if folder.is_dir() else []:
        if _alive(run):
            continue
        runs.append(run)
        for path in run.iterdir():
            last: dict[str, str] = {}
            for kind, key, *rest in _lines(path):
                if kind == "C":
                    claimed.update(key)
                    continue
                if kind == "D":
                    delivered[key] = rest[0] if rest else None
                last[key] = kind
            # What a worker began and did not finish was on the wire; a key it finished
            # (`F`) may have been begun again elsewhere, which counts.
            open_sends.update(k for k, kind in last.items() if kind == "S")
            closed.update(k for k, kind in last.items() if kind == "F")
    return Evidence(delivered=delivered, on_wire=frozenset(open_sends - delivered.keys()),
                    never_sent=frozenset((claimed | closed) - open_sends - delivered.keys())), runs


def discard(runs: Iterable[Path]) -> None:
    """Remove journals whose evidence the ledger has taken in."""
    for run in runs:
        shutil.rmtree(run, ignore_errors=True)
        if run.exists():
            log.warning("could not remove the send journal %s; remove it by hand", run)
    for parent in {run.parent for run in runs}:
        for folder in (parent, parent.parent):
            with contextlib.suppress(OSError):
                folder.rmdir()     # only if empty


def _alive(run: Path) -> bool:
    """Whether the run that wrote `run` still holds its lock."""
    try:
        fd = os.open(run / "lock", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _lines(path: Path) -> Iterator[list[str]]:
    """The journal lines of `path`; a line cut short by the crash is skipped."""
    if path.name == "lock":
        return
    with path.open("rb") as f:
        for raw in f:
            with contextlib.suppress(ValueError):
                line = json.loads(raw)
                if isinstance(line, list) and len(line) >= 2 and _well_formed(line):
                    yield line


def _well_formed(line: list[object]) -> bool:
    """`["C", [key, ...]]`, `["S" | "F", key]` or `["D", key, message id or null]`."""
    kind, key, *rest = line
    if kind == "C":
        return isinstance(key, list) and all(isinstance(k, str) for k in key) and not rest
    return kind in ("S", "F", "D") and isinstance(key, str) and all(isinstance(x, str | None) for x in rest)
