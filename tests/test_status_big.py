"""`pipeline status` and the preview page on a ledger of many editions (a real SQLite file).

The report is checked against a plain reading of every row (counts per status, resends, the
three latest errors, the first twenty remote ids of each edition and channel), and is made of
three statements however many editions there are. The preview page reads the ledger once per
change of the database, and sees a write made by another process.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, event, text

from pipeline.config import Config, load_config
from pipeline.models import Receipt
from pipeline.plan import key_prefix, social_key
from pipeline.publish import publish
from pipeline.store import subscribers as store
from pipeline.store.engine import engine_for
from pipeline.store.ledger import Ledger
from pipeline.web.post_status import LedgerCache
from tests.conftest import ROOT, SEED_SLUG

pytestmark = pytest.mark.state_backends     # each test on SQLite and on PostgreSQL

EDITIONS = [f"2025-{n // 28 + 1:02d}-{n % 28 + 1:02d}-issue-{n:02d}" for n in range(30)]
READERS = [f"reader{n:02d}@example.com" for n in range(12)]
PARTS = range(2, 26)          # 24 social rows an edition: more than the 20 remote ids listed


def _sent(ledger: Ledger, key: str, remote_id: str | None = None, url: str | None = None) -> None:
    assert ledger.begin(key)
    ledger.succeed(Receipt(key=key, remote_id=remote_id, url=url))


def fill(engine: Engine) -> None:
    """Thirty editions on `news` (email: sent, failed, deferred with an error, pending) and on
    `social` (24 thread parts: sent with remote ids; in some editions resent after a crash, or
    left unknown by one, which gives errors of equal times); some dry-run rows too."""
    for address in READERS:
        store.upsert(engine, address)
    ledger = Ledger(engine)
    try:
        for n, edition in enumerate(EDITIONS):
            prefix = key_prefix("news", edition, dry_run=False)
            ledger.plan_recipients(channel="news", edition=edition, key_prefix=prefix, dry_run=False)
            for i, address in enumerate(READERS):
                outcome = (n + i) % 6
                if outcome < 3:
                    _sent(ledger, prefix + address, f"<{i}.{n}@news.example.com>")
                elif outcome == 3:
                    assert ledger.begin(prefix + address)
                    ledger.fail(prefix + address, f"550 5.1.1 <{address}>: no such user")
                elif outcome == 4:
                    ledger.release(prefix + address, "421 4.7.0 try again later")
            keys = [social_key("social", edition, "mastodon", part) for part in PARTS]
            for part, key in zip(PARTS, keys, strict=True):
                ledger.plan(key=key, channel="social", edition=edition, kind="social", network="mastodon",
                            part=part)
            crashed = keys[n % 9: n % 9 + 4]      # parts 8 to 11 (n = 6): "mastodon:10" < "mastodon:8"
            for key in crashed:
                assert ledger.begin(key)
            ledger.recover("social", rule="unknown" if n % 3 == 0 else "resend")
            for key in keys:
                if ledger.get(key).status == "pending":
                    _sent(ledger, key, f"{n}-{key[-2:]}", f"https://mastodon.example/@rtr/{n}{key[-2:]}")
            if n % 5 == 0:
                dry = social_key("social", edition, "x", dry_run=True)
                ledger.plan(key=dry, channel="social", edition=edition, kind="social", network="x",
                            dry_run=True)
                _sent(ledger, dry, "dry", "out/outbox/social.jsonl")
    finally:
        ledger.close()


def plain_reading(engine: Engine, *, dry_run: bool = False) -> list[dict[str, Any]]:
    """What `status` reports, worked out in Python from every row read with one plain SELECT:
    per (edition, channel), counts per status (in status order), resends, the 3 latest errors
    (newest first, equal times in key order) and the first 20 remote ids of sent social posts
    and articles (in key order)."""
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(
            text("SELECT * FROM deliveries WHERE dry_run = :dry_run"), {"dry_run": dry_run})]
    out = []
    for edition, channel in sorted({(r["edition"], r["channel"]) for r in rows}):
        mine = sorted((r for r in rows if (r["edition"], r["channel"]) == (edition, channel)),
                      key=lambda r: r["key"])
        errors = sorted((r for r in mine if r["last_error"] is not None), key=lambda r: r["updated_at"],
                        reverse=True)          # a stable sort: equal times stay in key order
        remote = [r for r in mine if r["kind"] != "email" and r["status"] == "sent"]
        statuses = sorted({r["status"] for r in mine})
        out.append({"edition": edition, "channel": channel,
                    "counts": {s: sum(r["status"] == s for r in mine) for s in statuses},
                    "resends": sum(r["resends"] for r in mine),
                    "errors": [{"key": r["key"], "status": r["status"], "error": r["last_error"]}
                               for r in errors[:3]],
                    "remote": [{"key": r["key"], "id": r["remote_id"], "url": r["remote_url"]}
                               for r in remote[:20]]})
    return out


@pytest.fixture
def many(config: Config) -> Engine:
    engine = engine_for(config)
    fill(engine)
    return engine


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def test_counts_say_what_every_row_says(many):
    expected = plain_reading(many)
    assert len(expected) == 2 * len(EDITIONS)
    # The ledger holds what the limits are about: more errors and remote ids than are listed,
    # and errors of equal times (rows a crash left unknown).
    assert any(len(r["errors"]) == 3 and r["counts"].get("failed", 0) + r["counts"].get("pending", 0) > 3
               for r in expected)
    assert any(len(r["remote"]) == 20 and r["counts"]["sent"] > 20 for r in expected)
    assert any(r["counts"].get("unknown", 0) >= 3 for r in expected)
    ties = next(r for r in expected if r["edition"] == EDITIONS[6] and r["channel"] == "social")
    assert [e["key"].rsplit(":", 1)[1] for e in ties["errors"]] == ["10", "11", "8"]
    assert any(r["resends"] for r in expected)
    ledger = Ledger(many)
    try:
        assert ledger.counts() == expected
        assert ledger.counts(dry_run=True) == plain_reading(many, dry_run=True) != []
    finally:
        ledger.close()


def test_counts_take_three_statements_whatever_the_number_of_editions(many):
    statements: list[str] = []

    def seen(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        statements.append(statement)

    ledger = Ledger(many)
    event.listen(many, "before_cursor_execute", seen)
    try:
        groups = ledger.counts()
    finally:
        event.remove(many, "before_cursor_execute", seen)
        ledger.close()
    assert len(groups) == 60
    assert len(statements) == 3


def test_status_command_on_many_editions(many, project, run_cli):
    config_path = project / "config.yaml"
    expected = plain_reading(many)
    assert json.loads(_ok(run_cli("--config", config_path, "status", "--json"))) == expected
    assert json.loads(_ok(run_cli("--config", config_path, "status", "--json", "--dry-run"))) == \
        plain_reading(many, dry_run=True)

    result = run_cli("--config", config_path, "status")
    out = _ok(result)
    for group in expected:
        [line] = [line for line in out.splitlines()
                  if re.search(rf"[│┃|]\s*{re.escape(group['channel'])}\s*[│┃|]", line)
                  and group["edition"] in line]
        counts = group["counts"]
        cells = [str(counts.get(s, 0)) for s in ("sent", "pending", "sending", "failed", "unknown")]
        assert re.findall(r"\d+", line.split(group["channel"], 1)[1]) == [*cells, str(group["resends"])]
    # After the table: each group's remote ids, then (on stderr) its latest errors, in group order.
    remote = [f"{m['key']}: {m['url'] or m['id']}" for g in expected for m in g["remote"]]
    assert [line for line in out.splitlines() if line.startswith("social:")] == remote
    notes = [f"note: {e['key']} ({e['status']}): {e['error']}" for g in expected for e in g["errors"]]
    assert [line for line in result.stderr.splitlines() if line.startswith("note:")] == notes


def test_status_on_the_demo_ledger(project, config, run_cli):
    """`make demo`'s ledger: the example subscribers, the newest post sent to the outbox (and a
    dry run of the seed post)."""
    engine = engine_for(config)
    store.import_csv(engine, ROOT / "docs" / "examples" / "subscribers.csv")
    publish(config, channels=["outbox"])
    publish(config, slugs=[SEED_SLUG], channels=["outbox"], dry_run=True)
    expected = plain_reading(engine)
    assert [(g["channel"], g["counts"]) for g in expected] == [("outbox", {"sent": 7})]
    assert len(expected[0]["remote"]) == 4           # x, mastodon, bluesky, dev.to (outbox ids)
    config_path = project / "config.yaml"
    assert json.loads(_ok(run_cli("--config", config_path, "status", "--json"))) == expected
    assert json.loads(_ok(run_cli("--config", config_path, "status", "--json", "--dry-run"))) == \
        plain_reading(engine, dry_run=True)


# -- the preview page ------------------------------------------------------------------------

@pytest.fixture
def ledger_reads(config: Config) -> Iterator[list[str]]:
    """The statements on the deliveries table that this process runs from now on."""
    engine = engine_for(config)
    reads: list[str] = []

    def seen(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if "deliveries" in statement:
            reads.append(statement)

    event.listen(engine, "before_cursor_execute", seen)
    yield reads
    event.remove(engine, "before_cursor_execute", seen)


def _seed_cell(page: str) -> tuple[str, str]:
    """(state, detail) of the seed post's outbox cell on the index."""
    row = re.search(rf'<tr data-slug="{SEED_SLUG}">(.*?)</tr>', page, re.S)
    assert row, page
    cell = re.search(r'data-channel="outbox"><span class="badge [^"]+">([^<]+)</span>\s*'
                     r'<span class="state-detail">(.*?)</span>', row[1], re.S)
    assert cell, row[1]
    return cell[1], " ".join(cell[2].split())


