"""MDX in a post's body -> Markdown, the first pass of `leftovers.clean_body` (MDX files only).

Takes the body's text (newlines already `\n`) and a function from a position in it to its file
line; `Mdx(text, locate).run()` gives an `Output` (see `markdown_out.py`) whose pieces, joined, are
the body without MDX: imports, exports and JSX comments go, image components become Markdown images,
other components go but their content stays (dedented as MDX reads it), expressions go; one warning
per kind of thing dropped. Template syntax (`{{`, `{%`, `{#`) is left for `template_tags.py`.

One left-to-right scan in about linear time (every search is bounded or cached). Code is found with
line rules rather than a Markdown parser, since MDX has no indented code and its components nest.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from pipeline.intake.markdown_out import (
    BLANK_OR_SPACE,
    CODE,
    MAX_TAG,
    PROSE,
    RUN,
    Output,
    Runs,
    md_image,
    shorten,
)

_FENCE = re.compile(r"(?P<pre>[ \t]*(?:>[ \t]*)*)(?P<fence>`{3,}|~{3,})(?P<info>[^\n]*)")
_ESM = re.compile(r"(?:import(?=[\s{*\"'])|export(?=[\s{*]))")
_IMPORT_OK = re.compile(r"import\s+(?:[^;]*?\bfrom\s*)?[\"'][^\"'\n]+[\"']", re.S)
_EXPORT_OK = re.compile(r"export\s+(?:default|const|let|var|function|async|class|type|interface|\{|\*)")
_DEFAULT_IMPORT = re.compile(r"import\s+([A-Za-z_$][\w$]*)\s*(?:,[^;]*?)?\s+from\s*[\"']([^\"'\n]+)[\"']")
_JSX_NAME = re.compile(r"[A-Za-z][\w.:-]*")
_JSX_ATTR = re.compile(r"[A-Za-z_:][\w:.-]*")
_JSX_STRING = re.compile(r"\"[^\"]*\"|'[^']*'")
_JSX_SPACE = re.compile(r"\s*")
_JS_STRING = re.compile(r"\s*(?:\"([^\"\\]*)\"|'([^'\\]*)'|`([^`\\$]*)`)\s*")
_JS_NAME = re.compile(r"\s*([A-Za-z_$][\w$]*)(?:\.src)?\s*")
_IMAGE_COMPONENTS = {"Image", "Picture", "Figure", "Img", "img"}
_MDX_PLAIN = re.compile(r"[^\n`\\{<]+")
_PARAGRAPH_END = re.compile(r"\n(?=[ \t]*(?:\n|$)|[ \t>]*(?:```|~~~))")
_WS = re.compile(r"[ \t]*")
_NONBLANK_LINE = re.compile(r"^[ \t]*\S", re.M)
_BRACES = re.compile(r"[{}]")


class _Next:
    """The next match of a pattern at or after a position; a search is reused while it still
    answers, so a forward scan costs one pass over the text, not one per question."""

    def __init__(self, pattern: re.Pattern[str], text: str) -> None:
        self._pattern, self._text = pattern, text
        self._from, self._found = 1, -1      # nothing searched yet

    def at(self, pos: int) -> int:
        """Where the next match at or after `pos` starts (the text's length when there is none)."""
        if not (self._from <= pos <= self._found):
            m = self._pattern.search(self._text, pos)
            self._from, self._found = pos, m.start() if m else len(self._text)
        return self._found


@dataclass
class _Tag:
    """One JSX/HTML tag as written: `<Name a="x" b={y}>`, `</Name>`, `<Name />`, `<>`."""

    name: str
    end: int
    closing: bool = False
    self_closing: bool = False
    attrs: list[tuple[str, str]] = field(default_factory=list)   # (name, raw value: "x", {y} or "")


class Mdx:
    """JSX in an MDX body -> Markdown: imports, exports and comments go, image components become
    images, other components go (their content stays, dedented as MDX reads it), expressions go."""

    def __init__(self, text: str, locate: Callable[[int], int]) -> None:
        self.text = text
        self.n = len(text)
        self.out = Output(locate)
        self.runs = Runs(text)
        self.imports: dict[str, str] = {}       # default-imported name -> the path it names
        self.components: dict[str, int] = {}    # removed component names, first position
        self.stack: list[tuple[str, int]] = []  # open block-level components and their indent
        self.dedent = 0                         # the indents of `stack`, summed
        self.open: dict[str, int] = {}          # how many of each name `stack` holds
        self._braces: dict[int, int] = {}       # "{" position -> its "}" in the window below
        self._window = (0, -1)
        self._paragraph_end = _Next(_PARAGRAPH_END, text)

    # ---- the scan

    def run(self) -> Output:
        i, at_line_start = 0, True
        while i < self.n:
            if at_line_start:
                at_line_start = False
                j, whole_lines = self._line_start(i)
                if whole_lines:
                    i, at_line_start = j, True
                    continue
                i = j
                if i >= self.n:
                    break
            c = self.text[i]
            if c == "\n":
                self.out.newline(i)
                i, at_line_start = i + 1, True
            elif c == "`":
                i = self._span(i)
            elif c == "\\":
                i = self._copy(i, 2 if self.text[i + 1:i + 2] in ("`", "{", "}", "<") else 1)
            elif c == "{":
                i = self._brace(i)
            elif c == "<":
                i = self._angle(i)
            else:
                m = _MDX_PLAIN.match(self.text, i)
                i = self._copy(i, m.end() - i)
        self.out.finish()
        if self.components:
            names = ", ".join(self.components)
            self.out.warn(min(self.components.values()),
                          f"removed JSX components: {names} (the email cannot show them; their text is kept)")
        return self.out

    def _copy(self, i: int, length: int, kind: int = PROSE) -> int:
        self.out.emit(self.text[i:i + length], i, kind)
        return i + length

    def _line_end(self, i: int) -> int:
        """The position just after the newline ending the line at `i` (or the end of the text)."""
        k = self.text.find("\n", i)
        return self.n if k < 0 else k + 1

    def _line_start(self, i: int) -> tuple[int, bool]:
        """Line-level MDX: dedenting inside components, fences, ESM, component tags on their own
        lines. Returns the position to go on from and whether whole lines were consumed."""
        indent = _WS.match(self.text, i).end() - i
        dedent = min(indent, self.dedent)
        i += dedent
        fence = _FENCE.match(self.text, i)
        if fence and not (fence["fence"][0] == "`" and "`" in fence["info"]):
            return self._fence(i, fence, dedent), True
        if not self.stack and indent == 0 and _ESM.match(self.text, i):
            end = self._esm(i)
            if end is not None:
                return end, True
        j = i + indent - dedent
        if self.text.startswith("<", j):
            tag = self._tag(j)
            if tag and BLANK_OR_SPACE.match(self.text, tag.end):
                return self._tag_line(i, j, tag, indent), True
        return i, False

    def _fence(self, i: int, fence: re.Match[str], dedent: int) -> int:
        """A fenced code block, copied with its lines dedented like the rest of the component."""
        char, length = fence["fence"][0], len(fence["fence"])
        closer = re.compile(rf"[ \t]*(?:>[ \t]*)*{re.escape(char)}{{{length},}}[ \t]*(?:\n|$)")
        k = self._line_end(i)
        self.out.emit(self.text[i:k], i, CODE)
        while k < self.n:
            skip = min(_WS.match(self.text, k).end() - k, dedent)
            line_end = self._line_end(k)
            self.out.emit(self.text[k + skip:line_end], k + skip, CODE)
            done = closer.match(self.text, k)
            k = line_end
            if done:
                break
        return k

    def _esm(self, i: int) -> int | None:
        """An import/export statement at the top level: its end (after its last newline), or None
        when the line only starts with the word (then it is text)."""
        depth, k, quote = 0, i, ""
        while k < self.n:
            line_end = self._line_end(k)
            for ch in self.text[k:line_end]:
                if quote:
                    quote = "" if ch == quote else quote
                elif ch in "\"'`":
                    quote = ch
                elif ch in "([{":
                    depth += 1
                elif ch in ")]}":
                    depth -= 1
            statement = self.text[i:line_end].rstrip()
            k = line_end
            if depth <= 0 and not quote and not statement.endswith(("=", ",", "(", "{", "[", "=>", "from")):
                break
            if BLANK_OR_SPACE.match(self.text, k) or k >= self.n:
                break
        statement = self.text[i:k]
        if statement.startswith("import"):
            if not _IMPORT_OK.match(statement):
                return None
            named = _DEFAULT_IMPORT.match(statement)
            if named:
                self.imports[named.group(1)] = named.group(2)
        elif not _EXPORT_OK.match(statement):
            return None
        return k

    def _tag_line(self, i: int, j: int, tag: _Tag, own: int) -> int:
        """A line holding one tag and nothing else (`i`: the line after dedenting, `j`: the tag,
        `own`: the line's indent as written)."""
        end = self._line_end(tag.end)
        if tag.name in _IMAGE_COMPONENTS and not tag.closing:
            image = self._image(j, tag)
            if image:
                # Blank lines around it: inside an HTML block an image line would stay literal
                # text; and at most 3 spaces of indent, or it would be an indented code block.
                self.out.emit(f"\n{self.text[i:j][:3]}{image}\n\n", j, length=end - j)
            return end
        if tag.name and not tag.name[:1].isupper():
            if any(v.startswith("{") for _, v in tag.attrs):
                self.out.emit(self.text[i:j] + self._html(j, tag) + self.text[tag.end:end], i, length=end - i)
            else:
                self.out.emit(self.text[i:end], i)      # an HTML tag on its own line stays
            return end
        if tag.closing:
            self._close(tag.name)
        elif not tag.self_closing:
            nxt = _NONBLANK_LINE.search(self.text, end)
            inner = (_WS.match(self.text, nxt.start()).end() - nxt.start()) if nxt else own
            # MDX reads a component's indented content as plain Markdown; CommonMark would make
            # it an indented code block, so the indent the component adds goes with it.
            self.stack.append((tag.name, max(0, inner - own)))
            self.dedent += self.stack[-1][1]
            self.open[tag.name] = self.open.get(tag.name, 0) + 1
        if not tag.closing and tag.name:
            self.components.setdefault(tag.name, j)
        # A blank line where the tag was: MDX reads a component's content as blocks of their own,
        # so no HTML block or paragraph may run on across the removed tag.
        self.out.emit("\n", j, length=end - j)
        return end

    def _close(self, name: str) -> None:
        """A closing tag: the components opened since its opener are closed with it."""
        if not self.open.get(name):
            return
        while self.stack:
            opened, indent = self.stack.pop()
            self.dedent -= indent
            self.open[opened] -= 1
            if opened == name:
                return

    # ---- inline

    def _span(self, i: int) -> int:
        length = len(RUN.match(self.text, i).group())
        closer = self.runs.closer(length, i + length, self._paragraph_end.at(i))
        if closer is None:
            return self._copy(i, length)
        return self._copy(i, closer + length - i, CODE)

    def _brace(self, i: int) -> int:
        text = self.text
        if text.startswith(("{{", "{%", "{#"), i):
            return self._copy(i, 2)       # template syntax: the next pass's business
        if text.startswith("{/*", i):
            end = text.find("*/}", i + 3, i + MAX_TAG)
            if end >= 0:
                self.out.drop()
                return end + 3
        close = self._match(i)
        if close is None:
            return self._copy(i, 1)
        literal = _JS_STRING.fullmatch(text, i + 1, close)
        if literal:                        # {" "} and {"text"} are just text
            self.out.emit(next(g for g in literal.groups() if g is not None), i, length=close + 1 - i)
        elif not text[i + 1:close].strip() or text[i + 1:close].strip().startswith("/*"):
            self.out.drop()
        else:
            self.out.drop()
            self.out.warn(i, f"dropped {shorten(text[i:close + 1])} "
                             "(a JSX expression the email cannot show)")
        return close + 1

    def _match(self, i: int) -> int | None:
        """The "}" closing the "{" at `i`, within its paragraph (strings in braces are not read)."""
        if not self._window[0] <= i <= self._window[1]:
            end = self._paragraph_end.at(i)
            self._window = (i, end)
            self._braces = {}
            open_: list[int] = []
            for m in _BRACES.finditer(self.text, i, end):
                if m.group() == "{":
                    open_.append(m.start())
                elif open_:
                    self._braces[open_.pop()] = m.start()
        return self._braces.get(i)

    def _angle(self, i: int) -> int:
        tag = self._tag(i)
        if tag is None:
            return self._copy(i, 1)
        if tag.name == "":                     # <> and </>: fragments wrap, they show nothing
            self.out.drop()
        elif tag.name in _IMAGE_COMPONENTS and not tag.closing:
            image = self._image(i, tag)
            if image:
                self.out.emit(image, i, length=tag.end - i)
            else:
                self.out.drop()
        elif tag.name[:1].isupper():
            self.out.drop()
            if tag.closing:
                self._close(tag.name)
            else:
                self.components.setdefault(tag.name, i)
        elif any(v.startswith("{") for _, v in tag.attrs):
            self.out.emit(self._html(i, tag), i, length=tag.end - i)
        else:
            return self._copy(i, tag.end - i)
        return tag.end

    def _html(self, i: int, tag: _Tag) -> str:
        """An HTML tag without its JSX-expression attributes (no HTML meaning; a style object is
        dropped silently, since the email's styles are its own)."""
        kept = []
        for name, value in tag.attrs:
            if value.startswith("{"):
                if name not in ("style", "className"):
                    self.out.warn(i, f"dropped {shorten(f'{name}={value}')} from <{tag.name}> "
                                     "(a JSX expression the email cannot show)")
                continue
            kept.append(f" {name}={value}" if value else f" {name}")
        return f"<{tag.name}{''.join(kept)}{' /' if tag.self_closing else ''}>"

    def _image(self, i: int, tag: _Tag) -> str | None:
        attrs = dict(tag.attrs)
        src = self._value(attrs.get("src", ""), paths=True)
        alt = self._value(attrs.get("alt", ""), paths=False) or ""
        if not src:
            self.out.warn(i, f"dropped {shorten(self.text[i:tag.end])} (an image whose src is not a path)")
            return None
        return md_image(alt, src)

    def _value(self, raw: str, *, paths: bool) -> str | None:
        """A JSX attribute's value when it is a string (or, for a src, a default-imported name)."""
        if raw[:1] in "\"'":
            return raw[1:-1]
        if raw.startswith("{"):
            literal = _JS_STRING.fullmatch(raw, 1, len(raw) - 1)
            if literal:
                return next(g for g in literal.groups() if g is not None)
            name = _JS_NAME.fullmatch(raw, 1, len(raw) - 1)
            if paths and name:
                return self.imports.get(name.group(1))
        return None

    def _tag(self, i: int) -> _Tag | None:
        """The JSX tag at `i` (attributes may span lines, values may be {expressions}), or None."""
        text, limit = self.text, min(self.n, i + MAX_TAG)
        k = i + 1
        closing = text.startswith("/", k)
        k += closing
        if text.startswith(">", k):
            return _Tag("", k + 1, closing=closing)
        name = _JSX_NAME.match(text, k)
        if not name:
            return None
        tag = _Tag(name.group(), 0, closing=closing)
        k = name.end()
        while k < limit:
            space = k
            k = _JSX_SPACE.match(text, k, limit).end()
            if text.count("\n", space, k) > 1 or k >= limit:
                return None
            if text.startswith("/>", k):
                tag.self_closing, tag.end = True, k + 2
                return tag
            if text.startswith(">", k):
                tag.end = k + 1
                return tag
            if closing:
                return None
            if text.startswith("{", k):                 # {...spread}
                close = self._match(k)
                if close is None:
                    return None
                k = close + 1
                continue
            attr = _JSX_ATTR.match(text, k)
            if not attr:
                return None
            k = _JSX_SPACE.match(text, attr.end()).end()
            if not text.startswith("=", k):
                tag.attrs.append((attr.group(), ""))
                continue
            k = _JSX_SPACE.match(text, k + 1).end()
            value = _JSX_STRING.match(text, k, limit)
            if value:
                end = value.end()
            elif text.startswith("{", k):
                close = self._match(k)
                if close is None:
                    return None
                end = close + 1
            else:
                return None
            tag.attrs.append((attr.group(), text[k:end]))
            k = end
        return None
