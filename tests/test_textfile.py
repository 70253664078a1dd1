"""YAML the user writes (config.yaml, front matter) with its alias expansion bounded: an alias
bomb, a self-referring alias or a document nested thousands deep is one line naming the file,
in bounded time and memory, and the other posts go on."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.intake.textfile import MAX_YAML_NODES, YamlTooLarge, load_yaml

# Nine levels of nine: 9**9 (387 million) strings once expanded; a few hundred bytes of text.
BOMB = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{c}: &{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n" for p, c in zip("abcdefgh", "bcdefghi",
                                                                                   strict=True))
# Memory a child process may use: an expanded bomb needs gigabytes.
LIMIT = 1 << 30


def test_load_yaml_refuses_a_bomb_before_building_it() -> None:
    with pytest.raises(YamlTooLarge, match=r"^line \d+: its aliases \(\*name\) expand to more than"):
        load_yaml(BOMB)


def test_load_yaml_refuses_a_self_referring_alias() -> None:
    with pytest.raises(YamlTooLarge):
        load_yaml("a: &a [1, *a]\n")


def test_load_yaml_refuses_deep_nesting() -> None:
    with pytest.raises(YamlTooLarge, match="nested too deeply"):
        load_yaml("[" * 5000 + "]" * 5000)


def test_load_yaml_keeps_ordinary_aliases_and_lines() -> None:
    data, node = load_yaml("base: &base {tz: UTC}\none: *base\ntwo: [*base, *base]\n")
    assert data == {"base": {"tz": "UTC"}, "one": {"tz": "UTC"}, "two": [{"tz": "UTC"}] * 2}
    assert isinstance(node, yaml.MappingNode)
    wide = "tags: [" + ", ".join(f"t{i}" for i in range(MAX_YAML_NODES // 2)) + "]\n"
    assert len(load_yaml(wide)[0]["tags"]) == MAX_YAML_NODES // 2


def _run_limited(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """`python -m pipeline ARGS` with its address space capped, so a bomb that got expanded
    fails the test with MemoryError instead of taking the machine."""
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (LIMIT * 2, LIMIT * 2))

    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120, preexec_fn=cap)


def test_a_bomb_in_config_is_one_line(project: Path) -> None:
    cfg = project / "config.yaml"
    cfg.write_text(cfg.read_text(encoding="utf-8") + "\nx-anchors:\n" + "".join(
        "  " + line + "\n" for line in BOMB.splitlines()), encoding="utf-8")
    result = _run_limited(["check"], project)
    assert result.returncode == 1, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {cfg.name}: line ") and "alias bomb" in line
    assert "Traceback" not in result.stderr


def test_a_bomb_in_front_matter_is_one_line_and_the_other_posts_go_on(project: Path) -> None:
    post = project / "posts" / "2024-06-01-bomb.md"
    post.write_text("---\ntitle: Bomb\ndate: 2024-06-01\n" + BOMB + "tags: *i\n---\n\nBody.\n",
                    encoding="utf-8")
    result = _run_limited(["preview", "--out", str(project / "out" / "p")], project)
    assert "Traceback" not in result.stderr and "MemoryError" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "2024-06-01-bomb.md" in line]
    assert len(errors) == 1 and "front matter: line " in errors[0] and "alias bomb" in errors[0]
    assert (project / "out" / "p" / "mood-journal" / "email.html").exists()
