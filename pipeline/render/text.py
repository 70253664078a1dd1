"""Sanitized HTML -> the plain-text part of an email.

Headings are underlined, lists keep their bullets and numbers, quotations are prefixed with
"> ", code keeps its layout, and links are shown footnote-style ("text [1]" and a list of the
URLs at the end), so a reader of the text part can follow every link. A link within the email
("#fn1") is shown as its text: the reader of the text part has it in front of them.

`plain_text` is the other reading: the running text of a post, the source of excerpts and
preheaders, without link numbers, footnote references, the footnotes or a "Sources" section.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from html.parser import HTMLParser

from pipeline.render.references import (
    is_back_link,
    is_marker_text,
    is_note_id,
    is_note_link,
    is_references_heading,
    strip_markers,
)

WIDTH = 72
BLOCKS = {"p", "div", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "li", "blockquote", "pre",
          "table", "tr", "hr", "figure", "figcaption", "section", "article", "dl", "dt", "dd"}
VOID = {"br", "hr", "img", "wbr", "col"}
HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}
CODE = {"code", "kbd", "samp", "pre", "var"}


@dataclass
class _Node:
    tag: str
    attrs: dict[str, str] = field(default_factory=dict)
    children: list[_Node | str] = field(default_factory=list)


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = _Node("root")
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = _Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


class _Renderer:
    """Renders nodes as text. `running`: the running text of `plain_text` (links as their text,
    no reference markers) instead of the email's text part (links numbered)."""

    def __init__(self, width: int, *, running: bool = False) -> None:
        self.width = width
        self.running = running
        self.links: list[str] = []

    def blocks(self, node: _Node, indent: str = "") -> list[str]:
        """Render a node's children as a list of text blocks (joined by blank lines)."""
        out: list[str] = []
        inline: list[_Node | str] = []

        def flush() -> None:
            text = " ".join(self.inline(inline).split())
            if text:
                out.append(self.wrap(text, indent))
            inline.clear()

        for child in node.children:
            if isinstance(child, _Node) and child.tag in BLOCKS:
                flush()
                out.extend(self.block(child, indent))
            else:
                inline.append(child)
        flush()
        return out

    def block(self, node: _Node, indent: str) -> list[str]:
        tag = node.tag
        if tag in ("h1", "h2"):
            text = " ".join(self.inline(node.children).split())
            return [f"{indent}{text}\n{indent}{('=' if tag == 'h1' else '-') * len(text)}"]
        if tag in ("h3", "h4", "h5", "h6"):
            text = " ".join(self.inline(node.children).split())
            return [f"{indent}{'#' * int(tag[1])} {text}"]
        if tag in ("ul", "ol"):
            return ["\n".join(self.items(node, indent))]
        if tag == "blockquote":
            inner = "\n\n".join(self.blocks(node, ""))
            return ["\n".join(f"{indent}> {line}".rstrip() for line in inner.splitlines())]
        if tag == "pre":
            code = self.inline(node.children, keep_space=True).rstrip("\n")
            return ["\n".join(f"{indent}    {line}".rstrip() for line in code.splitlines())]
        if tag == "hr":
            return [f"{indent}{'-' * 20}"]
        if tag == "table":
            return ["\n".join(self.rows(node, indent))]
        return self.blocks(node, indent)

    def items(self, node: _Node, indent: str) -> list[str]:
        lines: list[str] = []
        number = int(node.attrs.get("start") or 1)
        for child in node.children:
            if not (isinstance(child, _Node) and child.tag == "li"):
                continue
            marker = f"{number}. " if node.tag == "ol" else "- "
            number += 1
            body = self.blocks(child, indent + " " * len(marker))
            text = "\n".join(body).lstrip() if body else ""
            lines.append(f"{indent}{marker}{text}")
        return lines

    def rows(self, node: _Node, indent: str) -> list[str]:
        rows: list[str] = []
        for tr in _find_all(node, {"tr"}):
            cells = [" ".join(self.inline(c.children).split())
                     for c in tr.children if isinstance(c, _Node) and c.tag in ("td", "th")]
            rows.append(indent + " | ".join(cells))
        return rows

    def inline(self, children: list[_Node | str], keep_space: bool = False, code: bool = False) -> str:
        parts: list[str] = []
        for child in children:
            if isinstance(child, str):
                # Typed markers ("[1]") leave the running text; code keeps its brackets (items[1]).
                parts.append(strip_markers(child) if self.running and not code else child)
            elif child.tag == "br":
                parts.append("\n")
            elif child.tag == "img":
                alt = child.attrs.get("alt", "").strip()
                parts.append(f"[{alt}]" if alt else "")
            elif child.tag == "a":
                parts.append(self.link(child, keep_space, code))
            elif child.tag == "sup" and self.running:
                parts.append(self.sup(child, "".join(parts), code))
            else:
                parts.append(self.inline(child.children, keep_space, code or child.tag in CODE))
        return "".join(parts)

    def sup(self, node: _Node, before: str, code: bool) -> str:
        """A superscript in the running text: a footnote reference (it links to a note, or holds
        "1", "[2]", "*" after a word or punctuation) is left out; an exponent (m², x²) stays."""
        text = self.inline(node.children, code=code)
        links = _find_all(node, {"a"})
        if node.attrs.get("id", "").casefold().startswith("fnref") or \
                any(is_note_link(a.attrs.get("href", "")) for a in links):
            return ""
        tail = before.rstrip()[-3:]
        after_word = len(tail) == 3 and tail.isalpha()
        if is_marker_text(text) and (after_word or tail[-1:] in ".,;:!?)]\"”’'"):
            return ""
        return text

    def link(self, node: _Node, keep_space: bool, code: bool = False) -> str:
        text = self.inline(node.children, keep_space, code)
        href = node.attrs.get("href", "")
        if self.running:
            # A footnote reference written as a link (Pandoc: <a href="#fn1"><sup>1</sup></a>).
            return "" if is_note_link(href) and is_marker_text(text) else text
        if not href or href.startswith("#"):
            return text
        if is_back_link(href):
            return ""           # a footnote's "↩" back to its reference: nowhere to go in text
        shown = href.removeprefix("mailto:")
        if not text.strip() or text.strip() in (href, shown):
            return shown
        self.links.append(href)
        return f"{text} [{len(self.links)}]"

    def wrap(self, text: str, indent: str) -> str:
        return "\n".join(fill(part, self.width, indent) or indent.rstrip() for part in text.split("\n"))


