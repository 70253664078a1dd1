"""How fast editions render: editions per second for the seed post and a 5,000-word post, and
the share of each edition's time spent in the MJML compile. Prints a table.

The baseline, measured in the same run, is mjml2html alone on the same filled MJML: the floor
that no edition can beat. Times are medians over repeated rounds (machines here are noisy).

    python bench/render.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

import pipeline.render.email as email_render
from pipeline.config import load_config
from pipeline.intake.posts import load_posts

ROOT = Path(__file__).resolve().parent.parent
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


def measure(post, config, rounds: int) -> dict[str, float]:
    compile_times: list[float] = []
    real = email_render.mjml2html

    def timed(source: str, **kw):   # the same call the pipeline makes, timed
        t = time.perf_counter()
        out = real(source, **kw)
        compile_times.append(time.perf_counter() - t)
        timed.source = source
        return out

    email_render.mjml2html = timed
    try:
        totals = []
        for _ in range(rounds):
            t = time.perf_counter()
            email_render.render_edition(post, config)
            totals.append(time.perf_counter() - t)
    finally:
        email_render.mjml2html = real
    bare = []
    for _ in range(rounds):
        t = time.perf_counter()
        real(timed.source, disable_comments=True, fonts={})
        bare.append(time.perf_counter() - t)
    total, mjml, base = (statistics.median(x) for x in (totals, compile_times, bare))
    return {"total": total, "mjml": mjml, "baseline": base}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        shutil.copy(ROOT / "config.yaml", project)
        shutil.copytree(ROOT / "templates", project / "templates")
        shutil.copytree(ROOT / "posts", project / "posts")
        (project / "posts" / "long.md").write_text(long_post(5000), encoding="utf-8")
        config = load_config(project / "config.yaml")
        posts = {p.slug: p for p in load_posts(config).posts}
        cases = [("seed post", posts["2020-09-01-ketamine-neurological-damage"]),
                 ("5,000-word post", posts["long"])]
        table = Table(title=f"Edition rendering, median of {args.rounds} rounds")
        for col in ("post", "words", "editions/s", "ms/edition", "MJML compile", "rest",
                    "baseline: mjml2html alone/s", "ratio"):
            table.add_column(col, justify="right")
        for name, post in cases:
            email_render.render_edition(post, config)          # warm caches (templates, pysbd)
            m = measure(post, config, args.rounds)
            share = m["mjml"] / m["total"]
            table.add_row(name, f"{len(post.body_markdown.split()):,}", f"{1 / m['total']:.0f}",
                          f"{m['total'] * 1000:.1f}", f"{share:.0%}", f"{1 - share:.0%}",
                          f"{1 / m['baseline']:.0f}", f"{m['baseline'] / m['total']:.2f}")
        Console(width=140).print(table)
        print("ratio = edition rate / bare mjml2html rate (1.00 would mean MJML is all the cost)",
              file=sys.stderr)


if __name__ == "__main__":
    main()
