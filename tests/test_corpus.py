"""Robustness: the preview over 102 real Jekyll posts (their own front matter, Liquid tags, odd
dates), in-process and through the command line."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from slugify import slugify

from pipeline.config import Config, load_config
from pipeline.intake.posts import load_posts
from pipeline.models import Severity
from pipeline.networks.registry import NETWORKS
from pipeline.preview import Batch, render_posts
from tests.conftest import FIXTURES

CORPUS = FIXTURES / "jekyll-posts"
CORPUS_FILES = sorted(p.name for p in CORPUS.iterdir() if p.suffix in (".md", ".markdown"))
LIQUID = re.compile(r"\{%.*?%\}|\{\{.*?\}\}", re.S)
# One post has a date no parser can read (the year twice): bad input, it must be an error.
BAD_DATE = "2023-01-29-jekyll-3-9-3-released.markdown"
LIQUID_POST = "2014-03-27-jekyll-1-5-1-released.markdown"   # {% highlight ruby %} blocks


@pytest.fixture
def corpus_config(project: Path) -> Config:
    """The temporary project with its posts/ replaced by the Jekyll corpus."""
    posts = project / "posts"
    shutil.rmtree(posts)
    posts.mkdir()
    for name in CORPUS_FILES:
        shutil.copy(CORPUS / name, posts / name)
    return load_config(project / "config.yaml")


def _where(name: str) -> str:
    return f"posts/{name}"


def _errors_by_file(batch: Batch) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {name: [] for name in CORPUS_FILES}
    for problem in batch.errors:
        named = [n for n in CORPUS_FILES if n in problem.where]
        assert len(named) == 1, f"error names no corpus file (or several): {problem}"
        out[named[0]].append(problem.message)
    return out


def test_corpus_is_there():
    assert len(CORPUS_FILES) == 102
    assert BAD_DATE in CORPUS_FILES and LIQUID_POST in CORPUS_FILES


def test_preview_renders_every_post_or_reports_one_error_naming_its_file(corpus_config):
    batch = render_posts(corpus_config)          # must not raise, whatever the posts hold
    rendered = {item.post.path: item for item in batch.rendered}
    errors = _errors_by_file(batch)
    failed = {name for name, messages in errors.items() if messages}

    for name in CORPUS_FILES:
        if _where(name) in rendered:
            assert errors[name] == [], f"{name} rendered but also has errors: {errors[name]}"
        else:
            assert len(errors[name]) == 1, f"{name}: not rendered, errors: {errors[name]}"
    assert len(rendered) + len(failed) == 102
    assert len(rendered) >= 98
    assert BAD_DATE in failed
    assert "'date'" in errors[BAD_DATE][0] and "2023-01-29 18:30:22 2023 -0800" in errors[BAD_DATE][0]

    for path, item in rendered.items():
        post, edition = item.post, item.edition
        assert set(item.snippets) == {"x", "mastodon", "bluesky"}, path
        for name, s in item.snippets.items():
            limit = corpus_config.network_limit(name)
            assert s.length == NETWORKS[name]().count(s.text) <= limit, (path, name)
            assert s.link.uri.startswith(post.canonical_url), (path, name)
            assert s.text.endswith(NETWORKS[name]().link_text(s.link.uri)), (path, name)
        assert edition.html.strip() and "<html" in edition.html, path
        assert post.canonical_url.startswith("https://www.rtrwellnesscenter.com/")
        assert post.canonical_url in edition.html, path
        assert f"Originally published at {post.canonical_url} on " in edition.text, path
        assert edition.subject == post.title


def test_liquid_tags_never_reach_the_email_outside_code(corpus_config):
    """#13: template leftovers are rendered or dropped (with a warning); only code shows them."""
    batch = render_posts(corpus_config)
    checked = 0
    for item in batch.rendered:
        if not LIQUID.search((CORPUS / Path(item.post.path).name).read_text(encoding="utf-8")):
            continue
        checked += 1
        prose = re.sub(r"<pre.*?</pre>|<code.*?</code>", "", item.edition.html, flags=re.S)
        assert not re.search(r"\{%|%\}", prose), item.post.path
        for snippet in item.snippets.values():
            assert not LIQUID.search(snippet.text), (item.post.path, snippet.text)
    assert checked > 20


def test_liquid_highlight_block_becomes_a_code_block(corpus_config):
    slug = Path(LIQUID_POST).stem
    assert "{% highlight ruby %}" in (CORPUS / LIQUID_POST).read_text(encoding="utf-8")
    batch = render_posts(corpus_config, [slug])
    assert batch.errors == []
    (item,) = batch.rendered
    assert "{% highlight" not in item.edition.text and "{% endhighlight %}" not in item.edition.text
    assert 'sanitized_path("/tmp/foobar/jail", "..c:/..c:/..c:/etc/passwd")' in item.edition.text
    assert "{% highlight" not in item.edition.html
    pre = re.findall(r"<pre.*?</pre>", item.edition.html, flags=re.S)
    assert len(pre) >= 2 and any("sanitized_path" in block for block in pre)


def test_post_without_a_date_takes_it_from_its_file_name(corpus_config):
    # Jekyll takes the date from the file name (YYYY-MM-DD-title.md); so does the pipeline.
    undated = [n for n in CORPUS_FILES
               if not re.search(r"^date:", (CORPUS / n).read_text(encoding="utf-8").split("\n---", 1)[0],
                                re.M)]
    assert undated, "the corpus has no post without a date"
    loaded = load_posts(corpus_config)
    by_path = {p.path: p for p in loaded.posts}
    for name in undated:
        assert not [p for p in loaded.problems if p.severity is Severity.ERROR and name in p.where]
        post = by_path[_where(name)]
        assert post.date.date().isoformat() == name[:10], name
        assert post.slug == slugify(Path(name).stem)


@pytest.mark.slow
def test_cli_preview_over_the_corpus(corpus_config, run_cli, tmp_path):
    out = tmp_path / "preview"
    result = run_cli("--config", corpus_config.root / "config.yaml", "preview", "--out", out)
    assert result.returncode in (0, 1), result.stderr
    assert "Traceback" not in result.stderr
    assert "Traceback" not in result.stdout

    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    failed = set()
    for line in error_lines:
        named = [n for n in CORPUS_FILES if n in line]
        assert len(named) == 1, line
        assert named[0] not in failed, f"two error lines for {named[0]}"
        failed.add(named[0])
    assert BAD_DATE in failed
    assert result.returncode == (1 if error_lines else 0)

    folders = sorted(p for p in out.iterdir() if p.is_dir())
    assert len(folders) + len(failed) == 102
    assert f"Wrote {len(folders)} preview(s)" in result.stdout
    assert {f.name for f in folders} == {slugify(Path(n).stem) for n in CORPUS_FILES if n not in failed}
    for folder in folders:
        assert (folder / "email.html").read_text(encoding="utf-8").strip(), folder
        assert (folder / "email.txt").read_text(encoding="utf-8").strip(), folder
        data = json.loads((folder / "snippets.json").read_text(encoding="utf-8"))
        assert set(data) == {"x", "mastodon", "bluesky"}
        for name, s in data.items():
            assert s["length"] <= s["limit"] == corpus_config.network_limit(name), (folder.name, name)
            assert NETWORKS[name]().count(s["text"]) == s["length"], (folder.name, name)
