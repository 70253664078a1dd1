"""Every command's help, as `pipeline --help` and `pipeline COMMAND --help` show it: a summary
that is not cut mid-sentence, help text on every option, and an example line."""

from __future__ import annotations

from collections.abc import Iterator

import click
import pytest
from click.testing import CliRunner

from pipeline.cli import cli

Path = tuple[str, ...]


def _commands(group: click.Group, path: Path = ()) -> Iterator[tuple[Path, click.Command]]:
    for name, command in sorted(group.commands.items()):
        yield (*path, name), command
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))


COMMANDS = list(_commands(cli))


def _help(*args: str) -> str:
    result = CliRunner().invoke(cli, [*args, "--help"], terminal_width=100)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("group", [(), *(p for p, c in COMMANDS if isinstance(c, click.Group))],
                         ids=lambda p: " ".join(p) or "pipeline")
def test_listed_summaries_are_whole_sentences(group: Path) -> None:
    listing = _help(*group).split("Commands:", 1)[1]
    for line in listing.strip().splitlines():
        assert not line.rstrip().endswith("..."), f"summary cut short: {line.strip()!r}"
        assert line.rstrip().endswith((".", ")")), f"summary is not a sentence: {line.strip()!r}"


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_option_has_help_and_the_command_an_example(path: Path, command: click.Command) -> None:
    bare = [p.opts[0] for p in command.params
            if isinstance(p, click.Option) and not p.help and p.opts[0] != "--help"]
    assert not bare, f"`pipeline {' '.join(path)}`: options without help: {bare}"
    text = _help(*path)
    assert "Example" in text and f"pipeline {path[0]}" in text.split("Example", 1)[1]
