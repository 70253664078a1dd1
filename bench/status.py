"""`pipeline status` and the preview page's index on a big ledger, against baselines measured in
the same run.

Two state databases are generated once, by the project's own engine (so the schema, indexes
included, is the real one) and one executemany per edition, and kept in a cache folder between
rounds and runs (the file name carries a hash of the schema, so a changed schema makes new ones):

- status: N email rows (default 1,000,000) over 100 editions: per edition, one row per subscriber
  (10,000) on `newsletter` (mostly sent; some failed, unknown or pending with their last error;
  a few resent after a crash) and the social and dev.to rows of the post on `social` and `devto`
  (remote ids and URLs, a Mastodon thread, now and then a failure);
- preview: the shipped project whose seed post has N rows on `outbox`, one edition.

Measured in paired rounds with the order alternated, medians reported:

- `pipeline status` and `pipeline status --json` as whole commands in new processes, against one
  raw `SELECT edition, channel, status, count(*) ... GROUP BY edition, channel, status` over the
  same file by Python's sqlite3 module in a new process;
- GET / of the preview app (uvicorn on loopback, httpx): a fresh app's first request (it renders
  the posts too), the first request after another connection wrote to the ledger, and repeated
  requests, against the same page of the project on the demo ledger (`make demo`'s: the example
  subscribers, the newest post published to the outbox).

Prints a table; the last line is
`ratio <status/groupby> json_ratio <status --json/groupby> index_ms <median repeated, N rows>`.

    python bench/status.py [--rows 1000000] [--editions 100] [--rounds 3] [--cache DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table
from sqlalchemy.schema import CreateIndex, CreateTable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.config import load_config  # noqa: E402
from pipeline.plan import article_key, email_key, social_key  # noqa: E402
from pipeline.publish import publish  # noqa: E402
from pipeline.store.engine import engine_for  # noqa: E402
from pipeline.store.revision import HEAD  # noqa: E402
from pipeline.store.schema import deliveries  # noqa: E402
from pipeline.store.subscribers import import_csv  # noqa: E402
from pipeline.web.preview_page import create_preview_app  # noqa: E402
from tests.servers import AppServers  # noqa: E402

SEED = "2020-09-01-ketamine-neurological-damage"
COLUMNS = ("key", "channel", "edition", "kind", "recipient", "network", "part", "dry_run", "status",
           "attempts", "resends", "last_error", "remote_id", "remote_url", "created_at", "updated_at",
           "sent_at", "next_attempt_at")
INSERT = f"INSERT INTO deliveries ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
# The baseline: what any report of the ledger has to do at least, one grouped pass over it.
GROUP_BY = ("import sqlite3, sys; db = sqlite3.connect(sys.argv[1]); "
            "rows = db.execute('SELECT edition, channel, status, count(*) FROM deliveries "
            "GROUP BY edition, channel, status').fetchall(); print(len(rows))")
# Social rows of one post: (network, part), a Mastodon thread of three.
SOCIAL = (("x", 0), ("mastodon", 0), ("mastodon", 2), ("mastodon", 3), ("bluesky", 0))
START = datetime(2024, 1, 1, 9, 0)


def stamp(moment: datetime) -> str:
    """A timestamp as SQLAlchemy stores one in SQLite."""
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")


def email_rows(rng: random.Random, channel: str, edition: str, count: int,
               at: datetime) -> Iterator[tuple[object, ...]]:
    """`count` email rows of one edition, 10 ms apart: ~95% sent, 2% failed, 1% unknown, 1.5%
    pending (deferred by a 4xx), 0.5% sent after a crash resent them."""
    for i in range(count):
        address = f"reader.{i}@example.com"
        moment = at + timedelta(milliseconds=10 * i)
        draw = rng.random()
        status, error, resends, attempts, sent_at, retry_at = "sent", None, 0, 1, stamp(moment), None
        if draw < 0.02:
            status, error, sent_at = "failed", f"550 5.1.1 <{address}>: mailbox unavailable", None
        elif draw < 0.03:
            status, sent_at = "unknown", None
            error = "interrupted while sending; the outcome is unknown"
        elif draw < 0.045:
            status, error, sent_at = "pending", "421 4.7.0 try again later", None
            retry_at, attempts = stamp(moment + timedelta(minutes=30)), 1
        elif draw < 0.05:
            resends, attempts = 1, 2
        yield (email_key(channel, edition, address), channel, edition, "email", address, None, 0, 0,
               status, attempts, resends, error, f"<{i}.{edition}@news.example.com>", None,
               stamp(at), stamp(moment), sent_at, retry_at)


def post_rows(rng: random.Random, edition: str, at: datetime) -> Iterator[tuple[object, ...]]:
    """The post's social rows on `social` and its article on `devto`, mostly sent (remote ids)."""
    for n, (network, part) in enumerate(SOCIAL):
        moment = at + timedelta(seconds=n)
        failed = rng.random() < 0.05
        rid = None if failed else f"{network}-{edition}-{part}"
        yield (social_key("social", edition, network, part), "social", edition, "social", None, network,
               part, 0, "failed" if failed else "sent", 1, 0, "401 Unauthorized" if failed else None,
               rid, rid and f"https://{network}.example/{rid}", stamp(at), stamp(moment),
               None if failed else stamp(moment), None)
    rid = f"devto-{edition}"
    yield (article_key("devto", edition), "devto", edition, "article", None, None, 0, 0, "sent", 1, 0,
           None, rid, f"https://dev.to/rtr/{edition}", stamp(at), stamp(at), stamp(at), None)


