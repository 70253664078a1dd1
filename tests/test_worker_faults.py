"""Faults of `execution: workers`, with real parts only: the session's PostgreSQL server (restarted
in two tests), `pipeline worker` processes, and an SMTP sink in a process of its own
(`python -m tests.smtp_sink`) that logs every message's recipient, Message-ID and client port.

A worker that dies, or a database that goes away, may cost duplicates, but no more than the
messages in flight: a message the sink took whose result the ledger never recorded. One worker
process (`--concurrency 1`) sends one job at a time through the channel's CONNECTIONS
connections, each kept DEPTH messages ahead; with a PostgreSQL state there is no send journal
(that is a SQLite state's, beside its file: pipeline/channels/smtp.py), so DEPTH is 1 and a
worker has at most CONNECTIONS x DEPTH messages answered or on the wire and not recorded.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import text

from pipeline.config import load_config
from pipeline.store import subscribers as store
from pipeline.store.engine import engine_for
from pipeline.store.ledger import Ledger
from tests.channels.test_smtp import smtp_config
from tests.conftest import ROOT, SEED_SLUG
from tests.smtp_sink import free_port

pytestmark = pytest.mark.parametrize("state_backend", ["postgresql"], indirect=True)

N = 5000
CONNECTIONS = 2
DEPTH = 1                 # messages each connection is kept ahead without a send journal
IN_FLIGHT = CONNECTIONS * DEPTH
WORKERS = 3
BATCH = 500               # ledger keys per job: 10 jobs, so every worker has work when the fault comes
STALLED_AFTER = 3         # seconds without a heartbeat before a dead worker's job goes to another
HUNG = 150                # seconds after which a test is failed as hung (never a measure)
ADDRESSES = {f"r{i:04d}@example.com" for i in range(N)}


@dataclass(frozen=True, kw_only=True)
class Taken:
    """One message the sink took."""

    recipient: str
    message_id: str
    port: int             # the client's: which connection (and so which worker) sent it


class SinkProcess:
    """`python -m tests.smtp_sink PORT LOG` and what it has logged so far."""

    def __init__(self, log: Path) -> None:
        self.port, self.log = free_port(), log
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.smtp_sink", str(self.port), str(log)],
                                     cwd=ROOT)
        deadline = time.monotonic() + 30
        while not _listening(self.port):
            assert self.proc.poll() is None and time.monotonic() < deadline, "the SMTP sink did not start"
            time.sleep(0.05)

    def taken(self) -> list[Taken]:
        if not self.log.exists():
            return []
        lines = self.log.read_text(encoding="utf-8").splitlines()
        # A line being written as we read has no third field yet: it is read next time.
        return [Taken(recipient=f[0], message_id=f[1], port=int(f[2]))
                for f in (line.split("\t") for line in lines) if len(f) == 3 and f[2]]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[SinkProcess]:
    started = SinkProcess(tmp_path / "sink.log")
    yield started
    started.stop()


@pytest.fixture
def workers_project(project: Path, tmp_path: Path, sink: SinkProcess, run_cli) -> str:  # type: ignore[no-untyped-def]
    """The project with an SMTP channel to the sink, `execution: workers`, N subscribers, and the
    edition published (its delivery jobs deferred): the config file's path."""
    smtp_config(project, sink.port, connections=CONNECTIONS)
    path = project / "config.yaml"
    with path.open("a", encoding="utf-8") as f:
        f.write(f"\nexecution: workers\nworkers:\n  batch: {BATCH}\n  stalled_after: {STALLED_AFTER}\n")
    csv_file = tmp_path / "list.csv"
    csv_file.write_text("email,name\n" + "".join(f"{a},Reader {a[1:5]}\n" for a in sorted(ADDRESSES)),
                        encoding="utf-8")
    assert store.import_csv(engine_for(load_config(path)), csv_file).added == N
    published = run_cli("--config", path, "publish", SEED_SLUG, "--channel", "newsletter")
    assert published.returncode == 0, published.stderr
    return str(path)


