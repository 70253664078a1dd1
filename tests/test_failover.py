"""Several `pipeline run` processes on one PostgreSQL state database: one active, the others hot
standbys that take over when it dies or its lock connection is cut, and every fire exactly once.

Real processes (`python -m pipeline run`), a real PostgreSQL server (tests/pg_server.py), the
outbox channel. No assertion is about speed: every wait polls with a deadline of about 20 s."""

from __future__ import annotations

import re
import socket
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from pipeline.config import load_config
from pipeline.store.engine import state_url
from tests import test_daemon
from tests.test_daemon import (
    DEADLINE,
    IDLE,
    NEWEST,
    PER_POST,
    POSTS,
    SENT,
    SLOTS,
    Daemon,
    assert_clean,
    assert_sent_once,
    import_readers,
    in_seconds,
    mails,
    once_at,
    query,
    sleep_until,
    state_client,
    stored_jobs,
    timetable,
    timetable_runs,
    wait_until,
)

start = test_daemon.start      # the fixture: `pipeline run` processes, killed at the end

pytestmark = [pytest.mark.state_backends,
              pytest.mark.parametrize("state_backend", ["postgresql"], indirect=True)]

FAST = {"PIPELINE_STANDBY_POLL": "0.5"}       # the standby's tries and the holder's checks
HOST = socket.gethostname()
LEAD = 15                                      # seconds from writing an `at:` entry to its time


@pytest.fixture(autouse=True)
def _postgresql(request: pytest.FixtureRequest) -> None:
    """Skip (never in CI, where `make test` installs it) when no PostgreSQL server can be started."""
    try:
        request.getfixturevalue("postgres_server")
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"no PostgreSQL server could be started: {str(exc).splitlines()[0]}")


def active_and_standby(project: Path, start, cfg: str, standby_env: dict[str, str] | None = None,  # type: ignore[no-untyped-def]
                       ) -> tuple[Daemon, Daemon]:
    """Start two daemons; the first becomes active, the second says it stands by for it."""
    first = start(cfg, FAST)
    first.wait_for_lock(project)
    second = start(cfg, standby_env or FAST)
    second.wait_for(rf"standby: {re.escape(HOST)}:{first.proc.pid} is active$")
    return first, second


def lock_backends(project: Path) -> list[int]:
    """The server process ids of the sessions holding the scheduler's advisory lock."""
    return [row[0] for row in query(
        project, "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2 "
                 "AND classid = 1885958245 AND objid = 1935894628 "
                 "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")]


def status_line(project: Path, run_cli) -> str:  # type: ignore[no-untyped-def]
    result = run_cli("--config", project / "config.yaml", "status")
    assert result.returncode == 0, result.stderr
    return next((line for line in result.stdout.splitlines() if line.startswith("Timetable: ")), "")


def test_two_daemons_only_the_active_one_fires(project, run_cli, start):
    import_readers(project, run_cli)
    cfg = timetable(project, SLOTS)
    first, second = active_and_standby(project, start, cfg)

    assert status_line(project, run_cli) == (
        f"Timetable: active on {HOST} (pid {first.proc.pid}); standby on {HOST} (pid {second.proc.pid})")
    first.wait_for(SENT.format(name="slots", n=PER_POST), times=3)
    assert_sent_once(project, list(POSTS))
    assert "slots" not in second.log and "active:" not in second.log

    # The standby first (else it takes over), then the active one: both stop on SIGTERM.
    assert second.terminate() == 0 and first.terminate() == 0
    assert_clean(first.log + second.log)
    assert "Running the timetable" not in second.out.read_text(encoding="utf-8")
    assert status_line(project, run_cli) == ""          # both gone: no lock, no standby rows
    assert_sent_once(project, list(POSTS))