def schema_hash() -> str:
    """A short hash of the ledger table's DDL and indexes and the schema revision: a cached file
    is only reused for the schema it was made with (a file of an older revision is refused)."""
    ddl = HEAD + str(CreateTable(deliveries)) + "".join(str(CreateIndex(i)) for i in sorted(
        deliveries.indexes, key=lambda i: str(i.name)))
    return hashlib.sha256(ddl.encode()).hexdigest()[:10]


def new_project(folder: Path) -> Path:
    """The shipped config.yaml, posts/ and templates/ in `folder`; its config.yaml."""
    folder.mkdir(parents=True)
    shutil.copy(ROOT / "config.yaml", folder / "config.yaml")
    for name in ("posts", "templates"):
        shutil.copytree(ROOT / name, folder / name)
    return folder / "config.yaml"


def fill(config_path: Path, batches: Iterator[list[tuple[object, ...]]]) -> Path:
    """Make the project's state database with its engine, then insert each batch with one
    executemany and commit; the database file."""
    engine = engine_for(load_config(config_path))
    path = Path(str(engine.url.database))
    engine.dispose()
    db = sqlite3.connect(path)
    for rows in batches:
        db.executemany(INSERT, rows)
        db.commit()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return path


def cached(cache: Path, name: str, build: Callable[[Path], None]) -> Path:
    """The project folder `cache/name-<schema hash>`, built by `build(folder)` unless it exists
    (built under a temporary name first, so an interrupted build is never reused)."""
    folder = cache / f"{name}-{schema_hash()}"
    if not (folder / "config.yaml").exists():
        partial = cache / f"{folder.name}.partial-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        build(partial)
        partial.rename(folder)
    return folder / "config.yaml"


def status_project(folder: Path, rows: int, editions: int) -> None:
    rng = random.Random(15)
    per_edition = rows // editions

    def batches() -> Iterator[list[tuple[object, ...]]]:
        for n in range(editions):
            edition = f"{(START + timedelta(days=7 * n)):%Y-%m-%d}-issue-{n:03d}"
            at = START + timedelta(days=7 * n)
            yield [*email_rows(rng, "newsletter", edition, per_edition, at), *post_rows(rng, edition, at)]

    fill(new_project(folder), batches())


def preview_project(folder: Path, rows: int) -> None:
    rng = random.Random(15)
    config_path = new_project(folder)
    at = START
    social = [(social_key("outbox", SEED, network, part), "outbox", SEED, "social", None, network, part, 0,
               "sent", 1, 0, None, f"{network}-{part}", f"https://{network}.example/{part}", stamp(at),
               stamp(at), stamp(at), None) for network, part in SOCIAL]
    fill(config_path, iter([[*email_rows(rng, "outbox", SEED, rows - len(social), at), *social]]))


def demo_project(folder: Path) -> Path:
    """`make demo`'s ledger: the example subscribers, the newest post published to the outbox."""
    config_path = new_project(folder)
    config = load_config(config_path)
    import_csv(engine_for(config), ROOT / "docs" / "examples" / "subscribers.csv")
    publish(config, channels=["outbox"])
    return config_path


def command(args: list[str]) -> float:
    """Seconds of one command in a new process (its output is read and dropped)."""
    start = time.perf_counter()
    done = subprocess.run(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stderr}")
    return seconds


def touch_ledger(config_path: Path) -> None:
    """Two commits to the ledger by another connection, a row added and taken away again: the
    preview must read the ledger again, and the cached file stays as it was. (An UPDATE that
    sets a column to its own value commits nothing, and SQLite rightly sees no change.)"""
    db = sqlite3.connect(Path(str(engine_for(load_config(config_path)).url.database)))
    db.execute(INSERT, ("bench:touch:x", "bench", "touch", "social", None, "x", 0, 0, "pending", 0, 0,
                        None, None, None, stamp(START), stamp(START), None, None))
    db.commit()
    db.execute("DELETE FROM deliveries WHERE key = 'bench:touch:x'")
    db.commit()
    db.close()


