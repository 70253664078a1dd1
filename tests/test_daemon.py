"""`pipeline run` for real: the daemon in a subprocess with short intervals, stopped with SIGTERM
or killed with SIGKILL, restarted on the same state database; and `pipeline run --once`.

No assertion is about speed: every wait polls with a deadline of about 20 s."""

from __future__ import annotations

import functools
import json
import mailbox
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.header import decode_header, make_header
from email.utils import getaddresses
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.pool import NullPool

from pipeline.config import load_config
from pipeline.store.engine import state_url

pytestmark = pytest.mark.state_backends     # each test on SQLite and on PostgreSQL

NY = ZoneInfo("America/New_York")          # the shipped config's `timezone`
DEADLINE = 20.0                            # seconds any single wait may take
LEAD = 8                                   # seconds from writing an `at:` entry to its time
READERS = ("ada@example.com", "bob@example.com")
NETWORKS = ("x", "mastodon", "bluesky")
POSTS = {                                  # slug -> subject, oldest first (the queue's order)
    "2020-09-01-ketamine-neurological-damage": "Ketamine’s Potential Ability to Heal Neurological Damage",
    "2024-03-12-your-first-infusion": "Your First Infusion: What to Expect, Step by Step",
    "mood-journal": "Un journal d’humeur: track your mood in five minutes a day 🌿",
}
NEWEST = "mood-journal"
PER_POST = len(READERS) + len(NETWORKS) + 1          # emails, social posts, the article copy
SLOTS = "{name: slots, channels: [outbox], every: 2s, edition: queue, max_lateness: 1m}"
MINUTELY = '{name: minutely, channels: [outbox], cron: "* * * * *", max_lateness: 5m}'


# -- helpers ------------------------------------------------------------------------------------

def wait_until(check: Callable[[], Any], what: str, timeout: float = DEADLINE) -> Any:
    """Poll `check` until it returns something truthy (returned); fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


def sleep_until(moment: datetime) -> None:
    while (left := (moment - datetime.now(UTC)).total_seconds()) > 0:
        time.sleep(min(left, 0.5))


def import_readers(project: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    """`pipeline subscribers import` the two readers, so each send also emails them."""
    csv_file = project / "readers.csv"
    csv_file.write_text("email,name\n" + "".join(f"{r},{r[:3].title()}\n" for r in READERS),
                        encoding="utf-8")
    imported = run_cli("--config", project / "config.yaml", "subscribers", "import", csv_file)
    assert imported.returncode == 0, imported.stderr


def timetable(project: Path, *entries: str) -> str:
    """Replace the timetable with `entries` (flow-style YAML mappings: the last `schedule:` key of
    the file wins); the config path."""
    cfg = project / "config.yaml"
    lines = "".join(f"  - {e}\n" for e in entries)
    cfg.write_text(cfg.read_text(encoding="utf-8") + "\nschedule:\n" + lines, encoding="utf-8")
    return str(cfg)


def configure(project: Path, run_cli, *entries: str) -> str:  # type: ignore[no-untyped-def]
    import_readers(project, run_cli)
    return timetable(project, *entries)


def once_at(at: datetime, max_lateness: str, edition: str = "latest") -> str:
    """An entry `once` that fires at `at` (ISO 8601 with its offset); `latest` sends the newest post."""
    return (f'{{name: once, channels: [outbox], at: "{at.isoformat()}", edition: {edition}, '
            f"max_lateness: {max_lateness}}}")


def in_seconds(seconds: float) -> datetime:
    """A whole-second moment about `seconds` from now, in the config's time zone."""
    return (datetime.now(NY) + timedelta(seconds=seconds)).replace(microsecond=0)


def mails(project: Path) -> Counter[tuple[str, str]]:
    """(subject, recipient) -> how many messages the outbox's Maildir holds."""
    folder = project / "out" / "outbox" / "mail"
    if not folder.exists():
        return Counter()
    box = mailbox.Maildir(folder, create=False)
    return Counter((str(make_header(decode_header(m["Subject"]))).replace("\n", ""),
                    getaddresses([m["To"]])[0][1]) for m in box)


def social(project: Path) -> list[dict[str, Any]]:
    """The outbox's social.jsonl, one dict per line."""
    path = project / "out" / "outbox" / "social.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def assert_sent_once(project: Path, slugs: list[str]) -> None:
    """Each post in `slugs` is in the outbox exactly once per reader and network; nothing else is."""
    assert mails(project) == {(POSTS[s], r): 1 for s in slugs for r in READERS}
    lines = social(project)
    assert Counter(line["key"] for line in lines) == {f"outbox:{s}:{n}": 1 for s in slugs for n in NETWORKS}


