"""Metrics and health of `pipeline serve` for real: the app under uvicorn on a loopback port,
scraped after real sends into the outbox, with the database removed, damaged or at an old
revision; the rules in docs/metrics.md checked against what /metrics serves."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import event

from pipeline.config import Config, load_config
from pipeline.metrics.collectors import StateCollector
from pipeline.metrics.due import DueTimes, last_due
from pipeline.models import Status
from pipeline.store import subscribers as store
from pipeline.store.engine import engine_for
from pipeline.store.events import Event, EventKind, record
from pipeline.store.ledger import Ledger
from pipeline.store.revision import version_table
from pipeline.store.runs import acquire, record_run, runs
from pipeline.timetable.entries import Entry
from pipeline.timetable.schedule import run_once
from pipeline.web.server import build_server
from tests.conftest import ROOT, SEED_SLUG, ledger_rows, send_through
from tests.servers import AppServers
from tests.smtp_sink import free_port

READERS = ("ada@example.com", "bob@example.org")
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def serve() -> Iterator[Callable[[Config], str]]:
    """start(config) -> the base URL of `pipeline serve` for `config`, on a free loopback port."""
    servers = AppServers()
    yield lambda config: servers.run(build_server(config, port=free_port()))
    servers.stop()


def scrape(base: str, **headers: str) -> Samples:
    """GET /metrics: (sample name, sorted labels) -> value."""
    response = httpx.get(f"{base}/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(response.text)


def parse(text: str) -> Samples:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def with_readers(config: Config) -> None:
    engine = engine_for(config)
    for address in READERS:
        store.upsert(engine, address)


@pytest.mark.state_backends
def test_metrics_after_a_real_send_match_the_ledger(config, serve):
    with_readers(config)
    send_through(config, name="outbox")
    rows = ledger_rows(config, "outbox")
    assert rows and all(r.status == Status.SENT for r in rows)
    base = serve(config)
    samples = scrape(base)
    assert value(samples, "pipeline_state_up") == 1
    assert value(samples, "pipeline_deliveries", channel="outbox", status="sent") == len(rows)
    for status in ("pending", "sending", "failed", "unknown"):
        assert value(samples, "pipeline_deliveries", channel="outbox", status=status) == 0
    assert value(samples, "pipeline_queue_depth", channel="outbox") == 0
    edition = {r.edition for r in rows}
    assert edition == {SEED_SLUG}
    assert value(samples, "pipeline_edition_deliveries", channel="outbox", edition=SEED_SLUG,
                 status="sent") == len(rows)
    # Every sent row is in the histogram, each bucket holding at least the ones below it.
    assert value(samples, "pipeline_send_latency_seconds_count", channel="outbox") == len(rows)
    buckets = sorted((float(dict(labels)["le"]), v) for (name, labels), v in samples.items()
                     if name == "pipeline_send_latency_seconds_bucket")
    assert buckets[-1] == (float("inf"), len(rows))
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)
    assert value(samples, "pipeline_subscriber_events_total", kind="hard") == 0
    assert value(samples, "pipeline_scheduler_leader") == 0     # `serve` is no scheduler
    assert not [k for k in samples if k[0] == "pipeline_scheduler_leader_info"]
    assert value(samples, "process_start_time_seconds") is not None   # the process metrics too

    # A bounce and a complaint come back; a second post is planned and left pending.
    engine = engine_for(config)
    record(engine, Event(event_id="dsn-1", email=READERS[0], kind=EventKind.HARD, source="dsn"))
    record(engine, Event(event_id="arf-1", email=READERS[1], kind=EventKind.COMPLAINT, source="arf"))
    samples = scrape(base)
    assert value(samples, "pipeline_subscriber_events_total", kind="hard") == 1
    assert value(samples, "pipeline_subscriber_events_total", kind="complaint") == 1
    assert value(samples, "pipeline_subscriber_events_total", kind="soft") == 0


@pytest.mark.state_backends
def test_pending_rows_are_the_queue_of_their_edition(config, serve):
    ledger = Ledger(engine_for(config))
    try:
        for i in range(3):
            ledger.plan(key=f"outbox:later-post:x:{i}", channel="outbox", edition="later-post", kind="social",
                        network="x", part=i)
    finally:
        ledger.close()
    samples = scrape(serve(config))
    assert value(samples, "pipeline_queue_depth", channel="outbox") == 3
    assert value(samples, "pipeline_deliveries", channel="outbox", status="pending") == 3
    assert value(samples, "pipeline_edition_deliveries", channel="outbox", edition="later-post",
                 status="pending") == 3
    assert value(samples, "pipeline_send_latency_seconds_count", channel="outbox") is None


def test_the_ledger_is_read_once_per_change_whatever_the_scrapes(config):
    with_readers(config)
    send_through(config, name="outbox")
    engine = engine_for(config)
    passes: list[str] = []

    def note(_conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        if "FROM deliveries" in statement:
            passes.append(statement)

    event.listen(engine, "before_cursor_execute", note)
    try:
        collector = StateCollector(config, engine)
        sent = [_sample(collector, "pipeline_deliveries", status="sent") for _ in range(5)]
        assert len(passes) == 1
        record(engine, Event(event_id="dsn-2", email=READERS[0], kind=EventKind.SOFT, source="dsn"))
        assert _sample(collector, "pipeline_subscriber_events_total", kind="soft") == 1
        assert len(passes) == 2
        assert sent == [len(ledger_rows(config, "outbox"))] * 5
    finally:
        event.remove(engine, "before_cursor_execute", note)


def _sample(collector: StateCollector, name: str, **labels: str) -> float:
    found = [s.value for family in collector.collect() for s in family.samples
             if s.name == name and labels.items() <= s.labels.items()]
    assert len(found) == 1, found
    return found[0]


@pytest.mark.state_backends
def test_the_last_fire_of_an_entry_is_the_run_it_recorded(project, serve):
    path = project / "config.yaml"
    path.write_text(path.read_text(encoding="utf-8") + "\nschedule:\n  - {name: daily, channels: [outbox], "
                    "every: 1d, max_lateness: 25h}\n", encoding="utf-8")
    config = load_config(path)
    base = serve(config)
    before = scrape(base)
    assert value(before, "pipeline_timetable_last_fire_timestamp_seconds", entry="daily") is None
    assert value(before, "pipeline_timetable_max_lateness_seconds", entry="daily") == 25 * 3600
    run_once(config)
    [run] = runs(engine_for(config))
    after = scrape(base)
    fired = value(after, "pipeline_timetable_last_fire_timestamp_seconds", entry="daily")
    due = value(after, "pipeline_timetable_last_due_timestamp_seconds", entry="daily")
    assert fired == run["fire_time"].timestamp()
    assert due is not None and 0 <= due - fired <= 86400     # the next day may have begun since


def test_the_scheduler_lock_names_the_leader(config, serve):
    import os
    import socket

    lock = acquire(engine_for(config))      # this process holds it, as `pipeline run` would
    try:
        samples = scrape(serve(config))
        assert value(samples, "pipeline_scheduler_leader") == 1
        assert value(samples, "pipeline_scheduler_leader_info", host=socket.gethostname(),
                     pid=str(os.getpid())) == 1
        assert value(samples, "pipeline_scheduler_heartbeat_timestamp_seconds") is not None
    finally:
        lock.release()


def utc(*fields: int) -> datetime:
    return datetime(*fields, tzinfo=UTC)     # type: ignore[misc]


@pytest.mark.parametrize(("spec", "now", "expected"), [
    ({"cron": "0 9 * * mon"}, utc(2026, 11, 25, 12), utc(2026, 11, 23, 14)),     # 9:00 in New York
    ({"cron": "0 9 1 1 *"}, utc(2026, 11, 25, 12), utc(2026, 1, 1, 14)),          # a year back
    ({"every": "6h"}, utc(2026, 11, 25, 12), utc(2026, 11, 25, 11)),
    ({"every": "1s"}, utc(2026, 11, 25, 12, 0, 0, 500000), utc(2026, 11, 25, 12)),
    ({"at": "2026-11-20T08:00:00-05:00"}, utc(2026, 11, 25), utc(2026, 11, 20, 13)),
    ({"at": "2026-12-20T08:00:00-05:00"}, utc(2026, 11, 25), None),                # not yet
])
def test_last_due_is_the_latest_fire_time_that_has_come(spec, now, expected):
    entry = Entry(name="e", channels=["outbox"], **spec)
    assert last_due(entry, "America/New_York", now) == expected


def test_kept_due_times_move_on_at_the_next_fire():
    entry = Entry(name="e", channels=["outbox"], every="6h")      # 05, 11, 17, 23 UTC
    due = DueTimes("America/New_York")
    assert due.last_due(entry, utc(2026, 11, 25, 12)) == utc(2026, 11, 25, 11)
    assert due.last_due(entry, utc(2026, 11, 25, 16, 59)) == utc(2026, 11, 25, 11)
    assert due.last_due(entry, utc(2026, 11, 25, 17)) == utc(2026, 11, 25, 17)
    ahead = Entry(name="a", channels=["outbox"], at=datetime(2026, 12, 20, 13, tzinfo=UTC))
    assert due.last_due(ahead, utc(2026, 11, 25)) is None
    assert due.last_due(ahead, utc(2026, 12, 20, 13)) == utc(2026, 12, 20, 13)


def test_readyz_follows_the_state_database(config, serve):
    base = serve(config)
    ready = httpx.get(f"{base}/readyz")
    assert (ready.status_code, ready.json()) == (200, {"ready": True})
    state = Path(engine_for(config).url.database or "")

    # Damaged: the file's pages overwritten in place, after a checkpoint has moved every page
    # out of the WAL (else SQLite reads them from there, and the damage does not show yet).
    with engine_for(config).connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    good = state.read_bytes()
    state.write_bytes(b"\x00garbage" * (len(good) // 8))
    damaged = httpx.get(f"{base}/readyz")
    assert damaged.status_code == 503
    assert damaged.json()["ready"] is False
    assert str(state) in damaged.json()["reason"] and "\n" not in damaged.json()["reason"]
    assert httpx.get(f"{base}/healthz").status_code == 200          # alive all the same

    # Gone: moved away. The check does not create an empty file in its place.
    state.write_bytes(good)
    state.rename(state.with_suffix(".moved"))
    gone = httpx.get(f"{base}/readyz")
    assert gone.status_code == 503 and str(state) in gone.json()["reason"]
    assert not state.exists()
    assert ("pipeline_state_up", ()) in scrape(base)      # the metrics still answer
    assert httpx.get(f"{base}/healthz").text == "ok"

    state.with_suffix(".moved").rename(state)
    assert httpx.get(f"{base}/readyz").status_code == 200


@pytest.mark.state_backends
def test_readyz_refuses_a_schema_at_another_revision(config, serve):
    base = serve(config)
    assert httpx.get(f"{base}/readyz").status_code == 200
    with engine_for(config).begin() as conn:
        conn.execute(version_table.delete())
    stale = httpx.get(f"{base}/readyz")
    assert stale.status_code == 503
    assert "run `pipeline db upgrade`" in stale.json()["reason"]


def test_metrics_need_the_token_when_one_is_set(config, serve, monkeypatch):
    monkeypatch.setenv("PIPELINE_METRICS_TOKEN", "s3cret-token")
    base = serve(config)
    bare = httpx.get(f"{base}/metrics")
    assert bare.status_code == 401 and bare.headers["www-authenticate"] == "Bearer"
    assert "s3cret-token" not in bare.text
    assert httpx.get(f"{base}/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert value(scrape(base, Authorization="Bearer s3cret-token"), "pipeline_state_up") == 1


def test_without_a_token_only_loopback_clients_get_metrics(config, serve, monkeypatch):
    monkeypatch.delenv("PIPELINE_METRICS_TOKEN", raising=False)
    base = serve(config)
    assert value(scrape(base), "pipeline_state_up") == 1
    # Through a proxy on this host the client is the reader's address (X-Forwarded-For).
    proxied = httpx.get(f"{base}/metrics", headers={"X-Forwarded-For": "192.0.2.7"})
    assert proxied.status_code == 403 and "PIPELINE_METRICS_TOKEN" in proxied.text
    assert httpx.get(f"{base}/readyz", headers={"X-Forwarded-For": "192.0.2.7"}).status_code == 200


def test_the_documented_metrics_and_alert_rules_use_what_metrics_serves(config, serve):
    with_readers(config)
    send_through(config, name="outbox")
    record_run(engine_for(config), "weekly-newsletter", datetime.now(UTC) - timedelta(days=1), "ran")
    response = httpx.get(f"{serve(config)}/metrics")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    served = set(families) | {s.name for f in families.values() for s in f.samples}
    doc = (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")

    table = dict(re.findall(r"^\| `(pipeline_\w+)` \| (\w+) \|", doc, flags=re.M))
    ours = {name: f.type for name, f in families.items() if name.startswith("pipeline_")}
    # The counter family `pipeline_subscriber_events` is documented by its sample name.
    assert {n.removesuffix("_total"): t for n, t in table.items()} == ours

    [block] = re.findall(r"```yaml\n(groups:.*?)```", doc, flags=re.S)
    rules = yaml.safe_load(block)["groups"][0]["rules"]
    assert [r["alert"] for r in rules] == ["PipelineTimetableEntryDidNotFire",
                                           "PipelineDeliveryFailureRatio", "PipelineQueueNotDraining",
                                           "PipelineJobsNotTaken"]
    for rule in rules:
        used = set(re.findall(r"\bpipeline_\w+", rule["expr"]))
        assert used and used <= served, (rule["alert"], used - served)
        assert rule["labels"]["severity"] in ("page", "warning")