def index_times(config_path: Path, repeats: int) -> tuple[float, float, float]:
    """Milliseconds of GET / on a fresh app: (first request, first after a ledger write, median of
    `repeats` requests after that)."""
    servers = AppServers()
    base = servers.start(create_preview_app(config_path))
    try:
        with httpx.Client(base_url=base, timeout=600) as client:
            def get() -> float:
                start = time.perf_counter()
                client.get("/").raise_for_status()
                return (time.perf_counter() - start) * 1000

            first = get()
            touch_ledger(config_path)
            after_write = get()
            repeated = statistics.median(get() for _ in range(repeats))
    finally:
        servers.stop()
    return first, after_write, repeated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--editions", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20, help="repeated index requests per round")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "pipeline-bench",
                        help="where the generated databases are kept between runs")
    args = parser.parse_args()
    if args.rounds < 3:
        parser.error("--rounds must be at least 3: a median of fewer paired rounds says little here")
    args.cache.mkdir(parents=True, exist_ok=True)
    build_start = time.perf_counter()
    status_cfg = cached(args.cache, f"status-{args.rows}-{args.editions}",
                        lambda f: status_project(f, args.rows, args.editions))
    preview_cfg = cached(args.cache, f"preview-{args.rows}", lambda f: preview_project(f, args.rows))
    built = time.perf_counter() - build_start
    db = Path(str(engine_for(load_config(status_cfg)).url.database))

    cli = [sys.executable, "-m", "pipeline", "--config", str(status_cfg), "status"]
    sides: dict[str, list[str]] = {"groupby": [sys.executable, "-c", GROUP_BY, str(db)],
                                   "status": cli, "status --json": [*cli, "--json"]}
    seconds: dict[str, list[float]] = {side: [] for side in sides}
    ratios: dict[str, list[float]] = {"status": [], "status --json": []}
    index: dict[str, list[tuple[float, float, float]]] = {"big": [], "demo": []}
    with tempfile.TemporaryDirectory() as tmp:
        demo_cfg = demo_project(Path(tmp) / "demo")
        for r in range(args.rounds):
            for name in ("status", "status --json"):
                pair = {}
                for side in (name, "groupby") if r % 2 == 0 else ("groupby", name):
                    pair[side] = command(sides[side])
                    seconds[side].append(pair[side])
                ratios[name].append(pair[name] / pair["groupby"])
            for which in ("big", "demo") if r % 2 == 0 else ("demo", "big"):
                index[which].append(index_times(preview_cfg if which == "big" else demo_cfg, args.repeats))

    med = {side: statistics.median(values) for side, values in seconds.items()}
    ratio = {name: statistics.median(values) for name, values in ratios.items()}
    page = {which: [statistics.median(t[i] for t in runs) for i in range(3)] for which, runs in index.items()}
    social = args.editions * (len(SOCIAL) + 1)
    table = Table(title=f"status: {args.rows:,} email and {social:,} social/dev.to rows over {args.editions} "
                        f"editions; preview: {args.rows:,} rows in one edition; medians of {args.rounds} "
                        f"paired rounds (databases in {args.cache}, {built:.0f} s to make or find)")
    for col in ("measure", "ms", "vs baseline"):
        table.add_column(col, justify="left" if col == "measure" else "right")
    table.add_row("baseline: one raw GROUP BY (edition, channel, status), new process",
                  f"{med['groupby'] * 1000:.0f}", "1.00")
    for name in ("status", "status --json"):
        table.add_row(f"pipeline {name} (whole command)", f"{med[name] * 1000:.0f}",
                      f"{ratio[name]:.2f} (paired)")
    labels = ("first request (renders the posts too)", "first request after a ledger write", "repeated")
    for i, label in enumerate(labels):
        table.add_row(f"preview GET /, demo ledger: {label}", f"{page['demo'][i]:.1f}", "")
        table.add_row(f"preview GET /, {args.rows:,} rows: {label}", f"{page['big'][i]:.1f}",
                      f"{page['big'][i] / page['demo'][i]:.2f} of the demo's")
    Console(width=140).print(table)
    print(f"ratio {ratio['status']:.2f} json_ratio {ratio['status --json']:.2f} "
          f"index_ms {page['big'][2]:.1f}")


if __name__ == "__main__":
    main()
