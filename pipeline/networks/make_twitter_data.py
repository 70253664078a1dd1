"""Writes `twitter_data.py` from the installed twitter-text: what counting for X and Mastodon takes
from it, as plain data, so that counting never imports it (its import compiles regular expressions
of every top-level domain and every emoji sequence: a third of a second at each start).

    python -m pipeline.networks.make_twitter_data     # after upgrading twitter-text-parser

twitter-text is a test dependency, not a runtime one: only this generator and the tests, which
hold the counters to it, import it. Each piece is cut out of twitter-text's own compiled patterns
and checked to be put together the way this module expects, so that a twitter-text that builds its
patterns differently fails here, loudly, rather than counting differently.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

OUT = Path(__file__).with_name("twitter_data.py")
LOOKAHEAD = "(?=[^0-9a-zA-Z@+-]|$)"
WIDTH = 100


def _cut(text: str, head: str, tail: str) -> str:
    """`text` without `head` and `tail`, which it must start and end with."""
    if not (text.startswith(head) and text.endswith(tail)):
        raise SystemExit(f"twitter-text's pattern changed shape: expected {head!r}...{tail!r}, "
                         f"got {text[:60]!r}...{text[-60:]!r}")
    return text[len(head):len(text) - len(tail)]


def _alternatives(pattern: re.Pattern[str]) -> list[str]:
    """The top-level domains of valid_gtld / valid_cctld, in the order the regex tries them."""
    names = _cut(pattern.pattern, "(?:(?:", ")" + LOOKAHEAD + ")").split("|")
    special = [n for n in names if re.escape(n) != n]
    if special:
        raise SystemExit(f"a top-level domain is not a literal: {special[:3]}")
    return names


def _folding(tlds: list[str]) -> dict[str, str]:
    """Every character that a character of a top-level domain matches under re.IGNORECASE (and is
    not that character itself) -> one representative of its class. A literal matches under
    IGNORECASE exactly the characters this maps to the same representative (checked below)."""
    chars = sorted(set("".join(tlds)))
    anything = re.compile("[" + "".join(map(re.escape, chars)) + "]", re.IGNORECASE)
    every = "".join(chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF)
    matched = sorted({m.group() for m in anything.finditer(every)})
    alone = {c: re.compile(re.escape(c), re.IGNORECASE) for c in chars}
    classes = {x: frozenset(c for c in chars if alone[c].fullmatch(x)) for x in matched}
    representative = {x: min(group) for x, group in classes.items()}
    for x, group in classes.items():
        for c in chars:
            if (c in group) != (representative[x] == representative[c]):
                raise SystemExit(f"IGNORECASE is not an equivalence on {x!r} and {c!r}")
    return {x: rep for x, rep in representative.items() if x != rep}


def _pieces() -> dict[str, object]:
    from twitter_text.config import config
    from twitter_text.extract_urls import default_protocol, max_tco_slug_length, max_url_length
    from twitter_text.regexp.emoji import emoji, emoji_list
    from twitter_text.regexp.extract_url import extract_url
    from twitter_text.regexp.invalid_url_without_protocol_preceding_chars import (
        invalid_url_without_protocol_preceding_chars,
    )
    from twitter_text.regexp.valid_ascii_domain import valid_ascii_domain
    from twitter_text.regexp.valid_cctld import valid_cctld
    from twitter_text.regexp.valid_domain import valid_domain
    from twitter_text.regexp.valid_domain_chars import valid_domain_chars
    from twitter_text.regexp.valid_domain_name import valid_domain_name
    from twitter_text.regexp.valid_gtld import valid_gtld
    from twitter_text.regexp.valid_punycode import valid_punycode
    from twitter_text.regexp.valid_subdomain import valid_subdomain
    from twitter_text.regexp.valid_tco_url import valid_tco_url
    from twitter_text.regexp.valid_url_preceding_chars import valid_url_preceding_chars

    tlds = (f"(?:{valid_gtld.pattern}|{valid_cctld.pattern}|{valid_punycode.pattern})")
    if valid_domain.pattern != f"(?:{valid_subdomain.pattern}*{valid_domain_name.pattern}{tlds})":
        raise SystemExit("twitter-text's valid_domain changed shape")
    char = valid_domain_chars.pattern
    if valid_subdomain.pattern != f"(?:(?:{char}(?:[_-]|{char})*)?{char}\\.)":
        raise SystemExit("twitter-text's valid_subdomain changed shape")
    ascii_label = _cut(valid_ascii_domain.pattern, "(?:", ")+" + tlds)
    head = f"(({valid_url_preceding_chars.pattern})((https?:\\/\\/)?("
    tail = _cut(extract_url.pattern, head + valid_domain.pattern + ")", "))")
    if extract_url.flags & re.IGNORECASE == 0 or valid_ascii_domain.flags & re.IGNORECASE == 0:
        raise SystemExit("twitter-text's URL patterns are no longer case-insensitive")
    gtld, cctld = _alternatives(valid_gtld), _alternatives(valid_cctld)
    # The emoji regex: every sequence of two or more code points, longest first, then one class of
    # the single code points. Literals tried longest first: the longest one that matches wins.
    sequences = [e.codepoint.split() for e in emoji_list if len(e.codepoint.split()) > 1]
    escaped = sorted(("".join("\\U" + c.zfill(8) for c in s) for s in sequences), key=len, reverse=True)
    singles_class = emoji.pattern.rsplit("|", 1)[1]
    if emoji.pattern != "|".join(escaped) + "|" + singles_class or not singles_class.startswith("["):
        raise SystemExit("twitter-text's emoji regex changed shape")
    multi = ["".join(chr(int(c, 16)) for c in s) for s in sorted(sequences, key=len, reverse=True)]
    every = "".join(chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF)
    singles = "".join(m.group() for m in re.compile(singles_class).finditer(every))
    folding = _folding(gtld + cctld)
    # A name, each character folded to its class's representative -> its place in the
    # alternation (the first, should two names fold alike).
    places: dict[str, int] = {}
    for place, name in enumerate(gtld + cctld):
        places.setdefault("".join(folding.get(c, c) for c in name), place)
    lengths: dict[str, set[int]] = {}
    for sequence in multi:
        lengths.setdefault(sequence[0], set()).add(len(sequence))
    return {
        "OPTIONS": config["defaults"],
        "DEFAULT_PROTOCOL": default_protocol, "MAX_URL_LENGTH": max_url_length,
        "MAX_TCO_SLUG_LENGTH": max_tco_slug_length,
        "PRECEDING": valid_url_preceding_chars.pattern, "PROTOCOL": "https?:\\/\\/",
        "SUBDOMAIN": valid_subdomain.pattern, "DOMAIN_CHAR": char, "DOMAIN_NAME": valid_domain_name.pattern,
        "PUNYCODE": valid_punycode.pattern, "AFTER_TLD": LOOKAHEAD, "AFTER_DOMAIN": tail,
        "ASCII_LABEL": ascii_label, "TCO_URL": valid_tco_url.pattern,
        "NO_PROTOCOL_AFTER": invalid_url_without_protocol_preceding_chars.pattern,
        "TLD_FOLDING": folding, "TLD_PLACES": places,
        "EMOJI_SEQUENCES": " ".join(multi), "EMOJI_SINGLES": singles,
        "EMOJI_LENGTHS": {c: tuple(sorted(ls, reverse=True)) for c, ls in sorted(lengths.items())},
        "EMOJI_CHARACTERS": "".join(sorted({c for e in (*multi, *singles) for c in e if ord(c) > 0x7F})),
    }


def _literal(name: str, value: object) -> str:
    """`NAME = value` in lines of at most WIDTH characters, every string in ASCII escapes."""
    text = ascii(value)
    if isinstance(value, dict) and name != "OPTIONS":
        items = [f"{k!a}: {v!a}," for k, v in value.items()]
        lines, line = [], ""
        for item in items:
            if line and len(line) + len(item) + 1 > WIDTH - 4:
                lines.append(line)
                line = ""
            line += (" " if line else "") + item
        lines.append(line)
        return f"{name} = {{\n" + "".join(f"    {line}\n" for line in lines) + "}\n"
    if not isinstance(value, str) or len(name) + len(text) + 3 <= WIDTH:
        return f"{name} = {text}\n"
    lines, line = [], ""
    for item in re.findall(r"\\U[0-9a-f]{8}|\\u[0-9a-f]{4}|\\x[0-9a-f]{2}|\\.|[^\\]", text[1:-1]):
        if len(line) + len(item) > WIDTH - 8:
            lines.append(line)
            line = ""
        line += item
    lines.append(line)
    quote = text[0]       # ascii() quotes with " a string that holds a '
    return f"{name} = (\n" + "".join(f"    {quote}{line}{quote}\n" for line in lines) + ")\n"


def main() -> None:
    from importlib.metadata import version as installed

    version = f"twitter-text-parser {installed('twitter-text-parser')}"
    header = ('"""twitter-text\'s URL and emoji rules and its v3 weights, as data: generated by\n'
              "`python -m pipeline.networks.make_twitter_data` from the installed twitter-text\n"
              f"({version}); do not edit.\"\"\"\n\n"
              "# ruff: noqa: E501\n\n")
    body = "".join(_literal(name, value) for name, value in _pieces().items())
    OUT.write_text(header + body, encoding="utf-8")


if __name__ == "__main__":
    main()