def test_sigkill_of_the_active_one_before_an_at_entry_the_standby_fires_it_once(project, run_cli, start):
    import_readers(project, run_cli)
    at = in_seconds(LEAD)
    cfg = timetable(project, once_at(at, "1m"))
    # The standby tries the lock every 4 s: killed a second before `at`, the entry falls due
    # while no scheduler is active, and the new one runs it late (within max_lateness).
    first, second = active_and_standby(project, start, cfg, {"PIPELINE_STANDBY_POLL": "4"})
    wait_until(lambda: "once" in stored_jobs(project), "the active daemon to store the job")
    if datetime.now(UTC) >= at - timedelta(seconds=1):
        pytest.fail(f"the daemons took more than {LEAD} s to start; the test needs a later `at`")
    sleep_until(at - timedelta(seconds=1))
    first.kill()
    assert not mails(project) and timetable_runs(project, "once") == []

    second.wait_for(rf"active: {re.escape(HOST)}:{second.proc.pid} holds the scheduler lock "
                    rf"\(taking over from {re.escape(HOST)}:{first.proc.pid}\)$")
    second.wait_for(SENT.format(name="once", n=PER_POST))
    wait_until(lambda: "once" not in stored_jobs(project), "the fired job to leave the job store")
    assert status_line(project, run_cli) == f"Timetable: active on {HOST} (pid {second.proc.pid})"
    assert second.terminate() == 0
    assert_clean(second.log)
    assert second.count(r"pipeline\.timetable\.schedule: once") == 1
    assert "missed" not in second.log

    assert_sent_once(project, [NEWEST])
    assert timetable_runs(project, "once") == ["ran"]
    keys = query(project, "SELECT key, count(*) FROM deliveries WHERE status = 'sent' GROUP BY key")
    assert len(keys) == PER_POST and {n for _, n in keys} == {1}


def test_a_cut_lock_connection_stops_the_holder_and_the_standby_takes_over(project, run_cli, start):
    import_readers(project, run_cli)
    at = in_seconds(LEAD)
    cfg = timetable(project, once_at(at, "1m"))
    first, second = active_and_standby(project, start, cfg)
    [holder] = wait_until(lambda: lock_backends(project), "the active daemon's lock session")
    if datetime.now(UTC) >= at:
        pytest.fail(f"the daemons took more than {LEAD} s to start; the test needs a later `at`")

    assert query(project, "SELECT pg_terminate_backend(:pid)", pid=holder) == [(True,)]
    assert first.proc.wait(timeout=DEADLINE) == 1
    assert_clean(first.log)
    assert first.err.read_text(encoding="utf-8").splitlines()[-1] == (
        "error: this scheduler lost its lock on the state database "
        f"{_where(project)} (the connection holding it was closed); it "
        "stopped firing so that another takes over: start it again to stand by")

    second.wait_for(rf"active: {re.escape(HOST)}:{second.proc.pid} holds the scheduler lock")
    assert lock_backends(project) not in ([], [holder])
    second.wait_for(SENT.format(name="once", n=PER_POST))
    assert "once" not in first.log                     # the cut holder never fired
    assert second.terminate() == 0
    assert_clean(second.log)
    assert_sent_once(project, [NEWEST])
    assert timetable_runs(project, "once") == ["ran"]


def test_a_run_taken_but_not_recorded_by_a_dying_scheduler_is_run_by_the_next(project, run_cli, start):
    """The active scheduler dies between APScheduler taking a fire (and moving the stored job on
    to its next fire time) and `fire` recording it: the next one runs that fire itself."""
    import_readers(project, run_cli)
    cfg = timetable(project, "{name: slot, channels: [outbox], every: 20s, edition: latest, "
                             "max_lateness: 1m}")
    first = start(cfg, FAST)
    first.wait_for(SENT.format(name="slot", n=PER_POST), timeout=DEADLINE + 20)
    first.kill()
    [(due,)] = query(project, "SELECT fire_time FROM schedule_runs WHERE entry = 'slot'")
    # As if it had died before recording the run: the job store has moved on to the next slot.
    with state_client(_url(project)).begin() as conn:
        assert conn.execute(text("DELETE FROM schedule_runs WHERE entry = 'slot'")).rowcount == 1

    second = start(cfg, FAST)
    second.wait_for(r"slot: the run due .* was taken by the previous scheduler but not recorded; "
                    r"running it now$")
    second.wait_for(IDLE.format(name="slot"))          # the post went already: the ledger says so
    assert query(project, "SELECT status FROM schedule_runs WHERE entry = 'slot' AND fire_time = :t",
                 t=due) == [("ran",)]
    assert second.terminate() == 0
    assert_clean(second.log)
    assert second.count(r"the run due .* was taken by the previous scheduler") == 1
    assert_sent_once(project, [NEWEST])


def _url(project: Path) -> str:
    return state_url(load_config(project / "config.yaml"))


def _where(project: Path) -> str:
    """The state database as the pipeline's messages name it (its URL without the password)."""
    return make_url(_url(project)).render_as_string(hide_password=True)
