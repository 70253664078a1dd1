"""`make bench`: every benchmark in turn, then docs/benchmarks.md written from
bench/benchmarks.md.j2 with each one's latest table and the machine it ran on.

Each benchmark is a script of this folder that prints a table with a baseline measured in the same
run and ends with a headline line (`ratio ...`). Its whole output is kept in bench/results/NAME.txt
with the machine and commit it ran on (bench/results/NAME.json), so that running one benchmark
again (`--only send`) rewrites the page with the others' latest runs kept.

    python bench/suite.py [--only NAME ...] [--n N] [--list]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import jinja2

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
PAGE = ROOT / "docs" / "benchmarks.md"
TEMPLATE = HERE / "benchmarks.md.j2"
# `ratio 0.91 ...`, `ratio seed 2.5 ...`, `ratio_help 1.4 ...`: a name, maybe a label, a number.
HEADLINE = re.compile(r"ratio\w*(?:\s+[a-z_]+)?\s+-?\d")


@dataclass(frozen=True, kw_only=True)
class Bench:
    """One benchmark: its name (the key in the template), its script and its arguments."""

    name: str
    script: str
    args: tuple[str, ...] = ()
    sends: bool = False          # takes --n (the number of subscribers)


BENCHES = (
    Bench(name="render", script="render.py"),
    Bench(name="startup", script="startup.py"),
    Bench(name="send", script="send.py", sends=True),
    # The second size, where the publisher's fixed start-up weighs most: five rounds.
    Bench(name="send_20k", script="send.py", args=("--n", "20000", "--rounds", "5")),
    # The same send with the state in PostgreSQL, inline and through 1 and 2 `pipeline worker`s.
    Bench(name="send_postgresql", script="send.py",
          args=("--n", "20000", "--state", "postgresql", "--workers", "1,2")),
    Bench(name="status", script="status.py"),
    Bench(name="import", script="import.py"),
    Bench(name="preview_page", script="preview_page.py"),
)


def machine() -> dict[str, str]:
    """What the numbers were measured on: CPU, cores, memory, system, Python, commit, date."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        memory = f"{kb / 1024 / 1024:.0f} GiB"
    except (OSError, IndexError, ValueError):
        pass
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    return {"cpu": cpu, "cores": str(os.cpu_count()), "memory": memory,
            "system": f"{platform.system()} {platform.release()}",
            "python": platform.python_version(), "commit": commit + (" with local changes" if dirty else ""),
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}


def run(bench: Bench, n: int | None) -> tuple[str, float, int]:
    """Run one benchmark, its output shown as it comes; (output, seconds, exit code)."""
    args = [*bench.args, *(["--n", str(n)] if bench.sends and n else [])]
    env = {**os.environ, "COLUMNS": "140", "PYTHONUNBUFFERED": "1"}   # rich's tables at full width
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, str(HERE / bench.script), *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        sys.stdout.write(line)
        lines.append(line)
    return "".join(lines), time.monotonic() - start, proc.wait()


def headline(output: str) -> str:
    """The benchmark's last line (`ratio ...`), or "" when it printed none."""
    lines = [line.strip() for line in output.strip().splitlines() if line.strip()]
    return lines[-1] if lines and HEADLINE.match(lines[-1]) else ""


def load_results() -> dict[str, dict[str, object]]:
    """The latest result of each benchmark that has one: its output, headline, machine, seconds."""
    results: dict[str, dict[str, object]] = {}
    for bench in BENCHES:
        text = RESULTS / f"{bench.name}.txt"
        meta = RESULTS / f"{bench.name}.json"
        if text.exists() and meta.exists():
            output = text.read_text(encoding="utf-8").rstrip()
            results[bench.name] = {"output": output, "headline": headline(output),
                                   **json.loads(meta.read_text(encoding="utf-8"))}
    return results


def render_page(results: dict[str, dict[str, object]]) -> str:
    """docs/benchmarks.md's text: the template filled with `results`."""
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return env.from_string(TEMPLATE.read_text(encoding="utf-8")).render(results=results, benches=BENCHES)


def write_page() -> Path:
    """docs/benchmarks.md from the template and the latest result of each benchmark."""
    PAGE.write_text(render_page(load_results()), encoding="utf-8")
    return PAGE


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=[b.name for b in BENCHES], help="run only these")
    parser.add_argument("--n", type=int, default=None, help="subscribers for the send benchmark")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--page-only", action="store_true", help="rewrite docs/benchmarks.md, run nothing")
    options = parser.parse_args()
    if options.list:
        for bench in BENCHES:
            print(f"{bench.name:14} bench/{bench.script}")
        return 0
    RESULTS.mkdir(exist_ok=True)
    failed = []
    for bench in BENCHES if not options.page_only else ():
        if options.only and bench.name not in options.only:
            continue
        print(f"\n== {bench.name}: bench/{bench.script}", flush=True)
        output, seconds, code = run(bench, options.n)
        if code != 0:
            failed.append(bench.name)
            print(f"== {bench.name} failed (exit {code}); its previous result is kept", flush=True)
            continue
        (RESULTS / f"{bench.name}.txt").write_text(output, encoding="utf-8")
        (RESULTS / f"{bench.name}.json").write_text(json.dumps(
            {"machine": machine(), "seconds": round(seconds)}, indent=2) + "\n", encoding="utf-8")
    page = write_page()
    print(f"\n{page.relative_to(ROOT)} written.")
    for bench in BENCHES:
        result = RESULTS / f"{bench.name}.txt"
        if result.exists():
            print(f"  {bench.name:14} {headline(result.read_text(encoding='utf-8')) or '(no headline)'}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
