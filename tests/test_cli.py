"""The command line, run the way a user runs it: `python -m pipeline` in a subprocess."""

from __future__ import annotations

import email
import email.policy
import json
import re

import pytest

from tests.conftest import SEED_SLUG, add_channel

SLUGS = (SEED_SLUG, "2024-03-12-your-first-infusion", "mood-journal")
TITLES = {
    SEED_SLUG: "Ketamine’s Potential Ability to Heal Neurological Damage",
    "2024-03-12-your-first-infusion": "Your First Infusion: What to Expect, Step by Step",
    "mood-journal": "Un journal d’humeur: track your mood in five minutes a day 🌿",
}
FILES = ("email.html", "email.txt", "email.eml", "snippets.json")
LIMITS = {"x": 280, "mastodon": 500, "bluesky": 300}
NO_TITLE = "---\ndate: 2024-01-01\n---\n\nBody.\n"
NO_FRONT_MATTER = "Just text, no front matter.\n"


def _lines_naming(text: str, name: str) -> list[str]:
    return [line for line in text.splitlines() if name in line]


@pytest.fixture
def previewed(project, run_cli, tmp_path):
    """`preview --out DIR` on the shipped project: (result, DIR)."""
    out = tmp_path / "preview"
    result = run_cli("preview", "--out", out, cwd=project)
    assert result.returncode == 0, result.stderr
    return result, out


# -- check --------------------------------------------------------------------------------------

def test_check_shipped_project_exits_0(project, run_cli):
    result = run_cli("check", cwd=project)
    assert result.returncode == 0, result.stderr
    assert "OK: config, templates and posts are valid" in result.stdout
    assert "error" not in result.stderr


def test_check_reports_every_broken_post_on_one_line(project, write_post, run_cli):
    write_post("a-bad.md", NO_TITLE)
    write_post("b-bad.md", NO_FRONT_MATTER)
    result = run_cli("check", cwd=project)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert _lines_naming(result.stderr, "a-bad.md") == [
        "error: posts/a-bad.md: front matter: 'title' is missing; add `title: ...`"]
    assert _lines_naming(result.stderr, "b-bad.md") == [
        "error: posts/b-bad.md: no front matter: start the file with a --- block holding title: and date:"]
    assert "2 problem(s) found" in result.stderr


def test_check_reports_impossible_date_without_traceback(project, write_post, run_cli):
    write_post("bad-date.md", "---\ntitle: T\ndate: 2020-13-01\n---\n\nBody.\n")
    result = run_cli("check", cwd=project)
    assert "Traceback" not in result.stderr
    assert result.returncode == 1
    assert len(_lines_naming(result.stderr, "posts/bad-date.md")) == 1


# -- preview ------------------------------------------------------------------------------------

def test_preview_writes_every_file_for_every_post(previewed):
    _, out = previewed
    assert sorted(p.name for p in out.iterdir()) == sorted(SLUGS)
    for slug in SLUGS:
        for name in FILES:
            path = out / slug / name
            assert path.is_file(), path
            assert path.stat().st_size > 0, path


def test_preview_prints_a_table_with_each_slug(previewed):
    result, _ = previewed
    for slug in SLUGS:
        assert slug in result.stdout
    assert "Wrote 3 preview(s)" in result.stdout


def test_preview_html_and_text_hold_the_title_and_sample_recipient(previewed):
    _, out = previewed
    html = (out / "mood-journal" / "email.html").read_text(encoding="utf-8")
    text = (out / "mood-journal" / "email.txt").read_text(encoding="utf-8")
    assert html.lstrip().lower().startswith("<!doctype html")
    assert "Un journal d’humeur" in html
    assert "Un journal d’humeur" in text
    assert "Alex" in text


def test_preview_snippets_have_text_length_and_limit(previewed):
    _, out = previewed
    for slug in SLUGS:
        snippets = json.loads((out / slug / "snippets.json").read_text(encoding="utf-8"))
        assert set(LIMITS) <= set(snippets)
        for network, limit in LIMITS.items():
            snippet = snippets[network]
            assert {"text", "length", "limit"} <= set(snippet), (slug, network)
            assert snippet["limit"] == limit
            assert isinstance(snippet["length"], int)
            assert 0 < snippet["length"] <= snippet["limit"], (slug, network)
            assert snippet["text"].strip()


def test_preview_eml_is_multipart_alternative_with_title_subject(previewed):
    _, out = previewed
    for slug in SLUGS:
        raw = (out / slug / "email.eml").read_bytes()
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert message.get_content_type() == "multipart/alternative"
        assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
        assert message["Subject"] == TITLES[slug]
        assert message["To"] == "reader@example.com"
        assert TITLES[slug] in message.get_body(("plain",)).get_content()


