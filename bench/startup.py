"""How fast the commands start: whole processes, each against a baseline run in the same rounds.

    pipeline --help                     vs  python -c "import click"
    pipeline check                      vs  python -c "import jinja2, mjml"
    pipeline schedule --next 2          vs  python -c "import jinja2, mjml"
    an SMTP worker's start              vs  python -c pass
      (python -c "import pipeline.channels.smtp_worker")

`check` and `schedule` run on the shipped config, posts and templates, in a temporary copy of the
project whose state database is already created. Each row runs its command and its baseline in
paired rounds whose order alternates (A B, B A, ...); the ratio is taken pair by pair and its
median reported, so that a machine whose speed drifts during the run still compares like with
like. Times are wall-clock, from the start of the process to its exit; peak memory is the
process's own maximum resident set as the kernel accounts it (wait4's ru_maxrss), in MiB. Each
process is started by a small launcher (`python -S`), not by this script: a child's ru_maxrss
also counts the memory of the process it was forked from, so the launcher's few MiB are the
floor below which no peak can read (printed under the table). Compiled bytecode is cached (in a
temporary folder, whatever PYTHONDONTWRITEBYTECODE says) and one unmeasured run of each command
comes first, so that every process starts as a user's does: from cached bytecode.

Two more rows put `check` and `schedule` beside the libraries they import (every module outside
the standard library that the command had loaded when it exited), imported alone: what is left
between the two is the pipeline's own start-up and work.

    python bench/startup.py [--rounds 11]

The last line is `ratio_help X ratio_check Y ratio_schedule Z worker_ms MS worker_mb MIB`.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


@dataclass(frozen=True, kw_only=True)
class Run:
    """One finished process: wall seconds and peak resident set (MiB)."""

    seconds: float
    peak_mib: float


@dataclass(frozen=True, kw_only=True)
class Row:
    """A command and its baseline, measured in the same paired rounds."""

    name: str
    command: list[str]
    baseline_name: str
    baseline: list[str]
    goal: str


@dataclass(frozen=True, kw_only=True)
class Result:
    row: Row
    ours: list[Run]
    theirs: list[Run]
    ratios: list[float]

    def median(self, runs: list[Run], field: str) -> float:
        return statistics.median(getattr(r, field) for r in runs)

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)


def pipeline_command() -> list[str]:
    """The `pipeline` console script beside this interpreter (what a user runs), else -m."""
    script = Path(PYTHON).parent / "pipeline"
    return [str(script)] if script.is_file() else [PYTHON, "-m", "pipeline"]


# Starts argv[1:] with stdin and stdout on /dev/null, waits for it with wait4 and prints its wall
# seconds, its ru_maxrss (KiB) and its exit code. Standard library only, run without site.
LAUNCHER = """
import os, sys, time
command = sys.argv[1:]
start = time.perf_counter()
pid = os.posix_spawn(command[0], command, os.environ, file_actions=[
    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
    (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)])
_, status, usage = os.wait4(pid, 0)
print(time.perf_counter() - start, usage.ru_maxrss, os.waitstatus_to_exitcode(status))
"""


def environment(pycache: Path) -> dict[str, str]:
    """This environment, with compiled bytecode written to (and read from) `pycache`."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return {**env, "PYTHONPYCACHEPREFIX": str(pycache)}


def run_once(command: list[str], cwd: Path) -> Run:
    """Run `command` in `cwd` through the launcher: its wall time and peak memory. Exits the bench
    with the command's error output if it fails: a failing command would be timed for nothing."""
    with tempfile.TemporaryFile() as errors:
        done = subprocess.run([PYTHON, "-S", "-c", LAUNCHER, *command], cwd=cwd, stdout=subprocess.PIPE,
                              stderr=errors, text=True, check=True, env=environment(cwd / ".pycache"))
        seconds, maxrss, code = done.stdout.split()
        if int(code) != 0:
            errors.seek(0)
            sys.exit(f"{' '.join(command)} (in {cwd}) exited {code}:\n"
                     f"{errors.read().decode(errors='replace')}")
    return Run(seconds=float(seconds), peak_mib=int(maxrss) / 1024)   # ru_maxrss: KiB on Linux


# Runs `pipeline ARGS...` in this process and, at exit, writes the names of the modules outside
# the standard library that it loaded, in the order they were first imported.
PROBE = """
import atexit, runpy, sys
out, sys.argv = sys.argv[1], ["pipeline", *sys.argv[2:]]
def report():
    names = [n for n in sys.modules if n.split(".")[0] not in sys.stdlib_module_names
             and not n.startswith(("_", "pipeline"))]
    with open(out, "w", encoding="utf-8") as f:
        f.write(" ".join(names))
atexit.register(report)
runpy.run_module("pipeline", run_name="__main__")
"""


def libraries_of(args: list[str], cwd: Path) -> list[str]:
    """The modules outside the standard library that `pipeline ARGS` imports."""
    with tempfile.NamedTemporaryFile("r", encoding="utf-8", suffix=".txt") as names:
        subprocess.run([PYTHON, "-c", PROBE, names.name, *args], cwd=cwd, stdout=subprocess.DEVNULL,
                       check=True, env=environment(cwd / ".pycache"))
        return names.read().split()


