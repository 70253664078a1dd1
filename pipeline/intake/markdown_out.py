"""Markdown output shared by the passes that clean a post's body (`mdx.py`, `template_tags.py` with
`template_args.py`, and the driver in `leftovers.py`); it imports none of them.

Takes source text and positions; gives Markdown pieces: link destinations, links, images, fenced
blocks and code spans written so that nothing in them can end them early (`md_url`, `md_link`,
`md_image`, `fenced`, `code_span`), `Output` (the pieces a pass emits, with their kind and source
position, and its warnings), `Runs` (a text's backtick runs, to close code spans without rescanning),
`separated` (the pieces joined safely) and `without_delimiters` (the last guard that no template
delimiter reaches a reader); and the constants both passes share.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field

from markdown_it import MarkdownIt
from mdit_py_plugins.footnote import footnote_plugin

SHOWN = 60              # a construct quoted in a warning is shortened to about this many characters
MAX_TAG = 2000          # no template tag, shortcode or JSX tag is longer: stops runaway searches

PROSE, CODE, VERBATIM = 0, 1, 2     # kinds of output piece: only PROSE is cleaned further

# The same block grammar posts.py renders with; inline parsing is not needed to find the blocks.
BLOCKS = MarkdownIt("commonmark", {"html": True}).enable("table").use(footnote_plugin).disable("inline")

DELIMITERS = re.compile(r"\{%|%\}|\{\{<|>\}\}")
RUN = re.compile(r"`+")
BLANK_OR_SPACE = re.compile(r"[ \t]*(?:\n|$)")

# ---------------------------------------------------------------------------------------------
# Small helpers


def shorten(construct: str) -> str:
    text = " ".join(construct.split())
    return text if len(text) <= SHOWN else text[: SHOWN - 1] + "…"


def md_url(path: str) -> str:
    """A path as a Markdown link destination: characters that would end or break one are escaped."""
    return (path.strip().replace(" ", "%20").replace("(", "%28").replace(")", "%29")
            .replace("<", "%3C").replace(">", "%3E"))


def _label(text: str) -> str:
    return " ".join(text.split()).replace("\\", "\\\\").replace("[", "\\[").replace("]", "\\]")


def md_image(alt: str, src: str) -> str:
    return f"![{_label(alt)}]({md_url(src)})"


def md_link(text: str, url: str) -> str:
    return f"[{_label(text)}]({md_url(url)})"


def fenced(code: str, lang: str, indent: str) -> str:
    """A fenced code block (without a newline after its closing fence) holding `code` verbatim."""
    if code and not code.endswith("\n"):
        code += "\n"
    longest = max((len(m.group()) for m in RUN.finditer(code)), default=0)
    fence = "`" * max(3, longest + 1)
    lang = re.sub(r"[^\w+#.-]", "", lang)
    return f"{indent}{fence}{lang}\n{code}{indent}{fence}"


def code_span(text: str, longer_than: int = 0) -> str:
    """`text` shown literally as a code span, its backtick runs longer than `longer_than` (and than
    any in the text), so that no other run can close it."""
    longest = max((len(m.group()) for m in RUN.finditer(text)), default=0)
    ticks = "`" * (max(longest, longer_than) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def without_delimiters(text: str) -> str:
    """`text` with every `{%`, `%}`, `{{<` and `>}}` removed, including ones that removing another
    brings together (`{{%}` -> `{}`): the last guard that nothing template-like reaches a reader."""
    if not DELIMITERS.search(text):
        return text
    out: list[str] = []
    for ch in text:
        out.append(ch)
        if (ch == "%" and out[-2:] == ["{", "%"]) or (ch == "}" and out[-2:] == ["%", "}"]):
            del out[-2:]
        elif (ch == "<" and out[-3:] == ["{", "{", "<"]) or (ch == "}" and out[-3:] == [">", "}", "}"]):
            del out[-3:]
    return "".join(out)


# ---------------------------------------------------------------------------------------------
# Output and warnings, shared by both passes


@dataclass
class Output:
    """Output pieces with their kind and source position, and one warning per dropped construct.

    A line that held only dropped constructs is removed with its newline, so a tag on a line of its
    own (`{% if x %}`, `</Tabs>`) leaves no blank line to split a list or end an HTML block."""

    locate: Callable[[int], int]            # source position -> file line
    pieces: list[str] = field(default_factory=list)
    kinds: list[int] = field(default_factory=list)
    origins: list[tuple[int, int]] = field(default_factory=list)   # (source start, source length)
    warnings: list[tuple[int, str]] = field(default_factory=list)
    _mark: int | None = 0          # index of the piece the current output line starts at
    _text: bool = False            # the current output line has non-blank text
    _dirty: bool = False           # something was dropped from the current line

    def emit(self, text: str, pos: int, kind: int = PROSE, length: int | None = None) -> None:
        if not text:
            return
        self.pieces.append(text)
        self.kinds.append(kind)
        self.origins.append((pos, len(text) if length is None else length))
        last = text.rfind("\n")
        if last < 0:
            self._text = self._text or not text.isspace()
        elif last == len(text) - 1:
            self._mark, self._text, self._dirty = len(self.pieces), False, False
        else:
            self._mark, self._text, self._dirty = None, not text[last + 1:].isspace(), False

    def drop(self) -> None:
        self._dirty = True

    def newline(self, pos: int) -> None:
        """The end of a source line: removes the output line if only dropped constructs were on it."""
        if self._dirty and not self._text and self._mark is not None:
            del self.pieces[self._mark:], self.kinds[self._mark:], self.origins[self._mark:]
            self._mark, self._text, self._dirty = len(self.pieces), False, False
        else:
            self.emit("\n", pos)

    def finish(self) -> None:
        if self._dirty and not self._text and self._mark is not None:
            del self.pieces[self._mark:], self.kinds[self._mark:], self.origins[self._mark:]

    def line_has_text(self) -> bool:
        return self._text

    def warn(self, pos: int, message: str) -> None:
        line = self.locate(pos)
        self.warnings.append((line, f"line {line}: {message}"))


class Runs:
    """Every backtick run of a text, to find a code span's closing run without rescanning."""

    def __init__(self, text: str) -> None:
        self._starts: dict[int, list[int]] = {}
        for m in RUN.finditer(text):
            self._starts.setdefault(len(m.group()), []).append(m.start())

    def closer(self, length: int, start: int, bound: int) -> int | None:
        """The first run of exactly `length` backticks in [start, bound), or None."""
        starts = self._starts.get(length, [])
        k = bisect_left(starts, start)
        return starts[k] if k < len(starts) and starts[k] < bound else None


def separated(out: Output) -> list[str]:
    """The output pieces, a space put between two that meet with backticks where something was
    removed between them: joined, the two runs would be one and open or close a different span."""
    pieces = list(out.pieces)
    for k in range(1, len(pieces)):
        (before, length), (after, _) = out.origins[k - 1], out.origins[k]
        if pieces[k - 1].endswith("`") and pieces[k].startswith("`") and before + length != after:
            pieces[k] = " " + pieces[k]
    return pieces