def test_preview_index_reads_the_ledger_once_per_change(project, preview_server, ledger_reads, run_cli):
    base = preview_server()
    first = httpx.get(f"{base}/")
    assert first.status_code == 200
    assert _seed_cell(first.text)[0] == "scheduled"
    read = len(ledger_reads)
    assert read > 0
    for _ in range(3):
        page = httpx.get(f"{base}/")
        assert _seed_cell(page.text) == _seed_cell(first.text)
    assert len(ledger_reads) == read               # nothing changed: the ledger was not read again

    # Another process sends the seed post: the next request reads the ledger and shows it.
    config_path = project / "config.yaml"
    _ok(run_cli("--config", config_path, "subscribers", "import", ROOT / "docs/examples/subscribers.csv"))
    _ok(run_cli("--config", config_path, "publish", SEED_SLUG, "--channel", "outbox"))
    state, detail = _seed_cell(httpx.get(f"{base}/").text)
    sent = re.fullmatch(r"\S+ \S+ \S+ \S+ · (\d+) of (\d+)", detail)
    assert state == "sent" and sent and sent[1] == sent[2] and int(sent[1]) > 0, detail
    assert len(ledger_reads) > read
    read = len(ledger_reads)
    assert _seed_cell(httpx.get(f"{base}/").text)[0] == "sent"
    assert len(ledger_reads) == read

    # A write by the database alone (no pipeline code), in another process: one of its rows
    # failed after all. The URL goes in the environment: it may hold a password.
    url = engine_for(load_config(config_path)).url.render_as_string(hide_password=False)
    subprocess.run([sys.executable, "-c", (
        "import os, sys; from sqlalchemy import create_engine, text\n"
        "with create_engine(os.environ['STATE_URL']).begin() as db: db.execute(text(\"UPDATE deliveries "
        "SET status = 'failed', last_error = '550 gone' WHERE key = (SELECT min(key) FROM deliveries "
        "WHERE edition = :edition AND kind = 'email')\"), {'edition': sys.argv[1]})"),
        SEED_SLUG], check=True, env={**os.environ, "STATE_URL": url})
    state, detail = _seed_cell(httpx.get(f"{base}/").text)
    assert state == "failed" and detail.endswith(", 1 failed"), detail
    # The post's own page reads the same kept tallies.
    assert httpx.get(f"{base}/posts/{SEED_SLUG}").status_code == 200
    assert len(ledger_reads) > read