def importing(modules: list[str]) -> list[str]:
    """A command that imports `modules` in order. A name that cannot be imported by itself (an
    alias a package registers for a vendored module) is passed over: its package loaded it."""
    return [PYTHON, "-c", "import importlib\n"
            f"for name in {modules!r}:\n"
            "    try:\n        importlib.import_module(name)\n"
            "    except ImportError:\n        pass\n"]


def measure(row: Row, cwd: Path, rounds: int) -> Result:
    """`rounds` pairs, the order alternating, after one unmeasured run of each (warm caches)."""
    run_once(row.command, cwd), run_once(row.baseline, cwd)
    ours: list[Run] = []
    theirs: list[Run] = []
    for r in range(rounds):
        if r % 2 == 0:
            a = run_once(row.command, cwd)
            b = run_once(row.baseline, cwd)
        else:
            b = run_once(row.baseline, cwd)
            a = run_once(row.command, cwd)
        ours.append(a)
        theirs.append(b)
    return Result(row=row, ours=ours, theirs=theirs,
                  ratios=[a.seconds / b.seconds for a, b in zip(ours, theirs, strict=True)])


def project(folder: Path) -> Path:
    """A copy of the shipped project (config, posts, templates) with its state database created."""
    shutil.copy(ROOT / "config.yaml", folder / "config.yaml")
    for name in ("posts", "templates"):
        shutil.copytree(ROOT / name, folder / name)
    subprocess.run([PYTHON, "-c", "from pipeline.config import load_config; "
                    "from pipeline.store.engine import engine_for; engine_for(load_config())"],
                   cwd=folder, check=True)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=11, help="paired rounds per row (at least 7)")
    args = parser.parse_args()
    if args.rounds < 7:
        parser.error("--rounds: at least 7, for a median worth quoting")
    pipeline = pipeline_command()
    renderers = [PYTHON, "-c", "import jinja2, mjml"]
    check, schedule = ["check"], ["schedule", "--next", "2"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = project(Path(tmp))
        rows = [
            Row(name="pipeline --help", command=[*pipeline, "--help"],
                baseline_name='python -c "import click"', baseline=[PYTHON, "-c", "import click"],
                goal="≤ 2"),
            Row(name="pipeline check", command=[*pipeline, *check],
                baseline_name='python -c "import jinja2, mjml"', baseline=renderers, goal="≤ 3"),
            Row(name="pipeline schedule --next 2", command=[*pipeline, *schedule],
                baseline_name='python -c "import jinja2, mjml"', baseline=renderers, goal="≤ 3"),
            Row(name="SMTP worker start", command=[PYTHON, "-c", "import pipeline.channels.smtp_worker"],
                baseline_name="python -c pass", baseline=[PYTHON, "-c", "pass"],
                goal="< 100 ms, < 20 MiB"),
            Row(name="pipeline check", command=[*pipeline, *check],
                baseline_name="the libraries check imports, alone",
                baseline=importing(libraries_of(check, folder)), goal=""),
            Row(name="pipeline schedule --next 2", command=[*pipeline, *schedule],
                baseline_name="the libraries schedule imports, alone",
                baseline=importing(libraries_of(schedule, folder)), goal=""),
        ]
        results = [measure(row, folder, args.rounds) for row in rows]
        floor = run_once(["/bin/true"], folder).peak_mib
    table = Table(title=f"Start-up: whole processes, medians of {args.rounds} paired rounds "
                        f"(order alternating); {platform.python_implementation()} "
                        f"{platform.python_version()}, {os.cpu_count()} CPUs")
    for column in ("command", "ms", "peak MiB", "baseline", "ms", "peak MiB", "ratio", "goal"):
        table.add_column(column, justify="left" if column in ("command", "baseline") else "right")
    for result in results:
        table.add_row(result.row.name, f"{result.median(result.ours, 'seconds') * 1000:.0f}",
                      f"{result.median(result.ours, 'peak_mib'):.1f}", result.row.baseline_name,
                      f"{result.median(result.theirs, 'seconds') * 1000:.0f}",
                      f"{result.median(result.theirs, 'peak_mib'):.1f}", f"{result.ratio:.2f}",
                      result.row.goal)
    Console(width=160).print(table)
    print("ratio = the median of the per-round ratios (command / baseline) of wall time; "
          f"no peak reads below the launcher's own, {floor:.1f} MiB.")
    help_, check_, schedule_, worker = results[:4]
    print(f"ratio_help {help_.ratio:.2f} ratio_check {check_.ratio:.2f} ratio_schedule {schedule_.ratio:.2f} "
          f"worker_ms {worker.median(worker.ours, 'seconds') * 1000:.0f} "
          f"worker_mb {worker.median(worker.ours, 'peak_mib'):.1f}")


if __name__ == "__main__":
    main()