class Workers:
    """`pipeline worker --until-idle` processes, each the leader of its own process group (so
    that a kill takes its channel's SMTP processes with it, as when its machine dies)."""

    def __init__(self, cfg: str, count: int, logs: Path) -> None:
        self.logs = logs
        self.procs = [subprocess.Popen([sys.executable, "-m", "pipeline", "--config", cfg, "worker",
                                        "--until-idle"], cwd=ROOT, start_new_session=True,
                                       stdout=(logs / f"worker-{i}.out").open("wb"),
                                       stderr=(logs / f"worker-{i}.err").open("wb"))
                      for i in range(count)]

    def stderr(self, i: int) -> str:
        return (self.logs / f"worker-{i}.err").read_text(encoding="utf-8", errors="replace")[-3000:]

    def wait(self, *, skip: int | None = None) -> None:
        """Wait for every worker (but `skip`) to exit; each must exit 0."""
        deadline = time.monotonic() + HUNG
        for i, proc in enumerate(self.procs):
            if i == skip:
                continue
            try:
                proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pytest.fail(f"worker {i} still running after {HUNG} s (hung); its stderr, with where "
                            f"it waits:\n{self._stacks(i)}")
            assert proc.returncode == 0, f"worker {i} exited {proc.returncode}:\n{self.stderr(i)}"

    def _stacks(self, i: int) -> str:
        """Worker `i`'s stderr after it was asked (SIGUSR1) where its tasks and threads are."""
        err = self.logs / f"worker-{i}.err"
        before = err.stat().st_size
        self.procs[i].send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and b"stacks (SIGUSR1)" not in err.read_bytes()[before:]:
            time.sleep(0.1)
        return err.read_text(encoding="utf-8", errors="replace")[-20000:]

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _group_ports(pgid: int, peer: int) -> set[int]:
    """The local ports of the TCP connections to port `peer` that processes of group `pgid` hold
    (from /proc: each process's socket inodes, matched in the namespace's /proc/net/tcp)."""
    inodes: set[str] = set()
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            for fd in os.listdir(f"/proc/{name}/fd"):
                link = os.readlink(f"/proc/{name}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.add(link[len("socket:["):-1])
        except (OSError, ValueError, IndexError):
            continue          # the process (or the descriptor) went away meanwhile
    ports = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[9] in inodes and int(fields[2].rsplit(":", 1)[1], 16) == peer:
            ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _check_delivery(taken: list[Taken], cfg: str, *, duplicates_at_most: int) -> list[str]:
    """Every address delivered, duplicates within the bound, a duplicate with the same Message-ID
    both times, and the ledger saying sent for all; the duplicated addresses."""
    received = Counter(t.recipient for t in taken)
    assert set(received) == ADDRESSES, f"never delivered: {sorted(ADDRESSES - set(received))[:10]} ..."
    duplicated = sorted(a for a, count in received.items() if count > 1)
    duplicates = sum(count - 1 for count in received.values())
    assert duplicates <= duplicates_at_most, f"{duplicates} duplicates (at most {duplicates_at_most})"
    ids: dict[str, set[str]] = {}
    for t in taken:
        ids.setdefault(t.recipient, set()).add(t.message_id)
    assert {a: i for a, i in ids.items() if len(i) != 1} == {}, "a resent message has a new Message-ID"
    assert len({t.message_id for t in taken}) == N
    ledger = Ledger(engine_for(load_config(Path(cfg))))
    try:
        assert ledger.edition_counts(channel="newsletter", edition=SEED_SLUG) == {"sent": N}
    finally:
        ledger.close()
    return duplicated


def test_sigkill_of_one_worker_mid_batch(workers_project, sink, tmp_path):
    workers = Workers(workers_project, WORKERS, tmp_path)
    victim = workers.procs[0]
    try:
        # The victim's connections to the sink, gathered until the kill: the sink logs each
        # message's client port, and so which messages were the victim's.
        ports: set[int] = set()
        deadline = time.monotonic() + HUNG
        while True:
            ports |= _group_ports(victim.pid, sink.port)
            taken = sink.taken()
            if sum(t.port in ports for t in taken) >= 20:
                break
            assert victim.poll() is None, f"the victim exited before it sent 20:\n{workers.stderr(0)}"
            assert len(taken) < N // 2, "the others sent half the list before the victim sent 20 messages"
            assert time.monotonic() < deadline, "the victim sent nothing (hung)"
            time.sleep(0.05)
        ports |= _group_ports(victim.pid, sink.port)
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait()
        assert len(sink.taken()) < N, "every message was sent before the kill"
        # The survivors take the dead worker's job once its heartbeat is STALLED_AFTER old, then
        # run out of work and exit.
        workers.wait(skip=0)
    finally:
        workers.kill_all()

    taken = sink.taken()
    duplicated = _check_delivery(taken, workers_project, duplicates_at_most=IN_FLIGHT)
    first_port = {}
    for t in taken:
        first_port.setdefault(t.recipient, t.port)
    # Only the dead worker's messages in flight can have gone twice.
    assert [a for a in duplicated if first_port[a] not in ports] == []


def _until_a_quarter_is_sent(workers: Workers, sink: SinkProcess, *, before: str) -> None:
    """Wait until the sink has a quarter of the messages, every worker still running."""
    deadline = time.monotonic() + HUNG
    while len(sink.taken()) < N // 4:
        assert all(p.poll() is None for p in workers.procs), f"a worker exited before {before}"
        assert time.monotonic() < deadline, "the workers sent nothing (hung)"
        time.sleep(0.05)


def test_postgresql_restart_in_the_middle_of_a_send(workers_project, sink, tmp_path, postgres_server):
    if not postgres_server.restartable:
        pytest.skip("PIPELINE_TEST_DATABASE_URL names a server this test may not restart")
    # An outage shorter than `stalled_after` (the default is 30 s): no living worker is taken for
    # dead (a longer one: the next test).
    config = Path(workers_project)
    text = config.read_text(encoding="utf-8")
    assert f"stalled_after: {STALLED_AFTER}\n" in text
    config.write_text(text.replace(f"stalled_after: {STALLED_AFTER}\n", "stalled_after: 30\n"),
                      encoding="utf-8")
    workers = Workers(workers_project, WORKERS, tmp_path)
    try:
        _until_a_quarter_is_sent(workers, sink, before="the restart")
        # Down long enough that every worker finds it gone (a reconnect, not a lucky retry).
        postgres_server.restart(down_for=2)
        assert len(sink.taken()) < N, "every message was sent before the restart"
        workers.wait()
    finally:
        workers.kill_all()

    # Each worker may lose the record of its own messages in flight when its session is cut.
    _check_delivery(sink.taken(), workers_project, duplicates_at_most=WORKERS * IN_FLIGHT)


def test_postgresql_down_longer_than_stalled_after(workers_project, sink, tmp_path, postgres_server):
    if not postgres_server.restartable:
        pytest.skip("PIPELINE_TEST_DATABASE_URL names a server this test may not restart")
    # When the database is back every heartbeat is older than `stalled_after`, the workers' own
    # too: none may be taken for dead (its job run twice at once), none may be left without a
    # registration, and the send must still complete.
    workers = Workers(workers_project, WORKERS, tmp_path)
    try:
        _until_a_quarter_is_sent(workers, sink, before="the outage")
        postgres_server.restart(down_for=3 * STALLED_AFTER)
        assert len(sink.taken()) < N, "every message was sent before the outage"
        workers.wait()
    finally:
        workers.kill_all()

    # As in a short outage: each worker may lose the record of its own messages in flight.
    _check_delivery(sink.taken(), workers_project, duplicates_at_most=WORKERS * IN_FLIGHT)


def test_a_worker_taken_for_dead_stops_its_job_and_registers_again(workers_project, sink, tmp_path):
    # Another worker's sweep removes a worker's registration when its heartbeat is late longer
    # than `stalled_after` (a long pause, the database cut off from it alone): its job goes back in
    # the queue, to another worker, while it still runs it.
    workers = Workers(workers_project, WORKERS, tmp_path)
    try:
        _until_a_quarter_is_sent(workers, sink, before="the removal")
        with engine_for(load_config(Path(workers_project))).begin() as conn:
            removed = conn.execute(text(
                # The job started last (jobs are taken in id order): the most of it left to send.
                "DELETE FROM procrastinate_workers WHERE id = (SELECT worker_id FROM procrastinate_jobs "
                "WHERE status = 'doing' AND worker_id IS NOT NULL ORDER BY id DESC LIMIT 1) RETURNING id"
            )).all()
        assert removed, "no job was running"
        assert len(sink.taken()) < N, "every message was sent before the removal"
        workers.wait()
    finally:
        workers.kill_all()

    # The job's two runs overlap until the first stops: the messages it had in flight when the
    # second began may go twice.
    _check_delivery(sink.taken(), workers_project, duplicates_at_most=IN_FLIGHT)
