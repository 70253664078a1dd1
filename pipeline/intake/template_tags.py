"""Liquid, Nunjucks and Hugo template syntax in a post's body -> Markdown, the template pass of
`leftovers.clean_body`.

Takes the body's text, a function from a position in it to its file line, and the ranges an
earlier run left verbatim; `Templates(text, locate, protected)` gives, through `run()`, an `Output`
(see `markdown_out.py`) with one warning per construct dropped, and through `result()` the cleaned
text with the ranges in it to keep verbatim on the next run. The common tags are rendered (code
highlighting, figures, video and post links, site-relative URLs; their arguments are read by
`template_args.py`), the rest dropped. Template syntax in fenced code blocks and code spans is the
author's example code and stays, except Liquid's `{% raw %}` wrappers and Hugo's escaped
`{{</* ... */>}}`, which are unwrapped as the generator would.

One left-to-right scan in about linear time (every search is bounded or cached), taking the block
structure (fences, HTML blocks, paragraph extents) from markdown-it, the parser the body is rendered
with, so that what it leaves alone as code is what will be shown as code.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable

from pipeline.intake.markdown_out import (
    BLANK_OR_SPACE,
    BLOCKS,
    CODE,
    MAX_TAG,
    PROSE,
    RUN,
    VERBATIM,
    Output,
    Runs,
    code_span,
    fenced,
    md_link,
    md_url,
    separated,
    shorten,
    without_delimiters,
)
from pipeline.intake.template_args import hugo_embed, liquid_embed, shortcode, url_value

MAX_LABEL = 600         # link text longer than this is not looked at for a templated address

_PLAIN = re.compile(r"[^\n`\\{%<>\[!]+")
_LIQUID_NAME = re.compile(r"(\w+)\s*(.*)", re.S)
_LIQUID_END = re.compile(r"\{%-?\s*end(\w+)\s*-?%\}")
_HUGO_END = re.compile(r"\{\{([<%])\s*/\s*([\w./-]+)\s*[>%]\}\}")
_LOOP = re.compile(r"\{%-?\s*(end)?(for|tablerow|capture|macro|call|filter)\b(?:(?!%\}).){0,500}?%\}", re.S)
_LOOPS = {"for", "tablerow", "capture", "macro", "call", "filter"}
_QUIET = {"else", "elsif", "elif", "when", "empty", "assign", "set", "break", "continue",
          "endif", "endunless", "endcase"}       # control flow: nothing a reader would miss
_INCLUDES = {"include", "include_relative", "include_cached", "render", "import", "from", "extends"}
_TEXT_AND_URL = re.compile(r"\s*([\"'])([^\"'\n]+)\1\s*,\s*([\"'])((?:https?://|/)[^\"'\s]*)\3\s*")
_TEMPLATE_IN = re.compile(r"\{\{<.*?>\}\}|\{\{%.*?%\}\}|\{\{.*?\}\}|\{%.*?%\}", re.S)
_DEST_PART = r"(?>\{\{(?:(?!\}\}).){0,300}?\}\}|\{%(?:(?!%\}).){0,300}?%\}|[^\s()])++"
_DEST = re.compile(rf"[ \t]*(?P<dest>{_DEST_PART})(?P<title>[ \t]+(?:\"[^\"\n]*\"|'[^'\n]*'))?[ \t]*\)", re.S)
_REFDEF = re.compile(rf"[ \t]{{0,3}}\[(?P<label>[^\[\]\n]{{1,200}})\]:[ \t]*(?P<dest>{_DEST_PART})", re.S)
_HTML_TAG = re.compile(
    r"<(?:[A-Za-z][A-Za-z0-9-]*(?>\s+[A-Za-z_:][\w.:-]*(?>\s*=\s*(?>[^\s\"'=<>`]+|'[^']*'|\"[^\"]*\"))?)*+"
    r"\s*/?>|/[A-Za-z][A-Za-z0-9-]*\s*>|[A-Za-z][A-Za-z0-9.+-]{1,31}:[^\s<>]*>"
    r"|[\w.!#$%&'*+/=?^`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)*>)")
_HTML_OTHER = (("<!--", "-->"), ("<?", "?>"), ("<![CDATA[", "]]>"), ("<!", ">"))

_RAW_LINE = re.compile(r"^[ \t]*\{%-?[ \t]*(?:end)?raw[ \t]*-?%\}[ \t]*\n", re.M)
_RAW_TAG = re.compile(r"\{%-?\s*(?:end)?raw\s*-?%\}")
_HUGO_ESCAPED_OPEN = re.compile(r"\{\{([<%])/\*")
_HUGO_ESCAPED_CLOSE = re.compile(r"\*/([>%])\}\}")


def _in_code(text: str) -> str:
    """Code as its generator would show it: Liquid `raw` wrappers (there only to stop Liquid) go,
    a line holding nothing else goes whole; Hugo's escaped `{{</* x */>}}` shows as `{{< x >}}`."""
    if "raw" in text:
        text = _RAW_TAG.sub("", _RAW_LINE.sub("", text))
    if "/*" in text:
        text = _HUGO_ESCAPED_CLOSE.sub(r"\1}}", _HUGO_ESCAPED_OPEN.sub(r"{{\1", text))
    return text


