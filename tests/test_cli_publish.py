"""`publish`, `status` and `retry` run the way a user runs them: in a subprocess."""

from __future__ import annotations

import json
import mailbox

import pytest

from pipeline.channels.registry import CHANNELS

NEWEST = "mood-journal"


@pytest.fixture
def cli(project, run_cli):
    """run_cli with `--config <project>/config.yaml`."""

    def run(*args):
        return run_cli("--config", project / "config.yaml", *args)

    return run


@pytest.fixture
def subscribed(cli):
    for args in (("ada@example.com", "--name", "Ada"), ("bob@example.com",)):
        result = cli("subscribers", "add", *args)
        assert result.returncode == 0, result.stderr
        assert f"{args[0]}: added" in result.stdout


def _ok(result):
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def test_publish_sends_and_prints_the_count(cli, subscribed, project):
    out = _ok(cli("publish"))
    assert "outbox: 6 sent, 0 failed, 0 unknown, 0 deferred, 0 already sent (mood-journal)" in out
    assert len(mailbox.Maildir(project / "out" / "outbox" / "mail", create=False)) == 2


def test_second_publish_prints_nothing_to_send(cli, subscribed):
    _ok(cli("publish"))
    out = _ok(cli("publish"))
    assert "outbox: nothing to send for mood-journal (6 already sent)" in out
    assert "sent," not in out


def test_status_prints_a_table_with_post_and_channel(cli, subscribed):
    _ok(cli("publish"))
    out = _ok(cli("status"))
    row = next(line for line in out.splitlines() if NEWEST in line)
    assert "outbox" in row
    assert "6" in row.split()
    assert "sent" in out and "pending" in out


def test_status_on_an_empty_ledger_says_so(cli):
    assert "The ledger is empty" in _ok(cli("status"))


def test_status_json_has_counts(cli, subscribed):
    _ok(cli("publish"))
    rows = json.loads(_ok(cli("status", "--json")))
    assert [(r["edition"], r["channel"], r["counts"]) for r in rows] == \
        [(NEWEST, "outbox", {"sent": 6})]
    assert rows[0]["resends"] == 0
    assert sorted(m["key"] for m in rows[0]["remote"]) == [
        f"outbox:{NEWEST}:{k}" for k in ("article", "bluesky", "mastodon", "x")]


def test_dry_run_shows_in_status_dry_run_only(cli, subscribed):
    out = _ok(cli("publish", "--dry-run"))
    assert "outbox: 6 sent" in out
    assert "The ledger is empty" in _ok(cli("status"))
    rows = json.loads(_ok(cli("status", "--dry-run", "--json")))
    assert [(r["edition"], r["counts"]) for r in rows] == [(NEWEST, {"sent": 6})]
    assert NEWEST in _ok(cli("status", "--dry-run"))


def test_real_publish_after_dry_run_still_sends(cli, subscribed):
    _ok(cli("publish", "--dry-run"))
    assert "outbox: 6 sent" in _ok(cli("publish"))


def test_retry_with_nothing_to_retry(cli, subscribed):
    _ok(cli("publish"))
    out = _ok(cli("retry"))
    assert out.strip() == "Nothing to retry."


def test_publish_unknown_slug_is_one_line_error(cli, subscribed):
    result = cli("publish", "no-such-slug")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: no post with slug 'no-such-slug'")
    assert "sent" not in result.stdout


def test_check_reports_unknown_channel_type_and_missing_secret(project, run_cli):
    path = project / "config.yaml"
    path.write_text(path.read_text(encoding="utf-8")
                    + "  pigeon: {type: carrier-pigeon}\n"
                    + "  mail: {type: smtp, host: localhost, password: \"${NO_SUCH_SECRET_VAR}\"}\n",
                    encoding="utf-8")
    result = run_cli("--config", path, "check")
    assert result.returncode == 1
    assert ("channels.pigeon.type: unknown channel type 'carrier-pigeon'; known types: "
            f"{', '.join(sorted(CHANNELS))}") in result.stderr
    assert "environment variable NO_SUCH_SECRET_VAR is not set" in result.stderr
    assert "Traceback" not in result.stderr