@functools.cache
def state_client(url: str) -> Engine:
    """An engine of the state database's URL that is not the pipeline's (no pool kept open)."""
    return create_engine(url, poolclass=NullPool)


def query(project: Path, sql: str, **params: object) -> list[tuple[Any, ...]]:
    """Rows from the state database (read the way any other client would, without the pipeline)."""
    engine = state_client(state_url(load_config(project / "config.yaml")))
    if engine.dialect.name == "sqlite" and not (project / "state" / "pipeline.sqlite3").exists():
        return []      # connecting would create the file before the daemon does
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(sql), params)]
    except (OperationalError, ProgrammingError) as exc:   # the daemon has not created the table yet
        if "no such table" in str(exc) or "does not exist" in str(exc):
            return []
        raise


def lock_holder(project: Path) -> tuple[int, str] | None:
    rows = query(project, "SELECT pid, host FROM scheduler_lock WHERE name = 'scheduler'")
    return rows[0] if rows else None


def stored_jobs(project: Path) -> set[str]:
    """The ids of the jobs in APScheduler's job store (one per timetable entry still to fire)."""
    return {row[0] for row in query(project, "SELECT id FROM apscheduler_jobs")}


def timetable_runs(project: Path, entry: str) -> list[str]:
    return [row[0] for row in query(project, "SELECT status FROM schedule_runs WHERE entry = :e", e=entry)]