class Templates:
    """Liquid, Nunjucks and Hugo syntax in Markdown -> Markdown, code left as written."""

    def __init__(self, text: str, locate: Callable[[int], int],
                 protected: list[tuple[int, int]] | None = None) -> None:
        self.text = text
        self.protected = protected or []   # ranges copied as they are: raw content, from an earlier pass
        self._next_protected = 0
        self.n = len(text)
        self.out = Output(locate)
        self.runs = Runs(text)
        self.starts = [0] + [m.end() for m in re.finditer("\n", text)]
        self.end = self.n                # where the current scan stops (a link's text, when inside one)
        self.no_spans = 0                # backticks before this position open no code span (raw HTML)
        self._literal = (-1, 0)          # a paragraph's start, its longest backtick run left as text
        self.ends: dict[str, list[tuple[int, int]]] = {}
        for m in _LIQUID_END.finditer(text):
            self.ends.setdefault(m.group(1).lower(), []).append((m.start(), m.end()))
        self.hugo_ends: dict[str, list[tuple[int, int]]] = {}
        for m in _HUGO_END.finditer(text):
            self.hugo_ends.setdefault(m.group(2).lower(), []).append((m.start(), m.end()))
        self._loops: dict[int, tuple[int, int]] | None = None
        self.rendered: dict[str, tuple[int, int, str]] = {}    # link tag -> first, count, example
        self._blocks()

    def _blocks(self) -> None:
        """Fences, HTML blocks and each line's inline extent, as markdown-it will read them."""
        lines = len(self.starts)
        self.fences: dict[int, int] = {}
        self.html: dict[int, int] = {}
        self.first = list(range(lines))            # line -> first line of its inline content
        self.bound = list(range(1, lines + 1))     # line -> the line its inline content ends before
        for token in BLOCKS.parse(self.text):
            if token.map is None:
                continue
            first, last = token.map
            if token.type == "fence":
                self.fences[first] = last
            elif token.type == "html_block":
                self.html[first] = last
            elif token.type == "inline":
                for line in range(first, last):
                    self.first[line], self.bound[line] = first, last
        # For each line, the first line at or after it that is blank or opens a fence: no
        # template tag runs past one.
        blank = [not line.strip() for line in self.text.split("\n")]
        self.stop = [lines] * (lines + 1)
        for line in range(lines - 1, -1, -1):
            self.stop[line] = line if blank[line] or line in self.fences else self.stop[line + 1]

    # ---- positions

    def _line(self, pos: int) -> int:
        return bisect_right(self.starts, pos) - 1

    def _offset(self, line: int) -> int:
        return self.starts[line] if line < len(self.starts) else self.n

    def _limit(self, i: int) -> int:
        """How far a tag starting at `i` may reach for its closing delimiter."""
        return min(i + MAX_TAG, self.end, self._offset(self.stop[self._line(i) + 1]))

    def _line_end(self, i: int) -> int:
        k = self.text.find("\n", i)
        return self.n if k < 0 else k + 1

    def _alone(self, start: int, end: int) -> bool:
        """Whether text[start:end] is all there is on its line(s) but blanks."""
        line_start = self.text.rfind("\n", 0, start) + 1
        return (not self.text[line_start:start].strip()) and bool(BLANK_OR_SPACE.match(self.text, end))

    # ---- the scan

    def run(self) -> Output:
        self._scan(0, self.n)
        self.out.finish()
        for name, (first, count, shown) in self.rendered.items():
            what = f"{count} {{% {name} %}} tags as links" if count > 1 else f"{shorten(shown)} as a link"
            self.out.warn(first, f"rendered {what} (a tag of the site's own, read as a text and an address)")
        return self.out

    def _scan(self, i: int, end: int, inline: bool = False) -> None:
        text = self.text
        at_line_start = not inline and (i == 0 or text[i - 1] == "\n")
        while i < end:
            stop = self._protected(i)
            if stop > i:
                self.out.emit(text[i:stop], i, VERBATIM)
                i, at_line_start = stop, not inline and text[stop - 1] == "\n"
                continue
            if at_line_start:
                at_line_start = False
                j = self._line_start(i)
                if j != i:
                    i, at_line_start = j, True
                    continue
            c = text[i]
            if c == "\n":
                if inline:
                    self.out.emit("\n", i)
                else:
                    self.out.newline(i)
                i += 1
                at_line_start = not inline
                continue
            if c == "`":
                i = self._span(i)
            elif c == "\\":
                i = self._copy(i, 2 if text.startswith("`", i + 1) else 1)
            elif c == "{":
                i = self._brace(i)
            elif c == "%":
                i = self._stray(i, "%}", "no {% opens it")
            elif c == ">":
                i = self._stray(i, ">}}", "no {{< opens it")
            elif c == "<":
                i = self._angle(i)
            elif c in "[!":
                i = self._link(i)
            else:
                m = _PLAIN.match(text, i, min(end, self._protected_start()))
                i = self._copy(i, m.end() - i if m else 1)
            at_line_start = not inline and text[i - 1] == "\n"

    def _copy(self, i: int, length: int, kind: int = PROSE) -> int:
        self.out.emit(self.text[i:i + length], i, kind)
        return i + length

    def _protected(self, i: int) -> int:
        """The end of the protected range starting at `i` (`i` when none does)."""
        while self._next_protected < len(self.protected) and self.protected[self._next_protected][0] < i:
            self._next_protected += 1           # passed over inside some construct
        if self._next_protected < len(self.protected) and self.protected[self._next_protected][0] == i:
            self._next_protected += 1
            return self.protected[self._next_protected - 1][1]
        return i

    def _protected_start(self) -> int:
        k = self._next_protected
        return self.protected[k][0] if k < len(self.protected) else self.n

    def _drop(self, i: int, end: int, message: str | None = None) -> int:
        self.out.drop()
        if message:
            self.out.warn(i, message.replace("{}", shorten(self.text[i:end]), 1))
        return end

    def _line_start(self, i: int) -> int:
        line = self._line(i)
        if line in self.fences:
            end = self._offset(self.fences[line])
            first = self._line_end(i)
            self.out.emit(self.text[i:first], i, CODE)
            self.out.emit(_in_code(self.text[first:end]), first, CODE, end - first)
            return end
        if line in self.html:
            self.no_spans = max(self.no_spans, self._offset(self.html[line]))
        if self.text.startswith(("[", " [", "  [", "   ["), i):
            return self._definition(i)
        return i

    def _definition(self, i: int) -> int:
        """A link reference definition whose address is a template."""
        m = _REFDEF.match(self.text, i, self._limit(i))
        if not m or not _TEMPLATE_IN.search(m["dest"]):
            return i
        url = self._resolve(m["dest"], i)
        if url is None:
            self.out.drop()
            self.out.warn(i, f"dropped the link definition {shorten(m.group())} "
                             "(its address is a template the email cannot resolve)")
            end = self._line_end(m.end())
            self.out.newline(end - 1)
            return end
        self.out.emit(f"[{m['label']}]: {md_url(url)}", i, length=m.end() - i)
        return m.end()

    def _span(self, i: int) -> int:
        length = len(RUN.match(self.text, i).group())
        if i < self.no_spans:
            return self._literal_run(i, length)
        bound = min(self.end, self._offset(self.bound[self._line(i)]))
        closer = self.runs.closer(length, i + length, bound)
        if closer is None:
            return self._literal_run(i, length)
        span = self.text[i:closer + length]
        shown = _in_code(span)
        runs = [len(m.group()) for m in RUN.finditer(shown)]
        if not (shown.startswith("`" * length) and shown.endswith("`" * length)
                and runs[0] == runs[-1] == length and runs[1:-1].count(length) == 0):
            shown = span        # unwrapping joined backtick runs: the span would end elsewhere
        self.out.emit(shown, i, CODE, closer + length - i)
        return closer + length

    def _literal_run(self, i: int, length: int) -> int:
        """A backtick run that opens no code span; remembered, since a span made later in its
        paragraph must not start with a run as long (it would close this one)."""
        block = self._offset(self.first[self._line(i)])
        longest = self._literal[1] if self._literal[0] == block else 0
        self._literal = (block, max(longest, length))
        return self._copy(i, length)

    def _stray(self, i: int, delimiter: str, why: str) -> int:
        if not self.text.startswith(delimiter, i):
            return self._copy(i, 1)
        return self._drop(i, i + len(delimiter), f"dropped a stray {delimiter} ({why})")

    def _angle(self, i: int) -> int:
        """Raw HTML: backticks inside a tag, comment or autolink open no code span."""
        limit = min(self.n, i + MAX_TAG)
        m = _HTML_TAG.match(self.text, i, limit)
        end = m.end() if m else 0
        if not m:
            for opener, closer in _HTML_OTHER:
                if self.text.startswith(opener, i):
                    k = self.text.find(closer, i + len(opener), limit)
                    end = k + len(closer) if k >= 0 else 0
                    break
        self.no_spans = max(self.no_spans, end)
        return self._copy(i, 1)

    # ---- braces

    def _brace(self, i: int) -> int:
        text = self.text
        if text.startswith(("{{</*", "{{%/*"), i):
            return self._escaped(i)
        if text.startswith(("{{<", "{{%"), i):
            return self._hugo(i)
        if text.startswith("{%", i):
            return self._liquid_tag(i)
        if text.startswith("{{", i):
            return self._liquid_output(i)
        if text.startswith("{#", i):
            k = text.find("#}", i + 2, self._limit(i))
            if k >= 0:
                return self._drop(i, k + 2)        # a Nunjucks comment: meant for no reader
        return self._copy(i, 1)

    def _escaped(self, i: int) -> int:
        """Hugo's `{{</* x */>}}`: the author shows the shortcode itself (as a code span here, since
        outside code it would read as a leftover)."""
        kind = self.text[i + 2]
        closer = f"*/{'>' if kind == '<' else '%'}}}}}"
        k = self.text.find(closer, i + 5, self._limit(i))
        if k < 0:
            return self._hugo(i)
        block = self._offset(self.first[self._line(i)])
        longest = self._literal[1] if self._literal[0] == block else 0
        # On one line: a span cannot run on into a line a block starts on (a code span shows a
        # line break as a space anyway).
        inner = " ".join(self.text[i + 5:k].split("\n"))
        literal = f"{{{{{kind}{inner}{'>' if kind == '<' else '%'}}}}}"
        if i < self.no_spans:       # in raw HTML, where Markdown makes no code span
            escaped = literal.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            self.out.emit(f"<code>{escaped.replace('{', '&#123;')}</code>", i, length=k + 5 - i)
            return k + 5
        shown = code_span(literal, longest)
        # A backtick next to the span would lengthen its delimiter run: a space keeps them apart.
        before = " " if self.out.pieces and self.out.pieces[-1].endswith("`") else ""
        after = " " if self.text.startswith("`", k + 5) else ""
        self.out.emit(f"{before}{shown}{after}", i, CODE, k + 5 - i)
        return k + 5

    def _block(self, i: int, end: int, close: tuple[int, int]) -> tuple[int, int, int]:
        """A paired construct from the opener [i, end) to the closer `close`: the extent of its
        content and where to go on, dropping the opener's and the closer's lines when they hold
        nothing else (content may then be emitted; the caller calls `_after`)."""
        cstart, cend = close
        inner = end
        self.out.drop()
        if self._alone(i, end):
            inner = self._line_end(end)
            self.out.newline(inner - 1)
        if self._alone(cstart, cend):
            return inner, self.text.rfind("\n", 0, cstart) + 1, self._line_end(cend)
        return inner, max(inner, cstart), cend

    def _after(self, resume: int) -> int:
        """After a paired construct: when its closer's line was consumed, end the output line."""
        if resume > 0 and self.text[resume - 1] == "\n":
            self.out.drop()
            self.out.newline(resume - 1)
        return resume

    @staticmethod
    def _first_end(ends: dict[str, list[tuple[int, int]]], name: str, after: int) -> tuple[int, int] | None:
        """The first closer named `name` at or after `after`."""
        found = ends.get(name, [])
        k = bisect_left(found, (after, -1))
        return found[k] if k < len(found) else None

    def _highlight(self, i: int, end: int, close: tuple[int, int], lang: str) -> int:
        """`{% highlight lang %}` / `{{< highlight lang >}}` ... -> a fenced code block."""
        before = self.text[self.text.rfind("\n", 0, i) + 1:i]
        indent = "" if before.strip() else before
        opener_alone = self._alone(i, end)
        inner, inner_end, resume = self._block(i, end, close)
        code = _in_code(self.text[inner:inner_end])
        if not opener_alone:
            code = code.removeprefix("\n")
            if self.out.line_has_text():
                self.out.emit("\n", i)
                indent = ""
            else:       # only the indent is on the output line: it goes, the fence gets it back
                self.out.drop()
                self.out.newline(i)
        # A fence indented more than a line of its code would let that line out of the code.
        indents = [len(line) - len(line.lstrip(" \t")) for line in code.split("\n") if line.strip()]
        indent = indent[:min([len(indent), *indents])]
        self.out.emit(fenced(code, lang, indent), i, CODE, resume - i)
        if resume < self.n and self.text[resume - 1] != "\n" and self.text[resume] != "\n":
            self.out.emit("\n", resume)
        return self._after(resume)

    # ---- Liquid / Nunjucks

    def _liquid_tag(self, i: int) -> int:
        text = self.text
        k = text.find("%}", i + 2, self._limit(i))
        if k < 0:
            return self._drop(i, i + 2, "dropped {} (a Liquid tag with no %} to end it)")
        end = k + 2
        m = _LIQUID_NAME.match(text[i + 2:k].strip().strip("-").strip())
        name, args = (m.group(1), m.group(2).strip()) if m else ("", "")
        lowered = name.lower()
        if lowered in ("raw", "comment", "highlight"):
            close = self._first_end(self.ends, lowered, end)
            if close is None:
                return self._drop(i, end, f"dropped {{}} (no {{% end{lowered} %}} follows)")
            if lowered == "highlight":
                return self._highlight(i, end, close, args.split()[0] if args.split() else "")
            inner, inner_end, resume = self._block(i, end, close)
            if lowered == "raw":      # the author's own text, shown as written
                self.out.emit(text[inner:inner_end], inner, VERBATIM)
            return self._after(resume)
        if lowered in _LOOPS:
            close = self._loop_end(i)
            if close is None:
                return self._drop(i, end, "dropped {} (a Liquid tag the email cannot show)")
            what = "loop" if lowered in ("for", "tablerow") else "block"
            self.out.warn(i, f"dropped {shorten(text[i:end])} ... {{% end{lowered} %}} "
                             f"(a Liquid {what} the email cannot run)")
            _, _, resume = self._block(i, end, close)
            return self._after(resume)
        if lowered in _QUIET or lowered.startswith("end"):
            return self._drop(i, end)
        if lowered in ("link", "post_url"):
            return self._drop(i, end, "dropped {} (a Liquid link the email cannot resolve)")
        if lowered in _INCLUDES:
            return self._drop(i, end, "dropped {} (a Liquid tag the email cannot show)")
        rendered = liquid_embed(lowered, args)
        if rendered is not None:
            self.out.emit(rendered, i, length=end - i)
            return end
        pair = _TEXT_AND_URL.fullmatch(args)
        if pair:        # a site's own link shortcode, {% indieweblink "Name", "https://..." %}
            self.out.emit(md_link(pair.group(2), pair.group(4)), i, length=end - i)
            first, count, shown = self.rendered.get(name, (i, 0, text[i:end]))
            self.rendered[name] = (first, count + 1, shown)
            return end
        return self._drop(i, end, "dropped {} (a Liquid tag the email cannot show)")

    def _loop_end(self, i: int) -> tuple[int, int] | None:
        """The tag closing the loop/capture opened at `i`, nesting counted."""
        if self._loops is None:
            self._loops = {}
            open_: dict[str, list[int]] = {}
            for m in _LOOP.finditer(self.text):
                name = m.group(2)
                if m.group(1):
                    if open_.get(name):
                        self._loops[open_[name].pop()] = (m.start(), m.end())
                else:
                    open_.setdefault(name, []).append(m.start())
        return self._loops.get(i)

    def _liquid_output(self, i: int) -> int:
        text = self.text
        k = text.find("}}", i + 2, self._limit(i))
        if k < 0:
            return self._copy(i, 2)
        end = k + 2
        value = url_value(text[i + 2:k].strip().strip("-"))
        if value is None:
            return self._drop(i, end, "dropped {} (a Liquid variable the email cannot show)")
        if value:
            self.out.emit(value, i, length=end - i)
            return end
        # The site's root before a path is nothing on a path resolved against the site.
        if text.startswith("/", end) or text[i - 1:i] in ("(", '"', "'", "="):
            return self._drop(i, end)
        return self._drop(i, end, "dropped {} (a Liquid variable the email cannot show)")

    # ---- Hugo

    def _hugo(self, i: int) -> int:
        text = self.text
        kind = text[i + 2]
        closer = ">}}" if kind == "<" else "%}}"
        k = text.find(closer, i + 3, self._limit(i))
        if k < 0:
            return self._drop(i, i + 3, f"dropped {{}} (a Hugo shortcode with no {closer} to end it)")
        end = k + 3
        inner = text[i + 3:k].strip()
        if inner.startswith("/"):
            return self._drop(i, end)           # a closing shortcode: its opener was reported
        name, positional, named = shortcode(inner.removesuffix("/"))
        lowered = name.lower()
        if lowered == "highlight":
            close = self._first_end(self.hugo_ends, "highlight", end)
            if close is not None:
                return self._highlight(i, end, close, positional[0] if positional else "")
        rendered = hugo_embed(lowered, positional, named)
        if rendered is not None:
            self.out.emit(rendered, i, length=end - i)
            return end
        if lowered in ("ref", "relref") and (positional or named.get("path")):
            path = positional[0] if positional else named["path"]
            self.out.emit(path, i, length=end - i)
            self.out.warn(i, f"replaced {shorten(text[i:end])} by the path {path} (check the link)")
            return end
        if not inner.endswith("/") and self._first_end(self.hugo_ends, lowered, end):
            return self._drop(i, end, "removed {} (a Hugo shortcode the email cannot show), kept its content")
        return self._drop(i, end, "dropped {} (a Hugo shortcode the email cannot show)")
    # ---- links whose address is a template

    def _link(self, i: int) -> int:
        text = self.text
        bang = text[i] == "!"
        s = i + bang
        if not text.startswith("[", s):
            return self._copy(i, 1)
        limit = self._limit(i)
        k = text.find("](", s + 1, min(limit, s + MAX_LABEL))
        label = text[s + 1:k]
        if k < 0 or "[" in label or "]" in label:
            return self._copy(i, 1)
        m = _DEST.match(text, k + 2, limit)
        if not m or not _TEMPLATE_IN.search(m["dest"]):
            return self._copy(i, 1)
        url = self._resolve(m["dest"], i)
        if url is None:
            if bang:
                return self._drop(i, m.end(), "dropped the image {} (its address is a template the email "
                                              "cannot resolve)")
            self.out.warn(i, f"unlinked {shorten(text[i:m.end()])} (its address is a template the email "
                             "cannot resolve; the text is kept)")
            self._inline(s + 1, k)
            return m.end()
        self.out.emit(text[i:s + 1], i)
        self._inline(s + 1, k)
        self.out.emit(f"]({md_url(url)}{m['title'] or ''})", k, length=m.end() - k)
        return m.end()

    def _inline(self, start: int, end: int) -> None:
        """Scans a link's text (no line-level constructs inside)."""
        outer, self.end = self.end, end
        try:
            self._scan(start, end, inline=True)
        finally:
            self.end = outer

    def _resolve(self, dest: str, pos: int) -> str | None:
        """A link address with its template parts resolved, or None when one cannot be."""
        parts: list[str] = []
        last = 0
        for m in _TEMPLATE_IN.finditer(dest):
            parts.append(dest[last:m.start()])
            last = m.end()
            construct = m.group()
            if construct.startswith(("{{<", "{{%")):
                name, positional, named = shortcode(construct[3:-3].strip())
                path = (positional[0] if positional else named.get("path", "")) if name.lower() in (
                    "ref", "relref") else ""
                if not path:
                    return None
                self.out.warn(pos, f"replaced {shorten(construct)} by the path {path} (check the link)")
                parts.append(path)
            elif construct.startswith("{{"):
                value = url_value(construct[2:-2].strip().strip("-"))
                if value is None:
                    return None
                parts.append(value)
            else:
                return None
        parts.append(dest[last:])
        return "".join(parts)

    # ---- the result

    def result(self) -> tuple[str, list[tuple[int, int]]]:
        """The output, with a last guard that no template delimiter survives outside code, and
        where in it the verbatim pieces (raw content) are."""
        chunks: list[str] = []
        prose: list[str] = []
        verbatim: list[tuple[int, int]] = []
        size = 0
        for piece, kind in zip(separated(self.out), self.out.kinds, strict=True):
            if kind == PROSE:
                prose.append(piece)
                continue
            chunks.append(without_delimiters("".join(prose)))
            size += len(chunks[-1])
            prose = []
            if kind == VERBATIM:
                verbatim.append((size, size + len(piece)))
            chunks.append(piece)
            size += len(piece)
        chunks.append(without_delimiters("".join(prose)))
        return "".join(chunks), verbatim