def test_ledger_cache_keeps_tallies_until_another_connection_commits(config):
    engine = engine_for(config)
    cache = LedgerCache()
    ledger = Ledger(engine)
    try:
        ledger.plan(key="news:ed:x", channel="news", edition="ed", kind="social", network="x")
        kept = cache.tallies(engine)
        assert kept.edition_counts(channel="news", edition="ed") == {"pending": 1}
        assert cache.tallies(engine) is kept
        _sent(ledger, "news:ed:x", "1")
        fresh = cache.tallies(engine)
        assert fresh is not kept
        assert fresh.edition_counts(channel="news", edition="ed") == {"sent": 1}
        assert fresh.last_sent(channel="news", edition="ed") == ledger.last_sent(channel="news", edition="ed")
        cache.close()
        assert cache.tallies(engine) is not fresh     # a new connection: its version says nothing yet
    finally:
        ledger.close()
        cache.close()


@pytest.mark.parametrize("state_backend", ["sqlite"], indirect=True)     # an in-memory SQLite database
def test_a_database_without_a_change_signal_is_read_every_time(project):
    """An in-memory database shares one connection, whose own writes data_version does not show."""
    text = (project / "config.yaml").read_text(encoding="utf-8")
    (project / "config.yaml").write_text(text.replace("state: state/pipeline.sqlite3",
                                                      'state: "sqlite:///:memory:"'), encoding="utf-8")
    engine = engine_for(load_config(project / "config.yaml"))
    cache = LedgerCache()
    ledger = Ledger(engine)
    try:
        ledger.plan(key="news:ed:x", channel="news", edition="ed", kind="social", network="x")
        assert cache.tallies(engine).edition_counts(channel="news", edition="ed") == {"pending": 1}
        _sent(ledger, "news:ed:x", "1")
        assert cache.tallies(engine).edition_counts(channel="news", edition="ed") == {"sent": 1}
    finally:
        ledger.close()
        cache.close()
