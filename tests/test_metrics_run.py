"""`pipeline run --metrics-port` for real: the daemon in a subprocess, its metrics scraped over
HTTP on a free loopback port, then stopped with SIGTERM; and the one-line refusals."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.smtp_sink import free_port

DEADLINE = 30.0       # seconds the daemon may take to start serving (imports, the database)
# Fires on New Year's morning only: the daemon never sends during the test.
ENTRY = '{name: new-year, channels: [outbox], cron: "0 9 1 1 *", max_lateness: 1m}'


def with_entry(project: Path) -> Path:
    """The project's config with the timetable replaced by ENTRY (the last `schedule:` wins)."""
    path = project / "config.yaml"
    path.write_text(path.read_text(encoding="utf-8") + f"\nschedule:\n  - {ENTRY}\n", encoding="utf-8")
    return path


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape_when_up(url: str, daemon: subprocess.Popen[str]) -> Samples:
    """Poll `url` until it answers; the samples. Fails if the daemon exits first."""
    deadline = time.monotonic() + DEADLINE
    while True:
        assert daemon.poll() is None, f"the daemon exited: {daemon.communicate()[1]}"
        try:
            response = httpx.get(url, timeout=2)
            break
        except httpx.TransportError:
            if time.monotonic() > deadline:
                pytest.fail(f"{url} did not answer within {DEADLINE:.0f} s")
            time.sleep(0.1)
    assert response.status_code == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def started_line(daemon: subprocess.Popen[str]) -> str:
    """The daemon's "Running the timetable" line, printed once its scheduler runs (after it took
    the lock, which the leader metric already shows: a SIGTERM in between stops it unannounced).
    Read on a thread, so that a daemon that never says it fails the test instead of hanging it."""
    found: list[str] = []

    def read() -> None:
        assert daemon.stdout is not None
        for line in daemon.stdout:
            if line.startswith("Running the timetable"):
                found.append(line)
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(DEADLINE)
    assert found, f"the daemon did not say it runs within {DEADLINE:.0f} s"
    return found[0]


def test_the_daemon_serves_its_metrics_and_names_itself_leader(project):
    config = with_entry(project)
    port = free_port()
    daemon = subprocess.Popen([sys.executable, "-m", "pipeline", "--config", str(config), "run",
                               "--metrics-port", str(port)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "200"})
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        samples = scrape_when_up(url, daemon)
        # The lock is taken just after the server starts: poll until this process holds it.
        deadline = time.monotonic() + DEADLINE
        while samples.get(("pipeline_scheduler_leader", ())) != 1 and time.monotonic() < deadline:
            time.sleep(0.2)
            samples = scrape_when_up(url, daemon)
        assert samples[("pipeline_scheduler_leader", ())] == 1
        assert samples[("pipeline_scheduler_leader_info", (("host", socket.gethostname()),
                                                          ("pid", str(daemon.pid))))] == 1
        assert samples[("pipeline_state_up", ())] == 1
        assert samples[("pipeline_timetable_max_lateness_seconds", (("entry", "new-year"),))] == 60
        assert ("pipeline_timetable_last_due_timestamp_seconds", (("entry", "new-year"),)) in samples
        assert samples[("process_start_time_seconds", ())] > 0
        started = started_line(daemon)
    finally:
        daemon.send_signal(signal.SIGTERM)
        _, err = daemon.communicate(timeout=DEADLINE)
    assert daemon.returncode == 0, err
    assert f"Metrics: http://127.0.0.1:{port}/metrics" in started
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_a_port_in_use_is_one_line_naming_the_option(project, run_cli):
    config = with_entry(project)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("--config", config, "run", "--metrics-port", port, timeout=DEADLINE)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: cannot serve metrics on 127.0.0.1:{port} (Address already in use); choose another "
        "--metrics-port, or --metrics-host"]


def test_metrics_port_is_for_the_daemon_not_once(project, run_cli):
    result = run_cli("--config", with_entry(project), "run", "--once", "--metrics-port", free_port())
    assert result.returncode == 1
    assert result.stderr.strip() == ("error: --metrics-port works with the daemon; `run --once` exits "
                                     "before a scrape")
