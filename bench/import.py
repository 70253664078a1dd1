"""Import speed: `pipeline subscribers import` (`import_csv`) of N synthetic rows into a fresh
state database, against a baseline measured in the same run: read the same CSV, validate each
address with the same `normalize()`, and insert all rows with one executemany (no lookups, no
counts, no repeated addresses handled), into a fresh database of the same schema and settings.

Each measurement runs in its own interpreter (so its peak RSS is its own, read from wait4) on a
new database; rounds are paired and alternate which goes first; medians are compared. Prints a
table; the last line is `ratio <import/baseline rows/s> peak_rss_mb <import's MB>`.

    python bench/import.py [--n 100000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table
from sqlalchemy import insert

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.config import load_config  # noqa: E402
from pipeline.store.engine import engine_for  # noqa: E402
from pipeline.store.schema import subscribers  # noqa: E402
from pipeline.store.subscribers import count, import_csv, normalize  # noqa: E402

TAGS = ["news", "events", "offers", "research", "clinic", "vip"]


def write_csv(path: Path, n: int) -> None:
    """N rows of distinct addresses with names and 0-2 tags, as a user's export would have them."""
    rng = random.Random(14)
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["email", "name", "tags"])
        for i in range(n):
            writer.writerow([f"reader.{i}@{rng.choice(['example.com', 'Example.org', 'mail.example.net'])}",
                             f"Reader {i}", ";".join(rng.sample(TAGS, rng.randrange(3)))])


def new_project(tmp: Path, name: str) -> Path:
    """A folder with the project's config.yaml (its `state:` is relative: a new database here)."""
    project = tmp / name
    project.mkdir()
    shutil.copy(ROOT / "config.yaml", project / "config.yaml")
    return project / "config.yaml"


def child(kind: str, config_path: Path, csv_path: Path) -> None:
    """Run one measurement in this process; prints {"seconds", "rows"} as JSON."""
    engine = engine_for(load_config(config_path))          # schema created before timing
    start = time.perf_counter()
    if kind == "import":
        result = import_csv(engine, csv_path)
        assert result.added > 0 and not result.errors, result
    else:
        now = datetime.now(UTC)
        rows = []
        with csv_path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            next(reader)
            for address, name, tags in reader:
                email = normalize(address)
                rows.append({"uid": secrets.token_hex(16), "email": email, "email_key": email.lower(),
                             "name": name.strip() or None, "tags": tags.replace(";", ","),
                             "status": "active", "source": csv_path.name, "created_at": now,
                             "updated_at": now, "consent_at": now,
                             "consent_source": f"import:{csv_path.name}"})
        with engine.begin() as conn:
            conn.execute(insert(subscribers), rows)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "rows": count(engine)}))


def measure(kind: str, config_path: Path, csv_path: Path) -> tuple[float, float, int]:
    """(seconds, peak RSS in MB, rows in the database) of one measurement in a new interpreter."""
    proc = subprocess.Popen([sys.executable, __file__, "--child", kind, "--config", str(config_path),
                             "--csv", str(csv_path)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    out, err = proc.communicate()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{kind} failed:\n{out}\n{err}")
    report = json.loads(out.strip().splitlines()[-1])
    return report["seconds"], usage.ru_maxrss / 1024, report["rows"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="rows (default 100,000)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--child", choices=["import", "baseline"], help=argparse.SUPPRESS)
    parser.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--csv", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.config, args.csv)
        return
    times: dict[str, list[float]] = {"import": [], "baseline": []}
    rss: dict[str, list[float]] = {"import": [], "baseline": []}
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = Path(tmp) / "subscribers.csv"
        write_csv(csv_path, args.n)
        size = csv_path.stat().st_size
        for r in range(args.rounds):
            for kind in ("import", "baseline") if r % 2 == 0 else ("baseline", "import"):
                seconds, peak, rows = measure(kind, new_project(Path(tmp), f"{kind}-{r}"), csv_path)
                if rows != args.n:
                    raise SystemExit(f"{kind} stored {rows:,} rows, not {args.n:,}")
                times[kind].append(seconds)
                rss[kind].append(peak)
    median = {kind: statistics.median(values) for kind, values in times.items()}
    rate = {kind: args.n / seconds for kind, seconds in median.items()}
    peak_rss = {kind: max(values) for kind, values in rss.items()}
    table = Table(title=f"{args.n:,} new subscribers ({size / 1e6:.1f} MB CSV) into SQLite, "
                        f"median of {args.rounds} rounds")
    for col in ("importer", "seconds", "rows/s", "peak RSS MB"):
        table.add_column(col, justify="right")
    table.add_row("pipeline import_csv (batches, counts, streamed)", f"{median['import']:.2f}",
                  f"{rate['import']:.0f}", f"{peak_rss['import']:.0f}")
    table.add_row("baseline: normalize() + one executemany INSERT", f"{median['baseline']:.2f}",
                  f"{rate['baseline']:.0f}", f"{peak_rss['baseline']:.0f}")
    Console(width=120).print(table)
    print(f"ratio {rate['import'] / rate['baseline']:.2f} peak_rss_mb {peak_rss['import']:.0f}")
    _ = resource  # peak RSS comes from wait4's rusage of each measurement's own process


if __name__ == "__main__":
    main()