def test_preview_writes_nothing_outside_out(project, run_cli, tmp_path):
    before = sorted(str(p.relative_to(project)) for p in project.rglob("*"))
    out = tmp_path / "preview"
    result = run_cli("preview", "--out", out, cwd=project)
    assert result.returncode == 0, result.stderr
    after = sorted(str(p.relative_to(project)) for p in project.rglob("*"))
    assert after == before
    assert not (project / "state").exists()
    assert not (project / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preview", "project"]


def test_preview_one_slug_renders_only_that_post(project, run_cli, tmp_path):
    out = tmp_path / "preview"
    result = run_cli("preview", "mood-journal", "--out", out, cwd=project)
    assert result.returncode == 0, result.stderr
    assert [p.name for p in out.iterdir()] == ["mood-journal"]
    assert sorted(p.name for p in (out / "mood-journal").iterdir()) == sorted(FILES)
    assert "mood-journal" in result.stdout
    assert SEED_SLUG not in result.stdout
    assert "Wrote 1 preview(s)" in result.stdout


def test_preview_with_a_broken_post_writes_the_others_and_exits_1(project, write_post, run_cli, tmp_path):
    write_post("broken.md", NO_TITLE)
    out = tmp_path / "preview"
    result = run_cli("preview", "--out", out, cwd=project)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(SLUGS)
    assert _lines_naming(result.stderr, "broken.md") == [
        "error: posts/broken.md: front matter: 'title' is missing; add `title: ...`"]


def test_preview_unknown_slug_exits_1_naming_it(project, run_cli, tmp_path):
    out = tmp_path / "preview"
    result = run_cli("preview", "no-such-post", "--out", out, cwd=project)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert len(_lines_naming(result.stderr, "no post with slug 'no-such-post'")) == 1
    assert not out.exists() or list(out.iterdir()) == []


# -- finding the config ----------------------------------------------------------------------

def test_config_option_from_another_cwd(project, run_cli, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = run_cli("--config", project / "config.yaml", "check", cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    assert "OK: config, templates and posts are valid" in result.stdout


def test_config_option_relative_path_preview_uses_project_posts(project, run_cli, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = run_cli("--config", "../project/config.yaml", "preview", "--out", "prev", cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (elsewhere / "prev").iterdir()) == sorted(SLUGS)


def test_pipeline_config_env_is_used(project, run_cli, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = run_cli("check", cwd=elsewhere, env={"PIPELINE_CONFIG": str(project / "config.yaml")})
    assert result.returncode == 0, result.stderr
    assert "OK: config, templates and posts are valid" in result.stdout


def test_missing_config_is_one_line_and_exit_1(run_cli, tmp_path):
    result = run_cli("check", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: config.yaml: not found (pass --config PATH or set PIPELINE_CONFIG)"]


def test_missing_config_option_names_the_file(run_cli, tmp_path):
    result = run_cli("--config", tmp_path / "nope.yaml", "preview", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'nope.yaml'}: not found (pass --config PATH or set PIPELINE_CONFIG)"]


def test_bad_config_is_reported_without_traceback(project, run_cli):
    cfg = project / "config.yaml"
    text = cfg.read_text(encoding="utf-8").replace("timezone: America/New_York", "timezone: Mars/Base")
    cfg.write_text(text, encoding="utf-8")
    line = text.splitlines().index("timezone: Mars/Base") + 1
    result = run_cli("check", cwd=project)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: config.yaml:{line}: timezone: must be an IANA time zone such as America/New_York or UTC "
        "(got 'Mars/Base')"]


def test_help_works(run_cli, tmp_path):
    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout
    assert "check" in result.stdout
    assert "preview" in result.stdout


def test_check_names_a_social_channel_whose_network_is_off(project, run_cli):
    add_channel(project, "page", "facebook", {"page_id": "5678", "access_token": "${FACEBOOK_PAGE_TOKEN}"})
    result = run_cli("check", cwd=project, env={"FACEBOOK_PAGE_TOKEN": "t0ken"})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    [line] = [x for x in (result.stdout + result.stderr).splitlines() if "facebook network" in x]
    assert re.search(r"config\.yaml:\d+: channels\.page: the facebook network is not enabled under "
                     r"`networks:`; add `facebook: \{\}` there", line), line
    assert "t0ken" not in result.stdout + result.stderr
