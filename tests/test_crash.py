"""Crash and resume: `pipeline publish` killed with SIGKILL half-way through a 2,000-recipient
send, then run again. Every subscriber gets the edition; none twice, except at most the messages
in flight at the kill (at most the number of connections); `status` says how many were resent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

from pipeline.store import subscribers as store
from pipeline.store.engine import engine_for
from tests.channels.test_smtp import smtp_config
from tests.conftest import SEED_SLUG
from tests.smtp_sink import Sink

N = 2000
CONNECTIONS = 4


def test_sigkill_mid_send_then_resume(project, tmp_path, run_cli):
    sink = Sink().start()
    try:
        config = smtp_config(project, sink.port, connections=CONNECTIONS)
        csv_file = tmp_path / "list.csv"
        csv_file.write_text("email,name\n" + "".join(f"r{i:04d}@example.com,Reader {i}\n" for i in range(N)),
                            encoding="utf-8")
        assert store.import_csv(engine_for(config), csv_file).added == N
        cfg = str(project / "config.yaml")
        proc = subprocess.Popen([sys.executable, "-m", "pipeline", "--config", cfg, "publish", SEED_SLUG,
                                 "--channel", "newsletter"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while len(sink.received) < N // 3 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
        assert proc.poll() is None, "publish finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        at_kill = len(sink.received)
        assert 0 < at_kill < N

        resumed = run_cli("--config", cfg, "publish", SEED_SLUG, "--channel", "newsletter")
        assert resumed.returncode == 0, resumed.stderr
        received = sink.recipients()
    finally:
        sink.stop()

    assert set(received) == {f"r{i:04d}@example.com" for i in range(N)}
    duplicates = sum(n - 1 for n in received.values())
    assert duplicates <= CONNECTIONS
    ids = Counter(r.message["Message-ID"] for r in sink.received)
    assert len(ids) == N          # a resent message carries the same Message-ID

    status = json.loads(run_cli("--config", cfg, "status", "--json").stdout)
    [row] = [r for r in status if r["channel"] == "newsletter"]
    assert row["counts"] == {"sent": N}
    assert duplicates <= row["resends"] <= CONNECTIONS
    said = f"{row['resends']} resent after an interruption" in resumed.stdout
    assert said == (row["resends"] > 0)