def fill(text: str, width: int, indent: str) -> str:
    """What textwrap.fill gives (same indent on every line, long words and hyphenated words never
    broken) for a line whose words are separated by single spaces, in a tenth of the time: the
    text part wraps every paragraph of every edition."""
    room = width - len(indent)
    lines: list[str] = []
    line = ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > room:
            lines.append(indent + line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    if line:
        lines.append(indent + line)
    return "\n".join(lines)


def html_to_text(html: str, *, width: int = WIDTH) -> str:
    """Plain text for sanitized `html`, with footnote-style link references at the end."""
    builder = _TreeBuilder()
    builder.feed(html)
    builder.close()
    renderer = _Renderer(width)
    body = "\n\n".join(b for b in renderer.blocks(builder.root) if b.strip())
    if renderer.links:
        refs = "\n".join(f"[{i}] {url}" for i, url in enumerate(renderer.links, 1))
        body += "\n\nLinks:\n" + refs
    return body


def first_sentence(html: str, language: str = "en") -> str:
    """The first sentence of the running text of `html` (a preheader for a post with no summary);
    the start of it, with "…", when it runs past 400 characters."""
    from pipeline.render.cutting import first_sentence as first  # pysbd loads lazily

    return first(plain_text(html), language)


@lru_cache(maxsize=64)
def plain_text(html: str) -> str:
    """The running text of the paragraphs and list items of `html`, whitespace collapsed:
    without link numbers, footnote references and reference markers, the footnotes, or a
    section of sources (the source of excerpts and preheaders). Cached: a post's email and its
    snippets read the same text."""
    builder = _TreeBuilder()
    builder.feed(html)
    builder.close()
    renderer = _Renderer(10**9, running=True)
    paragraphs = [" ".join(renderer.inline(n.children).split())
                  for n in _paragraphs(builder.root, renderer)]
    return " ".join(p for p in paragraphs if p) or " ".join(renderer.inline([builder.root]).split())


def _paragraphs(node: _Node, renderer: _Renderer) -> list[_Node]:
    """The paragraphs and list items of `node` in order, leaving out footnotes (`<li id="fn1">`)
    and the section under a heading such as "Sources" (up to the next heading as high)."""
    found: list[_Node] = []
    skipping: int | None = None          # the level of the "Sources" heading being skipped
    for child in node.children:
        if not isinstance(child, _Node):
            continue
        if child.tag in HEADINGS:
            level = int(child.tag[1])
            if skipping is not None and level <= skipping:
                skipping = None
            if skipping is None and is_references_heading(renderer.inline(child.children)):
                skipping = level
        elif skipping is not None:
            continue
        elif child.tag in ("p", "li"):
            if not (child.tag == "li" and is_note_id(child.attrs.get("id", ""))):
                found.append(child)
        else:
            found.extend(_paragraphs(child, renderer))
    return found


def _find_all(node: _Node, tags: set[str]) -> list[_Node]:
    found: list[_Node] = []
    for child in node.children:
        if isinstance(child, _Node):
            found.extend([child] if child.tag in tags else _find_all(child, tags))
    return found
