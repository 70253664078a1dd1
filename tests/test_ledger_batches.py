"""The ledger's grouped writes (`Ledger.batch`) and recovery with a send journal's evidence, on a
real SQLite file; and the journal itself, read back from the files a run leaves."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from pipeline.channels.smtp_journal import Journal, channel_folder, discard, evidence
from pipeline.channels.smtp_session import journal_line
from pipeline.models import Receipt, Status
from pipeline.store.ledger import Evidence, Ledger

pytestmark = pytest.mark.state_backends     # each test on SQLite and on PostgreSQL


def _plan(ledger: Ledger, *keys: str) -> None:
    for key in keys:
        assert ledger.plan(key=key, channel="news", edition="ed", kind="email")


def _statuses(engine) -> dict[str, tuple[str, int, int]]:  # type: ignore[no-untyped-def]
    """key -> (status, attempts, resends), read on a connection of its own."""
    with engine.connect() as conn:      # not the ledger's: the pool gives another connection
        return {k: (s, a, r) for k, s, a, r in conn.execute(text(
            "SELECT key, status, attempts, resends FROM deliveries ORDER BY key"))}


# -- Ledger.batch --------------------------------------------------------------------------------

def test_a_batch_is_one_transaction_invisible_until_it_ends(ledger, engine):
    _plan(ledger, "a", "b", "c")
    assert ledger.begin("a")
    with ledger.batch() as batch:
        batch.succeed([Receipt(key="a", remote_id="<a@x>")])
        assert [batch.begin(k) for k in ("b", "c")] == [True, True]
        # Another connection (another process, a crash) sees none of it yet.
        assert _statuses(engine) == {"a": ("sending", 1, 0), "b": ("pending", 0, 0), "c": ("pending", 0, 0)}
    assert _statuses(engine) == {"a": ("sent", 1, 0), "b": ("sending", 1, 0), "c": ("sending", 1, 0)}
    assert ledger.get("a").remote_id == "<a@x>"


def test_a_batch_that_raises_writes_nothing(ledger, engine):
    _plan(ledger, "a", "b")
    assert ledger.begin("a")
    with pytest.raises(KeyboardInterrupt), ledger.batch() as batch:
        batch.succeed([Receipt(key="a", remote_id="<a@x>")])
        batch.begin("b")
        raise KeyboardInterrupt
    assert _statuses(engine) == {"a": ("sending", 1, 0), "b": ("pending", 0, 0)}
    assert ledger.begin("b")                  # the connection is usable after the rollback


def test_a_batch_claims_only_pending_rows(ledger):
    _plan(ledger, "a", "b")
    assert ledger.begin("a")
    with ledger.batch() as batch:
        assert [batch.begin(k) for k in ("a", "b", "missing")] == [False, True, False]


def test_a_batch_records_nothing_for_no_receipts(ledger, engine):
    _plan(ledger, "a")
    with ledger.batch() as batch:
        batch.succeed([])
    assert _statuses(engine) == {"a": ("pending", 0, 0)}


# -- recovery with evidence ----------------------------------------------------------------------

def _crashed(ledger: Ledger, *keys: str) -> None:
    """Rows left `sending`, as a crash leaves them."""
    _plan(ledger, *keys)
    for key in keys:
        assert ledger.begin(key)


def test_recovery_with_evidence_marks_delivered_rows_sent_and_resends_only_those_on_the_wire(ledger, engine):
    _crashed(ledger, "delivered", "on-wire", "never", "unnamed")
    _plan(ledger, "still-pending")
    found = Evidence(delivered={"delivered": "<d@x>", "still-pending": "<p@x>"},
                     on_wire=frozenset({"on-wire"}), never_sent=frozenset({"never", "still-pending"}))
    assert ledger.recover("news", rule="resend", evidence=found) == 2
    assert _statuses(engine) == {"delivered": ("sent", 1, 0), "never": ("pending", 1, 0),
                                 "on-wire": ("pending", 1, 1), "still-pending": ("pending", 0, 0),
                                 "unnamed": ("pending", 1, 1)}
    assert ledger.get("delivered").remote_id == "<d@x>"
    assert ledger.get("delivered").sent_at is not None


def test_recovery_with_evidence_leaves_other_channels_and_dry_runs_alone(ledger, engine):
    ledger.plan(key="other", channel="else", edition="ed", kind="email")
    ledger.plan(key="dry", channel="news", edition="ed", kind="email", dry_run=True)
    assert ledger.begin("other") and ledger.begin("dry")
    found = Evidence(delivered={"other": None, "dry": None}, on_wire=frozenset(), never_sent=frozenset())
    assert ledger.recover("news", rule="resend", evidence=found) == 0
    assert _statuses(engine) == {"dry": ("sending", 1, 0), "other": ("sending", 1, 0)}


def test_the_unknown_rule_ignores_evidence(ledger, engine):
    _crashed(ledger, "a")
    found = Evidence(delivered={"a": None}, on_wire=frozenset(), never_sent=frozenset())
    assert ledger.recover("news", rule="unknown", evidence=found) == 1
    assert ledger.get("a").status == Status.UNKNOWN


# -- the journal's files -------------------------------------------------------------------------

def _worker_lines(path: str, *lines: bytes) -> None:
    with open(path, "ab") as f:
        f.write(b"".join(lines))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """Where the journals go (`state/pipeline.sends/` in a project)."""
    return tmp_path / "pipeline.sends"


def test_evidence_tells_delivered_on_the_wire_and_never_sent_apart(root):
    journal = Journal(root, "news")
    journal.claim(["d", "w", "c", "f", "moved"])
    _worker_lines(journal.worker_path(0), journal_line("S", "d"), journal_line("D", "d", "<d@x>"),
                  journal_line("S", "f"), journal_line("F", "f"), journal_line("S", "moved"),
                  journal_line("F", "moved"), journal_line("S", "w"))
    # Retried on another worker, where it was on the wire when the run ended.
    _worker_lines(journal.worker_path(1), journal_line("S", "moved"))
    journal.close()                                   # not clean: kept for recovery
    found, runs = evidence(root, "news")
    assert found == Evidence(delivered={"d": "<d@x>"}, on_wire=frozenset({"w", "moved"}),
                             never_sent=frozenset({"c", "f"}))
    assert runs == [journal.folder]
    discard(runs)
    assert not root.exists()              # nothing left: the folders go too


def test_a_line_cut_short_by_the_crash_is_skipped(root):
    journal = Journal(root, "news")
    journal.claim(["a", "b"])
    _worker_lines(journal.worker_path(0), journal_line("S", "a"), b'["D", "a", "<a')
    journal.close()
    found, _ = evidence(root, "news")
    assert found == Evidence(delivered={}, on_wire=frozenset({"a"}), never_sent=frozenset({"b"}))


def test_a_run_still_alive_is_left_alone(root):
    live = Journal(root, "news")               # holds its lock, as a running publish does
    live.claim(["a"])
    found, runs = evidence(root, "news")
    assert runs == [] and found.never_sent == frozenset()
    live.close()
    assert evidence(root, "news")[1] == [live.folder]


def test_a_killed_runs_lock_is_free(root):
    """The lock is the process's: a SIGKILL releases it, so the next run reads the journal."""
    code = ("import sys, time; from pathlib import Path; "
            "from pipeline.channels.smtp_journal import Journal; "
            "j = Journal(Path(sys.argv[1]), 'news'); j.claim(['a']); print('ready', flush=True); "
            "time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(root)], stdout=subprocess.PIPE,
                            cwd=Path(__file__).resolve().parent.parent)
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    assert evidence(root, "news")[1] == []
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    found, runs = evidence(root, "news")
    assert len(runs) == 1 and found.never_sent == frozenset({"a"})


def test_a_clean_run_leaves_no_folder(root):
    journal = Journal(root, "news")
    journal.claim(["a"])
    journal.clean = True
    journal.close()
    assert not root.exists()


def test_channels_never_share_a_journal_folder(tmp_path):
    assert channel_folder(tmp_path, "a/b") != channel_folder(tmp_path, "a_b")
    assert channel_folder(tmp_path, "../news").parent == tmp_path
