"""The URLs in a text, found as twitter-text's `extract_urls_with_indices` finds them, without
importing twitter-text.

twitter-text finds URLs with one regular expression holding every top-level domain it knows as an
alternation (twice: once more for the domains of URLs written without a protocol); compiling those
takes a third of a second, paid by every command that counts a post for X or Mastodon. Here the
same expression runs in pieces: the small ones (what may precede a URL, a label of the domain, the
port, path and query after it) are twitter-text's own patterns, and where its regex would try each
top-level domain in turn at a position, a dictionary lookup finds the first one it would accept.
The pieces are tried in the order the regex backtracks through them, so the first match is the
regex's first match. tests/test_twitter_text_data.py holds this to twitter-text on its conformance
suite, its list of top-level domains, the corpora and generated texts.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from pipeline.networks import twitter_data as data

# A match starts at most this far before its domain: a preceding character and "https://".
_FARTHEST = 1 + len("https://")


@dataclass(frozen=True, kw_only=True)
class _Rules:
    preceding: re.Pattern[str]          # the character before a URL (or the start of the text)
    protocol: re.Pattern[str]
    subdomain: re.Pattern[str]          # one label and its dot
    label_run: re.Pattern[str]          # characters a label may hold, up to the end
    label_run_start: re.Pattern[str]    # the same, starting after a character no label holds
    domain_name: re.Pattern[str]        # the label before the top-level domain, and its dot
    punycode: re.Pattern[str]
    after_tld: re.Pattern[str]
    after_domain: re.Pattern[str]       # port, path, query
    ascii_label: re.Pattern[str]
    tco: re.Pattern[str]
    no_protocol_after: re.Pattern[str]
    tlds: dict[str, int]                # a top-level domain, folded -> its place in the alternation
    tld_lengths: tuple[int, ...]
    tld_starts: frozenset[str]          # the first character of each, folded
    folding: dict[int, str]             # str.translate table: case-insensitive as `re` is


@cache
def _rules() -> _Rules:
    """Compiled on the first URL search (some 15 ms: twitter-text's import takes a third of a second)."""
    tlds = data.TLD_PLACES
    return _Rules(
        preceding=re.compile(data.PRECEDING, re.I), protocol=re.compile(data.PROTOCOL, re.I),
        subdomain=re.compile(data.SUBDOMAIN, re.I),
        label_run=re.compile(f"(?:[_-]|{data.DOMAIN_CHAR})*+\\Z", re.I),
        label_run_start=re.compile(f"(?<![_-]|{data.DOMAIN_CHAR})(?:[_-]|{data.DOMAIN_CHAR})*+\\Z", re.I),
        domain_name=re.compile(data.DOMAIN_NAME, re.I),
        punycode=re.compile(data.PUNYCODE, re.I), after_tld=re.compile(data.AFTER_TLD, re.I),
        after_domain=re.compile(data.AFTER_DOMAIN, re.I), ascii_label=re.compile(data.ASCII_LABEL, re.I),
        tco=re.compile(data.TCO_URL, re.I), no_protocol_after=re.compile(data.NO_PROTOCOL_AFTER),
        tlds=tlds, tld_lengths=tuple(sorted({len(t) for t in tlds})),
        tld_starts=frozenset(t[0] for t in tlds), folding=str.maketrans(data.TLD_FOLDING))


def _tld_end(rules: _Rules, text: str, start: int) -> int | None:
    """Where the top-level domain at `start` ends, as `(?:GTLD|CCTLD|PUNYCODE)` matches it: the
    first name of the alternation (in its order) that is there and is followed by a boundary;
    else a punycode label (which needs no boundary); else None."""
    best: tuple[int, int] | None = None
    # Folding maps a character to one character: the folded slice's slices are folded slices.
    folded = text[start:start + rules.tld_lengths[-1]].translate(rules.folding)
    if folded[:1] in rules.tld_starts:
        for length in rules.tld_lengths:
            if length > len(folded):
                break
            place = rules.tlds.get(folded[:length])
            if place is not None and (best is None or place < best[0]) and rules.after_tld.match(
                    text, start + length):
                best = (place, start + length)
    if best is not None:
        return best[1]
    found = rules.punycode.match(text, start)
    return found.end() if found else None


def _last_on_chain(start: int, step: Callable[[int], int | None], ok: Callable[[int], int | None],
                   memo: dict[int, int | None]) -> int | None:
    """`ok` at the last position, along start, step(start), step(step(start)), ..., where it gives
    an end; None if nowhere. This is how `(?:label\\.)*` then a pattern backtracks: as many labels as
    there are first, then one fewer, and so on. The chains of a text share their tails (a.b.c.com,
    b.c.com, ...), so each position's answer is kept in `memo`: linear, where the regex is not."""
    chain = [start]
    while chain[-1] not in memo and (following := step(chain[-1])) is not None:
        chain.append(following)
    best = memo[chain.pop()] if chain[-1] in memo else None
    for position in reversed(chain):
        if best is None:
            best = ok(position)
        memo[position] = best
    return best


def _domain_end(rules: _Rules, text: str, start: int, memo: dict[int, int | None]) -> int | None:
    """Where `valid_domain` matched at `start` ends: subdomains (as many as there are, then one
    fewer, ...), the domain name, the top-level domain. Each label ends at its dot, so each count
    of subdomains leaves one way to go on."""
    def step(position: int) -> int | None:
        found = rules.subdomain.match(text, position)
        return found.end() if found else None

    def ok(position: int) -> int | None:
        name = rules.domain_name.match(text, position)
        return _tld_end(rules, text, name.end()) if name else None

    return _last_on_chain(start, step, ok, memo)


@dataclass(frozen=True, kw_only=True)
class _Match:
    """One match of twitter-text's `extract_url` regex: its groups and where it ends."""

    before: str
    url_start: int
    protocol: str | None
    domain: str
    path: str | None
    end: int


def _match_at(rules: _Rules, text: str, start: int, memo: dict[int, int | None]) -> _Match | None:
    """The regex's match starting at `start`: the preceding character (or, at 0, the start of
    the text), then the protocol if there is one (else none), then the domain and what follows."""
    # Its `^` alternative would match at 0 too, and is the second choice there.
    preceding = rules.preceding.match(text, start)
    befores = [1] if preceding and preceding.end() > start else []
    for before in befores + ([0] if start == 0 else []):
        url_start = start + before
        protocol = rules.protocol.match(text, url_start)
        for scheme in ([protocol.group()] if protocol else []) + [None]:
            domain_start = url_start + len(scheme or "")
            domain_end = _domain_end(rules, text, domain_start, memo)
            if domain_end is None:
                continue
            tail = rules.after_domain.match(text, domain_end)     # all optional: it always matches
            return _Match(before=text[start:url_start], url_start=url_start, protocol=scheme,
                          domain=text[domain_start:domain_end], path=tail.group(2) if tail else None,
                          end=tail.end() if tail else domain_end)
    return None


def _next_match(rules: _Rules, text: str, position: int, memo: dict[int, int | None]) -> _Match | None:
    """The regex's next match at or after `position`, as `finditer` finds it. A match's domain
    starts with a label that ends at a dot, and the match starts at most _FARTHEST characters
    before the domain: for each dot in turn, only the starts that near the run of label
    characters before it are tried (the text between two dots holds no other label's start)."""
    low = position
    while (dot := text.find(".", position)) >= 0:
        # Where the run of label characters that ends at the dot starts (possessive and from a
        # run's start only, so that finding it is linear in the distance).
        run = rules.label_run.match(text, low, dot) or rules.label_run_start.search(text, low, dot)
        for start in range(max(low, (run.start() if run else dot) - _FARTHEST), dot):
            if (found := _match_at(rules, text, start, memo)) is not None:
                return found
        low, position = dot, dot + 1        # a match may start at the dot itself
    return None


def _ascii_domains(rules: _Rules, domain: str) -> list[tuple[int, int]]:
    """(start, end) of each match of `valid_ascii_domain` in `domain`, as `finditer` finds them:
    one label or more, then the top-level domain."""
    def step(position: int) -> int | None:
        found = rules.ascii_label.match(domain, position)
        return found.end() if found else None

    def ok(position: int) -> int | None:
        return _tld_end(rules, domain, position)

    spans, start, memo = [], 0, {}
    while start <= len(domain):
        first = step(start)
        end = _last_on_chain(first, step, ok, memo) if first is not None else None
        if end is None:
            start += 1
        else:
            spans.append((start, end))
            start = end
    return spans


def _valid_length(url: str, protocol: str, domain: str) -> bool:
    """twitter-text's is_valid_url: the domain converts to punycode, and the URL with it fits."""
    try:
        ascii_domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        return False
    length = len(protocol) + len(url) + len(ascii_domain) - len(domain)
    return bool(ascii_domain) and length <= data.MAX_URL_LENGTH


def extract_urls_with_indices(text: str, extract_urls_without_protocol: bool = True) -> list[dict[str, Any]]:
    """What twitter-text's function of the same name returns for `text`: each URL as
    {"url": ..., "indices": [start, end]}, in code points."""
    if text == "" or ("." not in text if extract_urls_without_protocol else ":" not in text):
        return []
    rules = _rules()
    urls: list[dict[str, Any]] = []
    position = 0
    memo: dict[int, int | None] = {}        # a domain's start -> its end (see _last_on_chain)
    while (found := _next_match(rules, text, position, memo)) is not None:
        position = found.end
        url, start, end = text[found.url_start:found.end], found.url_start, found.end
        if not _valid_length(url, found.protocol or data.DEFAULT_PROTOCOL, found.domain):
            continue
        if found.protocol is None:
            if not extract_urls_without_protocol or rules.no_protocol_after.match(found.before):
                continue
            last: dict[str, Any] | None = None
            for ascii_start, ascii_end in _ascii_domains(rules, found.domain):
                last = {"url": found.domain[ascii_start:ascii_end],
                        "indices": [start + ascii_start, start + ascii_end]}
                urls.append(last)
            if last is not None and found.path:
                # As twitter-text does: the last ASCII domain, with the whole URL's path and query.
                last["url"] = url.replace(found.domain, last["url"])
                last["indices"][1] = end
            continue
        tco = rules.tco.search(url)
        if tco:
            if tco.group(1) and len(tco.group(1)) > data.MAX_TCO_SLUG_LENGTH:
                continue
            url = tco.group(0)
            end = start + len(url)
        urls.append({"url": url, "indices": [start, end]})
    return urls
