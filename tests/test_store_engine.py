"""The state database's edge: a new file gets the schema; an existing file that is empty, foreign,
truncated or corrupt stops every command with one line; a full disk, a read-only database and a
folder that cannot be made are one-line errors too, never a SQLAlchemy traceback."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine, event

from pipeline.config import Config, load_config
from pipeline.errors import StateError
from pipeline.store import subscribers as store
from pipeline.store.engine import engine_for
from pipeline.store.ledger import Ledger
from tests.conftest import SEED_SLUG

COMMANDS = (("status",), ("subscribers", "list"), ("publish", "--dry-run"), ("run", "--once"),
            ("schedule",), ("retry",))


def _state(project: Path) -> Path:
    return project / "state" / "pipeline.sqlite3"


def _good_database(project: Path, subscribers: int = 2000) -> bytes:
    """A real pipeline database with a list and a sent post, checkpointed into one file."""
    config = load_config(project / "config.yaml")
    engine = engine_for(config)
    csv = project / "list.csv"
    csv.write_text("email,name\n" + "".join(f"u{i}@example.com,User {i}\n" for i in range(subscribers)))
    store.import_csv(engine, csv)
    engine.dispose()
    with sqlite3.connect(_state(project)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return _state(project).read_bytes()


def _assert_refused(run_cli: Callable[..., object], project: Path, expected: str) -> None:
    for command in COMMANDS:
        result = run_cli(*command, cwd=project)
        assert result.returncode == 1, (command, result.stdout, result.stderr)  # type: ignore[attr-defined]
        lines = result.stderr.strip().splitlines()  # type: ignore[attr-defined]
        assert len(lines) == 1 and expected in lines[0], (command, result.stderr)  # type: ignore[attr-defined]
        assert "Traceback" not in result.stderr and str(_state(project)) in lines[0]  # type: ignore[attr-defined]
    assert not (project / "out" / "outbox").exists(), "something was sent from a database that is not ours"


def test_a_new_database_is_created_where_there_is_none(run_cli, project: Path) -> None:
    result = run_cli("status", cwd=project)
    assert result.returncode == 0, result.stderr
    assert _state(project).stat().st_size > 0


def test_an_empty_file_is_not_taken_for_a_new_database(run_cli, project: Path) -> None:
    _state(project).parent.mkdir()
    _state(project).write_bytes(b"")
    _assert_refused(run_cli, project, "is empty (0 bytes), not a pipeline database; restore it from a backup")
    assert _state(project).read_bytes() == b"", "the empty file was written to"


def test_a_foreign_sqlite_file_is_refused(run_cli, project: Path) -> None:
    _state(project).parent.mkdir()
    with sqlite3.connect(_state(project)) as conn:
        conn.execute("CREATE TABLE notes (body TEXT)")
    _assert_refused(run_cli, project,
                    "is not a pipeline database (it has no deliveries or subscribers table)")


def test_a_file_that_is_not_sqlite_is_refused(run_cli, project: Path) -> None:
    _state(project).parent.mkdir()
    _state(project).write_bytes(b"PK\x03\x04 a zip file, say" * 100)
    _assert_refused(run_cli, project, "is not a pipeline database (not a SQLite file)")


def test_a_truncated_database_is_refused(run_cli, project: Path) -> None:
    data = _good_database(project)
    _state(project).write_bytes(data[: len(data) // 3])
    _assert_refused(run_cli, project, "is damaged (truncated:")


def test_a_corrupt_database_is_one_line(run_cli, project: Path) -> None:
    data = bytearray(_good_database(project))
    page = int.from_bytes(data[16:18], "big")
    end = len(data) * 3 // 4
    data[page * 2: end] = b"\xa5" * (end - page * 2)    # the pages after the schema's
    _state(project).write_bytes(bytes(data))
    result = run_cli("subscribers", "list", cwd=project)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: state database {_state(project)} is damaged (database disk image is malformed); "
        "restore it from a backup, or move it away to start a new one"]


def _on_connect(engine: Engine, pragma: str) -> None:
    """Every new connection of the engine runs `pragma` (SQLite's own limits stand in for a full
    disk and a read-only file: as root, a test cannot make a folder read-only)."""
    event.listen(engine, "connect", lambda conn, _record: conn.execute(pragma))
    engine.dispose()


def test_a_full_disk_is_one_line(config: Config, project: Path) -> None:
    engine = engine_for(config)
    pages = sqlite3.connect(_state(project)).execute("PRAGMA page_count").fetchone()[0]
    _on_connect(engine, f"PRAGMA max_page_count={pages + 2}")
    csv = project / "list.csv"
    csv.write_text("email\n" + "".join(f"reader{i}@example.com\n" for i in range(5000)))
    with pytest.raises(StateError, match=r"^state database .*: the disk is full; free some space"):
        store.import_csv(engine, csv)


def test_a_read_only_database_is_one_line_on_every_path(config: Config) -> None:
    engine = engine_for(config)
    ledger = Ledger(engine)
    ledger.plan(key=f"outbox:{SEED_SLUG}:mastodon", channel="outbox", edition=SEED_SLUG, kind="social",
                network="mastodon")
    ledger.close()
    _on_connect(engine, "PRAGMA query_only=1")
    with pytest.raises(StateError, match=r"cannot be written \(attempt to write a readonly database\)"):
        store.upsert(engine, "new@example.com")
    ledger = Ledger(engine)
    try:   # the send cycle's own statements run on the driver's cursor, past SQLAlchemy
        with pytest.raises(StateError, match="cannot be written"):
            ledger.begin(f"outbox:{SEED_SLUG}:mastodon")
    finally:
        ledger.close()


def test_a_state_folder_that_cannot_be_made_is_one_line(run_cli, project: Path) -> None:
    (project / "state").write_text("a file where the folder should be")
    result = run_cli("status", cwd=project)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: state database {_state(project)}: cannot create its folder {project / 'state'} "
        "(File exists); set `state:` in config.yaml to a writable path"]
