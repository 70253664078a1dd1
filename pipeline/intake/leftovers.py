"""Template leftovers and MDX in a post's body, turned into plain Markdown.

A post copied from a static site brings its generator's template syntax along: Liquid and
Nunjucks (`{% ... %}`, `{{ ... }}`) from Jekyll and Eleventy, shortcodes (`{{< ... >}}`) from Hugo,
imports, JSX components and expressions from MDX. The site's generator would have rendered them;
an email cannot, so `clean_body` renders the common ones (code highlighting, figures, video and
post links, site-relative URLs) and drops the rest with a warning naming the file line.

Template syntax inside fenced code blocks and code spans is the author's example code and stays,
except Liquid's `{% raw %}` wrappers and Hugo's escaped `{{</* ... */>}}`, which are there only to
stop the generator and are unwrapped as the generator would.

Takes a body's text (and the file line it starts on); gives its Markdown and the warnings. This
module is the driver; the passes live beside it, each one left-to-right scan in about linear time:
`mdx.Mdx` (MDX files only) turns JSX into Markdown, finding code with line rules, since MDX has no
indented code and its components nest. `template_tags.Templates` then handles the template syntax,
taking the block structure from markdown-it, the parser the body is rendered with (the tags'
arguments are read by `template_args.py`); it runs again on its own output while that changes, since
a removed tag can change a line's block. Both write through `markdown_out.py`.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from typing import TYPE_CHECKING

# The passes (and markdown-it, which they read blocks with) are imported by `clean_body` once a
# body holds template or MDX syntax: most posts have none, and a command that only reads posts'
# dates and titles (`schedule`) then never loads the Markdown parser.
if TYPE_CHECKING:
    from pipeline.intake.markdown_out import Output

__all__ = ["clean_body"]

MAX_WARNINGS = 30       # a post full of leftovers gets this many lines of detail, then a count
PASSES = 3              # the template pass runs again on its output at most this many times in all

_MARKERS = re.compile(r"\{[%{#]|%\}|>\}\}")
_MDX_MARKERS = re.compile(r"[<{]|^(?:import|export)\b", re.M)
_NEWLINES = re.compile(r"\r\n?")


def _line_locator(text: str, first_line: int) -> Callable[[int], int]:
    newlines = [m.start() for m in re.finditer("\n", text)]
    return lambda pos: first_line + bisect_left(newlines, pos)


def _guard_html(text: str) -> str:
    """`text` with template delimiters removed from its HTML blocks. Removing a tag can make a line
    start an HTML block where the post had a paragraph (`{% if x %}<div>...`: just as the site's
    generator would make it); Markdown shows an HTML block's backticks as they are, so a template
    delimiter between them, taken for code, would show."""
    from pipeline.intake.markdown_out import BLOCKS, DELIMITERS, without_delimiters

    if not DELIMITERS.search(text):
        return text
    lines = text.split("\n")
    for token in BLOCKS.parse(text):
        if token.type == "html_block" and token.map:
            for line in range(*token.map):
                lines[line] = without_delimiters(lines[line])
    return "\n".join(lines)


def _origin_locator(out: Output, locate: Callable[[int], int]) -> Callable[[int], int]:
    """Position in a pass's output -> file line, through the source position of each piece."""
    starts: list[int] = []
    total = 0
    for piece in out.pieces:
        starts.append(total)
        total += len(piece)

    def origin(pos: int) -> int:
        k = max(0, bisect_right(starts, pos) - 1)
        if k >= len(starts):
            return locate(0)
        source, length = out.origins[k]
        return locate(source + min(pos - starts[k], max(length - 1, 0)))
    return origin


def clean_body(body: str, *, first_line: int = 1, mdx: bool = False) -> tuple[str, list[str]]:
    """The body as Markdown a reader would see, and one warning per construct dropped
    ("line N: ..."; `first_line`: the file line the body starts on).

    Liquid/Nunjucks and Hugo syntax is rendered when it has a Markdown form and dropped otherwise;
    with `mdx`, imports, exports, JSX comments, components and expressions are too. Code (fenced
    blocks, code spans) is left as written, but for Liquid `raw` wrappers and escaped Hugo
    shortcodes. Never raises; the body comes back unchanged when it holds no template syntax."""
    if not (_MARKERS.search(body) or (mdx and _MDX_MARKERS.search(body))):
        return body, []
    from pipeline.intake.markdown_out import separated
    from pipeline.intake.mdx import Mdx
    from pipeline.intake.template_tags import Templates

    text = _NEWLINES.sub("\n", body)
    locate = _line_locator(text, first_line)
    warnings: list[tuple[int, str]] = []
    if mdx:
        first = Mdx(text, locate).run()
        warnings += first.warnings
        text, locate = "".join(separated(first)), _origin_locator(first, locate)
    # Templates run before Markdown, so what is code is only known once they are gone: a dropped
    # tag can make its line a heading or an HTML block. So the pass runs again on its own output
    # until nothing changes (raw content, which the author wants shown as written, is kept out).
    protected: list[tuple[int, int]] = []
    for _ in range(PASSES):
        if not _MARKERS.search(text):
            break
        templates = Templates(text, locate, protected)
        warnings += templates.run().warnings
        cleaned, protected = templates.result()
        if cleaned == text:
            break
        text, locate = cleaned, _origin_locator(templates.out, locate)
    text = _guard_html(text)
    messages = [message for _, message in sorted(warnings, key=lambda w: w[0])]
    if len(messages) > MAX_WARNINGS:
        hidden = len(messages) - MAX_WARNINGS + 1
        messages = [*messages[:MAX_WARNINGS - 1], f"{hidden} more template leftovers like these (not listed)"]
    return text, messages
