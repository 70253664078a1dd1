"""Sanitized HTML -> the plain-text part of an email.

Headings are underlined, lists keep their bullets and numbers, quotations are prefixed with
"> ", code keeps its layout, and links are shown footnote-style ("text [1]" and a list of the
URLs at the end), so a reader of the text part can follow every link.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from html.parser import HTMLParser

WIDTH = 72
BLOCKS = {"p", "div", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "li", "blockquote", "pre",
          "table", "tr", "hr", "figure", "figcaption", "section", "article", "dl", "dt", "dd"}
VOID = {"br", "hr", "img", "wbr", "col"}


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
    def __init__(self, width: int) -> None:
        self.width = width
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

    def inline(self, children: list[_Node | str], keep_space: bool = False) -> str:
        parts: list[str] = []
        for child in children:
            if isinstance(child, str):
                parts.append(child)
            elif child.tag == "br":
                parts.append("\n")
            elif child.tag == "img":
                alt = child.attrs.get("alt", "").strip()
                parts.append(f"[{alt}]" if alt else "")
            elif child.tag == "a":
                parts.append(self.link(child, keep_space))
            else:
                parts.append(self.inline(child.children, keep_space))
        return "".join(parts)

    def link(self, node: _Node, keep_space: bool) -> str:
        text = self.inline(node.children, keep_space)
        href = node.attrs.get("href", "")
        if not href:
            return text
        shown = href.removeprefix("mailto:")
        if not text.strip() or text.strip() in (href, shown):
            return shown
        self.links.append(href)
        return f"{text} [{len(self.links)}]"

    def wrap(self, text: str, indent: str) -> str:
        lines = []
        for part in text.split("\n"):
            lines.append(textwrap.fill(part.strip(), width=self.width, initial_indent=indent,
                                       subsequent_indent=indent, break_long_words=False,
                                       break_on_hyphens=False) or indent.rstrip())
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
    from pipeline.render.cutting import ELLIPSIS, sentence_ends, window  # pysbd loads lazily

    # A preheader shows ~100 characters; segmenting more of a long post is wasted work.
    head, cut_short = window(plain_text(html), 400)
    if not head:
        return ""
    end = sentence_ends(head, language)[0]
    return head[:end].strip() + (ELLIPSIS if cut_short and end == len(head) else "")


def plain_text(html: str) -> str:
    """The running text of the paragraphs and list items of `html`, whitespace collapsed,
    without link references (the source of excerpts and preheaders)."""
    builder = _TreeBuilder()
    builder.feed(html)
    builder.close()
    renderer = _Renderer(10**9)
    paragraphs = [" ".join(renderer.inline(n.children).split())
                  for n in _find_all(builder.root, {"p", "li"})]
    return " ".join(p for p in paragraphs if p) or " ".join(renderer.inline([builder.root]).split())


def _find_all(node: _Node, tags: set[str]) -> list[_Node]:
    found: list[_Node] = []
    for child in node.children:
        if isinstance(child, _Node):
            found.extend([child] if child.tag in tags else _find_all(child, tags))
    return found
