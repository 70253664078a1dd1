"""Reading the text files a user writes (config.yaml, posts, subscriber CSVs): UTF-8, a leading
byte-order mark dropped, and when a file is not UTF-8, the line and byte that show it; and YAML
with its alias expansion bounded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class NotUtf8(ValueError):
    """The file is not UTF-8; the message names the first bad byte and its line."""

    def __init__(self, line: int, byte: int) -> None:
        super().__init__(f"line {line}: not UTF-8 text (byte 0x{byte:02X})")


def read_utf8(path: Path) -> str:
    """The file's text. Raises FileNotFoundError (and other OSErrors) or NotUtf8."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NotUtf8(raw[: exc.start].count(b"\n") + 1, raw[exc.start]) from None
    return text.removeprefix("\ufeff")


# A config or a post's front matter has hundreds of nodes; a list of a few thousand tags is
# still fine. An alias "bomb" (anchors nested in anchors) expands to billions.
MAX_YAML_NODES = 100_000


class YamlTooLarge(ValueError):
    """The YAML's aliases expand to more nodes than any real file has (or refer to themselves)."""

    def __init__(self, line: int, why: str = "") -> None:
        super().__init__(f"line {line}: " + (why or f"its aliases (*name) expand to more than "
                         f"{MAX_YAML_NODES:,} values (a YAML alias bomb?); write the values out "
                         "instead of using aliases"))


def load_yaml(text: str, loader: type[yaml.SafeLoader] = yaml.SafeLoader) -> tuple[Any, yaml.Node | None]:
    """The document and its node tree (for line numbers). The expanded size is counted on the
    composed nodes before anything is built, so time and memory stay bounded. Raises
    yaml.YAMLError for a syntax error, YamlTooLarge for an alias bomb or a recursive alias."""
    reader = loader(text)
    try:
        node = reader.get_single_node()
        if node is None:
            return None, None
        _check_size(node)
        return reader.construct_document(node), node
    except RecursionError:
        raise YamlTooLarge(reader.get_mark().line + 1, "nested too deeply; "
                           "flatten the lists and mappings") from None
    finally:
        reader.dispose()


def _check_size(root: yaml.Node) -> None:
    """Each node's expanded size, memoized per node object (an alias is the same object as its
    anchor), so the count costs one pass over the document, not over its expansion."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        if id(node) in open_nodes:          # an alias inside its own anchor: infinite
            raise YamlTooLarge(node.start_mark.line + 1)
        open_nodes.add(id(node))
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        total = 1
        for child in children:
            total += size(child)
            if total > MAX_YAML_NODES:
                raise YamlTooLarge(child.start_mark.line + 1)
        open_nodes.discard(id(node))
        sizes[id(node)] = total
        return total

    size(root)
