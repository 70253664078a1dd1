"""The command line. The only module that prints or sets exit codes; the library logs and raises."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from pipeline.config import Config, load_config
from pipeline.errors import PipelineError
from pipeline.models import Problem, Severity
from pipeline.preview import Batch, render_posts, write_preview

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def report(problems: list[Problem] | tuple[Problem, ...]) -> None:
    """Every problem on one line, errors in red, warnings in yellow."""
    for p in problems:
        style = "red" if p.severity is Severity.ERROR else "yellow"
        err.print(f"[{style}]{p.severity.value}:[/{style}] {p}", markup=True, highlight=False)


class _Context:
    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self._config: Config | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.config_path)
        return self._config


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="config file (default: $PIPELINE_CONFIG or ./config.yaml)")
@click.option("-v", "--verbose", count=True, help="more log output (-vv for debug)")
@click.version_option(package_name="pipeline")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, verbose: int) -> None:
    """Newsletter and social-post publishing pipeline."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx.obj = _Context(config_path)


@cli.command()
@click.option("--strict", is_flag=True, help="treat warnings as errors")
@click.pass_obj
def check(obj: _Context, strict: bool) -> None:
    """Validate config, templates and every post; print every problem."""
    from pipeline.check import check_all

    problems = check_all(obj.config)
    report(problems)
    errors = [p for p in problems if p.severity is Severity.ERROR or strict]
    if errors:
        err.print(f"{len(errors)} problem(s) found")
        sys.exit(1)
    warnings = len(problems)
    out.print(f"OK: config, templates and posts are valid ({warnings} warning(s))")


@cli.command()
@click.argument("slugs", nargs=-1)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="output folder (default: preview.out in config, out/preview)")
@click.pass_obj
def preview(obj: _Context, slugs: tuple[str, ...], out_dir: str | None) -> None:
    """Write each post's email (HTML, text, .eml) and snippets to disk, and print a table."""
    config = obj.config
    batch = render_posts(config, slugs)
    target = Path(out_dir) if out_dir else config.path(config.preview.out)
    for item in batch.rendered:
        write_preview(item, config, target)
    _preview_table(batch, config)
    report(batch.problems)
    out.print(f"Wrote {len(batch.rendered)} preview(s) to {target}/")
    if batch.errors:
        sys.exit(1)


def _preview_table(batch: Batch, config: Config) -> None:
    networks = [n for n, s in config.networks.items() if s.enabled]
    table = Table(show_lines=False)
    for column in ("post", "subject", "email", *networks, "lint"):
        table.add_column(column, overflow="fold")
    for item in batch.rendered:
        lint = len(item.edition.lint)
        table.add_row(item.post.slug, item.edition.subject, f"{item.edition.size / 1000:.1f} KB",
                      *(f"{s.length}/{s.limit}" for s in item.snippets.values()),
                      f"{lint} warning(s)" if lint else "ok")
    out.print(table)


def main() -> None:
    """Entry point: run the CLI; a user's mistake is one line on stderr and exit code 1."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        err.print("aborted")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except PipelineError as exc:
        for line in str(exc).splitlines():
            err.print(f"[red]error:[/red] {line}", markup=True, highlight=False)
        sys.exit(1)
