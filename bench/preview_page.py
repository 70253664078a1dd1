"""How fast the preview page answers: a post page when nothing changed (served from the snapshot)
and right after a post was saved (every post rendered again), against the baseline measured in the
same run: rendering all posts directly (`render_posts`, what `pipeline preview` does before it
writes files). Served by uvicorn on loopback and fetched with httpx; medians over repeated rounds.

    python bench/preview_page.py [--rounds 15] [--posts 30]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.config import load_config  # noqa: E402
from pipeline.preview import render_posts  # noqa: E402
from pipeline.web.preview_page import create_preview_app  # noqa: E402
from tests.servers import AppServers  # noqa: E402

SEED = "2020-09-01-ketamine-neurological-damage"


def project(folder: Path, extra: int) -> Path:
    """The shipped project plus `extra` copies of the seed post (a bigger posts folder)."""
    shutil.copy(ROOT / "config.yaml", folder / "config.yaml")
    for name in ("posts", "templates"):
        shutil.copytree(ROOT / name, folder / name)
    seed = (folder / "posts" / f"{SEED}.md").read_text(encoding="utf-8")
    for i in range(extra):
        (folder / "posts" / f"2021-01-{i % 28 + 1:02d}-copy-{i}.md").write_text(
            seed.replace("date: 2020-09-01", f"date: 2021-01-{i % 28 + 1:02d}"), encoding="utf-8")
    return folder / "config.yaml"


def median_ms(action, rounds: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--posts", type=int, default=30, help="copies of the seed post to add")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config_path = project(Path(tmp), args.posts)
        config = load_config(config_path)
        count = len(render_posts(config).rendered)
        servers = AppServers()
        base = servers.start(create_preview_app(config_path))
        seed = Path(tmp) / "posts" / f"{SEED}.md"
        try:
            with httpx.Client(base_url=base, timeout=60) as client:
                page = lambda: client.get(f"/posts/{SEED}").raise_for_status()  # noqa: E731
                page()

                def saved_then_page() -> None:
                    os.utime(seed, ns=(time.time_ns(), time.time_ns()))
                    page()

                baseline = median_ms(lambda: render_posts(load_config(config_path)), args.rounds)
                cached = median_ms(page, args.rounds)
                changed = median_ms(saved_then_page, args.rounds)
        finally:
            servers.stop()
    table = Table(title=f"Preview page, {count} posts, median of {args.rounds} rounds")
    for column in ("measure", "ms", "ratio to baseline"):
        table.add_column(column, justify="right" if column != "measure" else "left")
    table.add_row("baseline: render_posts (all posts)", f"{baseline:.1f}", "1.00")
    table.add_row("post page, nothing changed", f"{cached:.1f}", f"{cached / baseline:.2f}")
    table.add_row("post page after a post was saved", f"{changed:.1f}", f"{changed / baseline:.2f}")
    Console().print(table)
    print(f"ratio cached {cached / baseline:.3f} saved {changed / baseline:.3f} page_ms {cached:.1f}")


if __name__ == "__main__":
    main()
