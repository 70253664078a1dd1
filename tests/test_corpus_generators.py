"""Real blogs in, as they are: 200+ posts of eight site generators (tests/corpus/, see its
SOURCES.md), each read from its own folder layout as a user would point `posts:` at it.

What renders and what is refused (and why) is pinned here; no file is skipped silently; no
snippet holds a reference marker or template syntax; every email has its footer."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.config import Config, load_config
from pipeline.models import Rendered, Severity
from pipeline.preview import Batch, render_posts
from tests.conftest import ROOT

CORPUS = ROOT / "tests" / "corpus"
GENERATORS = sorted(p.name for p in CORPUS.iterdir() if p.is_dir() and not p.name.startswith("."))
POST_SUFFIXES = {".md", ".markdown", ".mdx", ".rst"}
# What may not reach a snippet: reference and footnote markers, template syntax of any generator.
MARKER = re.compile(r"\[\d+\]|\[\^[^\]]*\]|[¹²³⁴⁵⁶⁷⁸⁹⁰]")
TEMPLATE = re.compile(r"\{%|%\}|\{\{|\}\}|\{\{<|>\}\}")
# Posts a user of that generator would accept being refused, and why (path below tests/corpus/).
REFUSED: dict[str, str] = {
    # Eleventy's `---js` front matter is JavaScript: reading it would mean running the post's code.
    "eleventy/11ty--eleventy-base-blog/fifthpost.md": "front matter is JavaScript (---js)",
}
# One post of each generator whose rendering is pinned by golden files.
GOLDEN = {
    "astro-mdx": "biomejs--website",
    "eleventy": "a11yproject--a11yproject.com",
    "hugo-toml": "jessfraz--blog",
    "hugo-yaml": "helm--helm-www",
    "jekyll": "Homebrew--brew.sh",
    "next-mdx": "timlrx--timlrx.com",
    "pelican-md": "mattmakai--fullstackpython.com",
    "pelican-rst": "mit-plv--blog",
}


def post_files(generator: str) -> list[Path]:
    """The corpus posts of a generator, as paths below tests/corpus/<generator>/."""
    root = CORPUS / generator
    return sorted(p.relative_to(root) for p in root.rglob("*")
                  if p.is_file() and p.suffix in POST_SUFFIXES and "_site" not in p.parts)


@dataclass(frozen=True)
class Run:
    generator: str
    config: Config
    batch: Batch
    files: list[Path]


def _project(tmp: Path, generator: str) -> Config:
    """The shipped project with `posts/` replaced by the generator's corpus (licences and site
    configs left out: they are not posts)."""
    project = tmp / "project"
    project.mkdir()
    shutil.copy(ROOT / "config.yaml", project / "config.yaml")
    shutil.copytree(ROOT / "templates", project / "templates")
    for rel in post_files(generator):
        target = project / "posts" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(CORPUS / generator / rel, target)
    return load_config(project / "config.yaml")


@pytest.fixture(scope="module", params=GENERATORS)
def run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Run:
    generator = request.param
    config = _project(tmp_path_factory.mktemp(generator), generator)
    return Run(generator=generator, config=config, batch=render_posts(config), files=post_files(generator))


def _rendered(run: Run) -> dict[str, Rendered]:
    return {item.post.path.removeprefix("posts/"): item for item in run.batch.rendered}


def _errors(run: Run) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for problem in run.batch.problems:
        if problem.severity is Severity.ERROR:
            out.setdefault(problem.where.removeprefix("posts/"), []).append(problem.message)
    return out


def test_each_generator_has_real_posts_from_two_sites() -> None:
    for generator in GENERATORS:
        files = post_files(generator)
        assert len(files) >= 20, generator
        assert len({f.parts[0] for f in files}) >= 2, generator


def test_every_post_renders_or_is_refused_with_its_reason(run: Run) -> None:
    rendered, errors = _rendered(run), _errors(run)
    generator = run.generator
    for rel in map(str, run.files):
        key = f"{generator}/{rel}"
        if key in REFUSED:
            assert rel not in rendered and any(REFUSED[key] in m for m in errors.get(rel, [])), \
                (key, errors.get(rel))
        else:
            assert rel in rendered, f"{key} was not rendered: {errors.get(rel)}"
    assert len(rendered) >= 0.9 * len(run.files)


def test_no_post_file_is_skipped_silently(run: Run) -> None:
    named = {p.where.removeprefix("posts/") for p in run.batch.problems}
    for rel in map(str, run.files):
        assert rel in _rendered(run) or rel in named, f"{rel}: neither rendered nor named"


def _snippet_texts(item: Rendered) -> Iterator[tuple[str, str]]:
    for network, snippet in item.snippets.items():
        yield network, snippet.text
    for network, parts in item.threads.items():
        for part in parts:
            yield f"{network} thread", part.text


def test_no_snippet_holds_a_reference_marker_or_template_syntax(run: Run) -> None:
    for path, item in _rendered(run).items():
        for where, text in _snippet_texts(item):
            assert not MARKER.search(text), (path, where, text)
            assert not TEMPLATE.search(text), (path, where, text)
        assert not TEMPLATE.search(item.edition.subject + item.edition.preheader), path


def test_every_email_has_its_footer_with_the_canonical_url(run: Run) -> None:
    for path, item in _rendered(run).items():
        assert item.post.canonical_url in item.footer.text, path
        assert "Originally published at" in item.edition.text, path
        assert item.post.canonical_url in item.edition.text, path


def test_one_post_per_generator_renders_as_pinned(run: Run, golden) -> None:
    generator = run.generator
    site = GOLDEN[generator]
    item = min((i for p, i in _rendered(run).items() if p.startswith(site + "/")),
               key=lambda i: i.post.path)
    snippets = "\n".join(f"--- {network}\n{text}" for network, text in _snippet_texts(item))
    golden(f"corpus/{generator}.txt", f"{item.post.path}\n{item.post.canonical_url}\n\n"
                                      f"{item.edition.subject}\n\n{item.edition.text}\n{snippets}\n")


def test_at_least_95_percent_of_the_whole_corpus_renders(tmp_path: Path) -> None:
    total = rendered = 0
    for generator in GENERATORS:
        (tmp_path / generator).mkdir()
        config = _project(tmp_path / generator, generator)
        total += len(post_files(generator))
        rendered += len(render_posts(config).rendered)
    assert rendered >= 0.95 * total, f"{rendered} of {total}"