@dataclass
class Daemon:
    """One `pipeline run` process; its stdout and stderr (the log) go to files."""

    proc: subprocess.Popen[bytes]
    out: Path
    err: Path
    files: list[Any] = field(default_factory=list)

    @property
    def log(self) -> str:
        return self.err.read_text(encoding="utf-8")

    def count(self, pattern: str) -> int:
        return len(re.findall(pattern, self.log, re.M))

    def wait_for(self, pattern: str, times: int = 1, timeout: float = DEADLINE) -> None:
        """Wait until the log matches `pattern` `times` times; fail early if the daemon died."""
        def seen() -> bool:
            if self.proc.poll() is not None and self.count(pattern) < times:
                pytest.fail(f"the daemon exited ({self.proc.returncode}) before logging {pattern!r} "
                            f"{times}x; log:\n{self.log}")
            return self.count(pattern) >= times
        wait_until(seen, f"{pattern!r} {times}x in the log", timeout)

    def wait_for_lock(self, project: Path) -> None:
        """Wait until this daemon holds the scheduler lock (so it is past its start-up checks)."""
        mine = (self.proc.pid, socket.gethostname())
        wait_until(lambda: self.proc.poll() is not None or lock_holder(project) == mine,
                   "the daemon to take the scheduler lock")
        assert self.proc.poll() is None, f"the daemon exited ({self.proc.returncode}):\n{self.log}"

    def terminate(self) -> int:
        """SIGTERM; the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=DEADLINE)

    def kill(self) -> None:
        """SIGKILL, and reap it (a zombie's pid would still look alive to the lock)."""
        self.proc.kill()
        self.proc.wait(timeout=DEADLINE)


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """start(cfg, env) runs `pipeline --config CFG run` (`env`: variables to add); whatever is still
    running at the end is killed."""
    started: list[Daemon] = []

    def run(cfg: str, env: dict[str, str] | None = None) -> Daemon:
        n = len(started) + 1
        out, err = tmp_path / f"daemon{n}.out", tmp_path / f"daemon{n}.log"
        files = [out.open("wb"), err.open("wb")]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", **(env or {})}
        env.pop("PIPELINE_CONFIG", None)
        proc = subprocess.Popen([sys.executable, "-m", "pipeline", "--config", cfg, "run"],
                                stdout=files[0], stderr=files[1], env=env)
        started.append(Daemon(proc=proc, out=out, err=err, files=files))
        return started[-1]

    yield run
    for daemon in started:
        if daemon.proc.poll() is None:
            daemon.kill()
        for f in daemon.files:
            f.close()


SENT = r"^.* INFO pipeline\.timetable\.schedule: {name} -> outbox: {n} sent, 0 failed, 0 already sent$"
IDLE = r"^.* INFO pipeline\.timetable\.schedule: {name}: nothing to send$"
FIRED = r"^.* INFO pipeline\.timetable\.schedule: {name}(?: -> outbox: \d+ sent|: nothing to send)"


def assert_clean(text: str) -> None:
    assert "Traceback" not in text, text


# -- the daemon ---------------------------------------------------------------------------------

def test_queue_slots_send_each_post_once_then_idle(project, run_cli, start):
    cfg = configure(project, run_cli, SLOTS)
    daemon = start(cfg)
    daemon.wait_for(SENT.format(name="slots", n=PER_POST), times=3)
    assert_sent_once(project, list(POSTS))
    assert list(dict.fromkeys(line["post"] for line in social(project))) == list(POSTS)   # oldest first
    # The queue is empty: the next two slots fire and send nothing.
    before = (mails(project), social(project))
    idle = daemon.count(IDLE.format(name="slots"))
    daemon.wait_for(IDLE.format(name="slots"), times=idle + 2)
    assert (mails(project), social(project)) == before

    assert daemon.terminate() == 0
    log = daemon.log
    assert_clean(log)
    assert daemon.count(SENT.format(name="slots", n=PER_POST)) == 3
    assert daemon.count(IDLE.format(name="slots")) >= 2
    assert "signal 15: finishing the send in progress, then stopping" in log
    assert "Running the timetable (1 entries)" in daemon.out.read_text(encoding="utf-8")
    assert lock_holder(project) is None                 # released on the way out
    assert_sent_once(project, list(POSTS))
    status = json.loads(run_cli("--config", cfg, "status", "--json").stdout)
    assert {r["edition"]: r["counts"] for r in status} == {s: {"sent": PER_POST} for s in POSTS}


SQLITE_ONLY = pytest.mark.parametrize("state_backend", ["sqlite"], indirect=True)


@SQLITE_ONLY           # on PostgreSQL the second one stands by: tests/test_failover.py
def test_second_daemon_on_the_same_state_is_refused(project, run_cli, start):
    cfg = configure(project, run_cli, SLOTS)
    first = start(cfg)
    first.wait_for_lock(project)

    second = run_cli("--config", cfg, "run", timeout=60)
    assert second.returncode == 1
    assert_clean(second.stdout + second.stderr)
    [line] = second.stderr.splitlines()
    assert line.startswith("error: another scheduler is running on this state database")
    assert f"pid {first.proc.pid} on {socket.gethostname()}" in line

    # The first one is unaffected: it still holds the lock, keeps firing and stops cleanly.
    assert lock_holder(project) == (first.proc.pid, socket.gethostname())
    first.wait_for(SENT.format(name="slots", n=PER_POST), times=1)
    assert first.terminate() == 0
    assert_clean(first.log)
    assert lock_holder(project) is None


@SQLITE_ONLY
def test_refused_daemon_does_not_claim_to_be_running(project, run_cli, start):
    cfg = configure(project, run_cli, SLOTS)
    first = start(cfg)
    first.wait_for_lock(project)
    second = run_cli("--config", cfg, "run", timeout=60)
    assert second.returncode == 1
    assert second.stdout == ""


def test_lock_of_a_killed_daemon_does_not_block_a_new_one(project, run_cli, start):
    cfg = configure(project, run_cli, SLOTS)
    first = start(cfg)
    first.wait_for_lock(project)
    first.kill()
    assert lock_holder(project) == (first.proc.pid, socket.gethostname())   # left behind

    second = start(cfg)
    second.wait_for_lock(project)
    second.wait_for(FIRED.format(name="slots"))
    assert second.terminate() == 0
    assert_clean(second.log)
    assert lock_holder(project) is None


def _kill_before(project: Path, start, cfg: str, at: datetime) -> None:  # type: ignore[no-untyped-def]
    """Start the daemon, let it store the `once` job, and SIGKILL it before `at`."""
    daemon = start(cfg)
    daemon.wait_for_lock(project)
    wait_until(lambda: "once" in stored_jobs(project) or datetime.now(UTC) >= at,
               "the daemon to store the job")
    if datetime.now(UTC) >= at:
        pytest.fail(f"the daemon took more than {LEAD} s to start; the test needs a later `at`")
    daemon.kill()
    assert not mails(project) and not social(project)
    assert timetable_runs(project, "once") == []


def test_restart_within_max_lateness_runs_the_missed_entry_once(project, run_cli, start):
    import_readers(project, run_cli)
    at = in_seconds(LEAD)
    cfg = timetable(project, once_at(at, "1m"))
    _kill_before(project, start, cfg, at)
    sleep_until(at + timedelta(seconds=1.5))

    daemon = start(cfg)
    daemon.wait_for(SENT.format(name="once", n=PER_POST))
    wait_until(lambda: "once" not in stored_jobs(project), "the fired job to leave the job store")
    assert daemon.terminate() == 0
    assert_clean(daemon.log)
    assert daemon.count(r"pipeline\.timetable\.schedule: once") == 1
    assert "missed" not in daemon.log

    assert_sent_once(project, [NEWEST])
    assert timetable_runs(project, "once") == ["ran"]
    status = json.loads(run_cli("--config", cfg, "status", "--json").stdout)
    assert [(r["edition"], r["channel"], r["counts"]) for r in status] == [
        (NEWEST, "outbox", {"sent": PER_POST})]
    sent = query(project, "SELECT key FROM deliveries WHERE status = 'sent'")
    assert len(sent) == PER_POST


def test_restart_after_max_lateness_sends_nothing_and_status_warns(project, run_cli, start):
    import_readers(project, run_cli)
    at = in_seconds(LEAD)
    cfg = timetable(project, once_at(at, "1s"))
    _kill_before(project, start, cfg, at)
    sleep_until(at + timedelta(seconds=4))

    daemon = start(cfg)
    daemon.wait_for(r"once: the run due .* was missed by more than max_lateness; skipped")
    wait_until(lambda: "once" not in stored_jobs(project), "the missed job to leave the job store")
    assert daemon.terminate() == 0
    assert_clean(daemon.log)
    assert "once -> outbox" not in daemon.log

    assert not mails(project) and not social(project)
    assert timetable_runs(project, "once") == ["missed"]
    status = run_cli("--config", cfg, "status")
    assert status.returncode == 0, status.stderr
    due = at.astimezone(UTC)
    assert status.stderr.splitlines() == [
        f"warning: timetable entry once: the run due {due:%Y-%m-%d %H:%M} UTC was missed "
        "(missed by more than max_lateness (the scheduler was not running))"]
    assert "The ledger is empty" in status.stdout
    as_json = run_cli("--config", cfg, "status", "--json")
    assert json.loads(as_json.stdout) == [] and as_json.stderr == status.stderr


def test_run_once_does_not_fire_again_what_the_daemon_ran(project, run_cli, start):
    import_readers(project, run_cli)
    at = in_seconds(LEAD)
    cfg = timetable(project, once_at(at, "1m", edition="queue"))
    daemon = start(cfg)
    daemon.wait_for(SENT.format(name="once", n=PER_POST))
    assert daemon.terminate() == 0
    oldest = next(iter(POSTS))
    assert_sent_once(project, [oldest])

    again = run_cli("--config", cfg, "run", "--once")            # within max_lateness of `at`
    assert again.returncode == 0, again.stderr
    assert_sent_once(project, [oldest])     # fails: the `at` slot fires again and sends the next post
    assert again.stdout == "Nothing is due.\n"


# -- run --once ---------------------------------------------------------------------------------

def test_run_once_sends_what_is_due_once(project, run_cli):
    cfg = configure(project, run_cli, MINUTELY)
    now = datetime.now(UTC)
    if now.second >= 40:          # both runs must fall in the same minute
        sleep_until(now.replace(second=0, microsecond=0) + timedelta(minutes=1, seconds=0.5))

    first = run_cli("--config", cfg, "run", "--once")
    assert first.returncode == 0, first.stderr
    assert_clean(first.stderr)
    assert first.stdout.splitlines()[0] == "minutely:"
    assert f"outbox: {PER_POST} sent, 0 failed" in first.stdout
    assert_sent_once(project, [NEWEST])

    second = run_cli("--config", cfg, "run", "--once")
    assert (second.returncode, second.stdout, second.stderr) == (0, "Nothing is due.\n", "")
    assert_sent_once(project, [NEWEST])
    assert timetable_runs(project, "minutely") == ["ran"]


def test_run_with_an_empty_timetable_is_a_one_line_error(project, run_cli):
    cfg = project / "config.yaml"
    cfg.write_text(cfg.read_text(encoding="utf-8") + "\nschedule: []\n", encoding="utf-8")
    result = run_cli("--config", cfg, "run", timeout=60)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"error: {cfg}: the timetable is empty; add entries under `schedule:`"]
