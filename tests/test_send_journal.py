"""A publish through SMTP worker processes keeps each worker several messages ahead, so more
rows are `sending` than messages are on the wire; its send journal tells them apart after a
crash. These kill a real `pipeline publish` (SIGKILL: the publisher alone, or with its workers;
SIGINT) at several points of a 2,000-recipient send into a real SMTP server, then run it again:
every subscriber gets the edition, and no more than one message per connection is sent twice,
however many rows the kill left `sending`."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from pipeline.store import subscribers as store
from pipeline.store.engine import engine_for
from tests.channels.test_smtp import smtp_config
from tests.conftest import SEED_SLUG
from tests.smtp_sink import Sink

N = 2000
CONNECTIONS = 4


def _setup(project: Path, tmp_path: Path, port: int) -> str:
    config = smtp_config(project, port, connections=CONNECTIONS)
    csv_file = tmp_path / "list.csv"
    csv_file.write_text("email,name\n" + "".join(f"r{i:04d}@example.com,Reader {i}\n" for i in range(N)),
                        encoding="utf-8")
    assert store.import_csv(engine_for(config), csv_file).added == N
    return str(project / "config.yaml")


def _start(cfg: str, *, own_group: bool = False) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "pipeline", "--config", cfg, "publish", SEED_SLUG,
                             "--channel", "newsletter"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=own_group)


def _wait_for(sink: Sink, count: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while len(sink.received) < count and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.005)
    assert proc.poll() is None, "publish finished before it could be stopped"


def _sending(project: Path) -> int:
    with sqlite3.connect(project / "state" / "pipeline.sqlite3") as db:
        return db.execute("SELECT count(*) FROM deliveries WHERE status = 'sending'").fetchone()[0]


def _journal_runs(project: Path) -> list[Path]:
    return sorted((project / "state").glob("pipeline.sends/*/run-*"))


def _resume_and_check(project: Path, cfg: str, sink: Sink, run_cli) -> int:  # type: ignore[no-untyped-def]
    """Publish again; check that every subscriber got the edition once, but for at most one
    message per connection counted as resent; the number of duplicates."""
    resumed = run_cli("--config", cfg, "publish", SEED_SLUG, "--channel", "newsletter")
    assert resumed.returncode == 0, resumed.stderr
    received = sink.recipients()
    assert set(received) == {f"r{i:04d}@example.com" for i in range(N)}
    duplicates = sum(n - 1 for n in received.values())
    ids = Counter(r.message["Message-ID"] for r in sink.received)
    assert len(ids) == N                  # a resent message carries the same Message-ID
    status = json.loads(run_cli("--config", cfg, "status", "--json").stdout)
    [row] = [r for r in status if r["channel"] == "newsletter"]
    assert row["counts"] == {"sent": N}
    assert duplicates <= row["resends"] <= CONNECTIONS
    assert _journal_runs(project) == []   # the recovery used the journal, then removed it
    return duplicates


@pytest.mark.parametrize("fraction", [0.02, 0.5, 0.9])
def test_sigkill_of_the_publisher_resends_at_most_one_message_per_connection(project, tmp_path, run_cli,
                                                                              fraction):
    sink = Sink().start()
    try:
        cfg = _setup(project, tmp_path, sink.port)
        proc = _start(cfg)
        _wait_for(sink, max(1, int(N * fraction)), proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        # More rows were claimed than connections: without the journal, all of them would
        # count as resent.
        assert _sending(project) > CONNECTIONS
        assert len(_journal_runs(project)) == 1
        _resume_and_check(project, cfg, sink, run_cli)
    finally:
        sink.stop()


def test_sigkill_of_the_publisher_and_its_workers_at_once(project, tmp_path, run_cli):
    sink = Sink().start()
    try:
        cfg = _setup(project, tmp_path, sink.port)
        proc = _start(cfg, own_group=True)
        _wait_for(sink, N // 3, proc)
        os.killpg(proc.pid, signal.SIGKILL)      # the whole process group, mid-message
        proc.wait()
        assert _sending(project) > CONNECTIONS
        _resume_and_check(project, cfg, sink, run_cli)
    finally:
        sink.stop()


def test_ctrl_c_stops_the_publish_and_the_next_run_finishes_it(project, tmp_path, run_cli):
    sink = Sink().start()
    try:
        cfg = _setup(project, tmp_path, sink.port)
        proc = _start(cfg)
        _wait_for(sink, N // 3, proc)
        os.kill(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=60) == 130          # "aborted"
        assert len(sink.received) < N
        # The first Ctrl-C stops after the messages in flight: each has its result, and what
        # was claimed but not handed over is pending again; nothing is left to recover.
        assert _sending(project) == 0 and _journal_runs(project) == []
        assert _resume_and_check(project, cfg, sink, run_cli) == 0
    finally:
        sink.stop()


def test_a_second_run_after_a_clean_one_sends_nothing_and_leaves_no_journal(project, tmp_path, run_cli):
    sink = Sink().start()
    try:
        cfg = _setup(project, tmp_path, sink.port)
        first = run_cli("--config", cfg, "publish", SEED_SLUG, "--channel", "newsletter")
        assert first.returncode == 0, first.stderr
        assert _journal_runs(project) == [] and not (project / "state" / "pipeline.sends").exists()
        again = run_cli("--config", cfg, "publish", SEED_SLUG, "--channel", "newsletter")
        assert again.returncode == 0, again.stderr
        assert len(sink.received) == N and len(sink.recipients()) == N
    finally:
        sink.stop()


ORPHAN = """
import sys, time
from pipeline.channels.smtp import Worker
from pipeline.channels.smtp_session import SessionSettings
settings = SessionSettings(host="127.0.0.1", port=int(sys.argv[1]), security="none", username=None,
                           password=None, timeout=2, tls_verify=True, ca_file=None, local_hostname=None,
                           pipelining=True, channel="newsletter")
worker = Worker(settings)
for i in range(5):
    worker.submit("news@example.com", f"r{i}@example.com", b"Subject: hi\\r\\n\\r\\nhello\\r\\n",
                  key=f"k{i}")
print(worker.process.pid, flush=True)
time.sleep(600)
"""


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")       # ended, waiting to be reaped by whoever adopted it


def test_a_worker_whose_publisher_is_killed_sends_nothing_more(tmp_path):
    """Five messages queued on a worker; the first stalls at RCPT; the publisher is killed.
    The worker gives up on the stalled message and sends none of the four queued after it."""
    sink = Sink().start()
    try:
        sink.behaviour.stall_rcpt["r0@example.com"] = 1
        publisher = subprocess.Popen([sys.executable, "-c", ORPHAN, str(sink.port)], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, cwd=Path(__file__).resolve().parent.parent)
        assert publisher.stdout is not None and publisher.stderr is not None
        worker_pid = int(publisher.stdout.readline())
        deadline = time.monotonic() + 60
        while not sink.stalls["r0@example.com"] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sink.stalls["r0@example.com"] == 1
        publisher.kill()
        publisher.wait()
        while not _gone(worker_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(worker_pid)
        assert sink.received == [] and sum(sink.attempts.values()) == 0
        assert publisher.stderr.read() == b""      # the worker ends quietly (it shares this stderr)
    finally:
        sink.stop()
