"""How fast a post renders: the full render (the email edition and the three networks' snippets)
against the floor of any edition, Markdown -> HTML and the MJML compile of the same post.

For each post (the seed post, a generated 5,000-word post and the other shipped posts), both are
timed in the same run, in paired rounds whose order alternates, and the medians are compared.
The full render starts cold each round: the per-post caches (the running text and its sentence
segmentation, shared by the preheader and the snippets) are cleared first. Prints a table.

    python bench/render.py [--rounds 21]
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mjml import mjml2html
from rich.console import Console
from rich.table import Table

import pipeline.render.email as email_render
from pipeline.config import load_config
from pipeline.intake.posts import load_posts, markdown_to_html
from pipeline.render import cutting, text
from pipeline.render.social import snippets

ROOT = Path(__file__).resolve().parent.parent
SEED = "2020-09-01-ketamine-neurological-damage"
WORDS = ("ketamine depression infusion clinic patient neuron synapse treatment mood journal sleep "
         "energy evening morning research trial dose nurse recovery care").split()


def long_post(words: int) -> str:
    """A Markdown post of about `words` words: paragraphs, headings, lists, links, a quote."""
    rng = random.Random(5000)
    parts, count, n = [], 0, 0
    while count < words:
        n += 1
        sentence = lambda: " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 18))).capitalize() + "."  # noqa: E731
        para = " ".join(sentence() for _ in range(5))
        count += len(para.split())
        parts.append(para)
        if n % 6 == 0:
            parts.append(f"## Section {n // 6}\n\n- item [link {n}](https://www.rtrwellnesscenter.com/p/{n})\n"
                         f"- another item\n\n> {sentence()}")
    return "---\ntitle: A very long article\ndate: 2024-01-01\n---\n\n" + "\n\n".join(parts) + "\n"


def filled_mjml(post: Any, config: Any) -> str:
    """The MJML the edition of `post` compiles (captured from one render), for the baseline."""
    seen: list[str] = []
    real = email_render.mjml2html

    def capture(source: str, **kw: Any) -> str:
        seen.append(source)
        return real(source, **kw)

    email_render.mjml2html = capture
    try:
        email_render.render_edition(post, config)
    finally:
        email_render.mjml2html = real
    return seen[-1]


def clear_caches() -> None:
    """Forget what an earlier render of the post left behind (so each round starts cold); the
    getattr lets this bench time the code from before these caches too."""
    for cached in (getattr(cutting, "segmented", None), text.plain_text):
        if hasattr(cached, "cache_clear"):
            cached.cache_clear()


def measure(post: Any, config: Any, rounds: int) -> dict[str, float]:
    """Median seconds of the baseline and of the full render (and its two parts), paired rounds."""
    source = filled_mjml(post, config)
    times: dict[str, list[float]] = {"baseline": [], "full": [], "email": [], "snippets": []}

    def baseline() -> None:
        start = time.perf_counter()
        markdown_to_html(post.body_markdown, base=post.canonical_url)
        mjml2html(source, disable_comments=True, fonts={})
        times["baseline"].append(time.perf_counter() - start)

    def full() -> None:
        clear_caches()
        start = time.perf_counter()
        email_render.render_edition(post, config)
        middle = time.perf_counter()
        snippets(post, config)
        end = time.perf_counter()
        times["email"].append(middle - start)
        times["snippets"].append(end - middle)
        times["full"].append(end - start)

    steps: list[Callable[[], None]] = [baseline, full]
    baseline(), full()                                       # warm: templates, pysbd, regexes
    for values in times.values():
        values.clear()
    for r in range(rounds):
        for step in steps if r % 2 == 0 else steps[::-1]:
            step()
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        shutil.copy(ROOT / "config.yaml", project)
        shutil.copytree(ROOT / "templates", project / "templates")
        shutil.copytree(ROOT / "posts", project / "posts")
        (project / "posts" / "long.md").write_text(long_post(5000), encoding="utf-8")
        config = load_config(project / "config.yaml")
        posts = {p.slug: p for p in load_posts(config).posts}
        cases = [("seed post", posts.pop(SEED)), ("5,000-word post", posts.pop("long"))]
        cases += [(slug, post) for slug, post in sorted(posts.items())]
        table = Table(title=f"Full render vs Markdown + MJML, median of {args.rounds} paired rounds")
        for col in ("post", "words", "baseline: Markdown→HTML + MJML, ms", "full render, ms",
                    "email", "3 snippets", "ratio"):
            table.add_column(col, justify="right")
        ratios = {}
        for name, post in cases:
            m = measure(post, config, args.rounds)
            ratios[name] = m["full"] / m["baseline"]
            table.add_row(name, f"{len(post.body_markdown.split()):,}", f"{m['baseline'] * 1000:.1f}",
                          f"{m['full'] * 1000:.1f}", f"{m['email'] * 1000:.1f}",
                          f"{m['snippets'] * 1000:.1f}", f"{ratios[name]:.1f}")
        Console(width=140).print(table)
        print("ratio = full render (email edition + x, mastodon, bluesky snippets) / "
              "(Markdown -> HTML + MJML compile) of the same post", file=sys.stderr)
        print(f"ratio seed {ratios['seed post']:.1f} long {ratios['5,000-word post']:.1f} "
              f"max {max(ratios.values()):.1f}")


if __name__ == "__main__":
    main()
