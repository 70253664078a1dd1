"""Post -> Snippet per network: title, the best-fitting start of the summary or body, hashtags
from `tags`, and the canonical link, counted the way each network counts.

The text is cut at a sentence boundary if one fits, else at a word boundary with "…". It is never
cut inside a word, a URL, a hashtag or a grapheme cluster; the link is always kept. The excerpt
is taken from the post's text without its references ("[1]", footnotes, "Sources"), which the
reader of a snippet cannot follow.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import regex

from pipeline.config import Config
from pipeline.errors import RenderError
from pipeline.models import Link, Post, Snippet
from pipeline.networks.base import Network
from pipeline.networks.registry import NETWORKS
from pipeline.render.cutting import excerpt_cuts, segmented
from pipeline.render.fitting import fit
from pipeline.render.links import SOCIAL_MEDIUM, tag_url, utm_params
from pipeline.render.references import strip_markers
from pipeline.render.text import plain_text
from pipeline.render.thread import numbered, split_thread

_NOT_HASHTAG = regex.compile(r"[^\p{L}\p{M}\p{N}_]+")
# Symbols that carry a name's meaning, spelled out before the rest is dropped: C# and F# are
# CSharp and FSharp, C++ is Cpp, .NET is DotNet (and node.js, NodeJS: see SPELLING).
_SHARP = regex.compile(r"(?<=\p{L})#(?![\p{L}\p{N}])")
_PLUS_PLUS = regex.compile(r"(?<=\p{L})\+\+(?![\p{L}\p{N}])")
_LEADING_DOT = regex.compile(r"(?<![\p{L}\p{N}])\.(?=\p{L})")
# How a word is written inside a CamelCased hashtag when capitalizing it is not how it is known.
SPELLING = {"js": "JS", "net": "Net"}


def snippets(post: Post, config: Config) -> dict[str, Snippet]:
    """One snippet per enabled network in config. Raises RenderError for an override that
    does not fit."""
    return {name: snippet(post, name, config)
            for name, settings in config.networks.items() if settings.enabled}


def snippet(post: Post, network: str, config: Config, *, channel: str | None = None,
            limit: int | None = None) -> Snippet:
    """The snippet of `post` for `network`; UTM parameters name `channel` (default: network);
    `limit` lowers the network's limit (a Telegram photo's caption)."""
    net = NETWORKS[network]()
    limit = min(limit, config.network_limit(network)) if limit else config.network_limit(network)
    url = tag_url(post.canonical_url, utm_params(config, channel or network, post.slug,
                                                 SOCIAL_MEDIUM), config)
    found, notes = _hashtags(post.tags)
    tags = found[: config.networks[network].hashtags]
    override = post.social.get(network)
    if override:
        return _override(post, net, override, url, limit)
    source = segmented(excerpt_source(post), _language(config))
    # The excerpt comes from the first limit * 4 characters (at a unit or more a character, URLs
    # aside, no more can fit); only as much of it as can fit is segmented.
    fitted = fit(net, title=post.title, source=source, chars=limit * 4, tags=tags, url=url, limit=limit)
    return _snippet(net, fitted.text, url, limit, fitted.tags, length=fitted.length, notes=notes)


# Template syntax an author quotes in inline code (`{{ site.url }}`): fine in the email, where it
# shows as code, but in a snippet it reads as a template that failed to render.
_TEMPLATE_SYNTAX = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.S)


def excerpt_source(post: Post) -> str:
    """The text excerpts are cut from: the summary, or the running text of the body; without
    reference markers or template syntax either way."""
    text = strip_markers(post.summary) if post.summary else plain_text(post.body_html)
    if "{" not in text:
        return text
    return re.sub(r"[ \t]{2,}", " ", _TEMPLATE_SYNTAX.sub("", text))


def _language(config: Config) -> str:
    return config.site.locale.split("_")[0]


def _override(post: Post, net: Network, text: str, url: str, limit: int) -> Snippet:
    text = text.strip()
    shown = net.link_text(url)
    found = _find_canonical(text, post.canonical_url)
    # Where the author placed the link, tag it (and shorten it where the network does).
    text = text[:found[0]] + shown + text[found[1]:] if found else f"{text}\n\n{shown}"
    length = net.count(text)
    if length > limit:
        raise RenderError(f"{post.path}: social.{net.name}: the override is {length} long "
                          f"as {net.name} counts it; the limit is {limit}. Shorten it.")
    return _snippet(net, text, url, limit, (), length=length)


def _find_canonical(text: str, canonical: str) -> tuple[int, int] | None:
    """Where the canonical URL stands as a whole word of `text` (not as the start of a longer URL)."""
    for m in regex.finditer(r"\S+", text):
        if m.group().rstrip(".,;:!?)»”’") in (canonical, canonical.rstrip("/")):
            return m.start(), m.start() + len(m.group().rstrip(".,;:!?)»”’"))
    return None


def _snippet(net: Network, text: str, url: str, limit: int, tags: Sequence[str], *,
             length: int | None = None, notes: Sequence[str] = ()) -> Snippet:
    shown = net.link_text(url)
    start = text.rfind(shown) if shown in text else text.rfind(url)
    end = start + len(shown if shown in text else url)
    return Snippet(network=net.name, text=text, length=net.count(text) if length is None else length,
                   limit=limit, link=Link(start=start, end=end, uri=url), tags=tuple(tags),
                   notes=tuple(notes))


def hashtags(tags: Sequence[str]) -> list[str]:
    """`tags` as hashtags: "mental health" -> "#MentalHealth", "C#" -> "#CSharp", "node.js" ->
    "#NodeJS"; a tag with no letter (2024) or nothing left is dropped (see `_hashtags`)."""
    return _hashtags(tags)[0]


def _hashtags(tags: Sequence[str]) -> tuple[list[str], list[str]]:
    """The hashtags, and a note for each tag that cannot be one (shown in the preview)."""
    out: list[str] = []
    notes: list[str] = []
    for tag in tags:
        spelled = _LEADING_DOT.sub(" Dot ", _PLUS_PLUS.sub("pp", _SHARP.sub(" Sharp", tag)))
        words = [w for w in _NOT_HASHTAG.split(spelled) if w]
        if not words:
            notes.append(f"tag {tag!r} is left out: it has nothing a hashtag can hold")
            continue
        if not any(ch.isalpha() for w in words for ch in w):
            notes.append(f"tag {tag!r} is left out: a hashtag needs a letter")
            continue
        word = words[0] if len(words) == 1 else "".join(_spelled(w) for w in words)
        if f"#{word}".casefold() not in {t.casefold() for t in out}:   # networks ignore case
            out.append(f"#{word}")
    return out, notes


def _spelled(word: str) -> str:
    return SPELLING.get(word.casefold()) or _capitalized(word)


def _capitalized(word: str) -> str:
    first = word[:1].upper()
    return (first if len(first) == 1 else word[:1]) + word[1:]     # "ß".upper() is "SS"


def threads(post: Post, config: Config) -> dict[str, tuple[Snippet, ...]]:
    """For a post that asks for a thread (`social: {thread: true}`), per enabled network: the
    title, the summary or body (at most about ten parts of it) and the link, split into parts."""
    if not post.thread:
        return {}
    return {name: thread(post, name, config)
            for name, settings in config.networks.items() if settings.enabled}


def thread(post: Post, network: str, config: Config, *, channel: str | None = None) -> tuple[Snippet, ...]:
    """The parts of `post`'s thread on `network`, each a Snippet (the link is in the last)."""
    net = NETWORKS[network]()
    limit = config.network_limit(network)
    url = tag_url(post.canonical_url, utm_params(config, channel or network, post.slug,
                                                 SOCIAL_MEDIUM), config)
    language = _language(config)
    # About ten parts at most: the longest start of the text that ends a sentence (else "…").
    source = segmented(excerpt_source(post), language)
    cuts = excerpt_cuts(source, limit * 8)
    body = cuts[-1].of(source.text) if cuts else ""
    link = net.link_text(url)
    text = "\n\n".join(p for p in (post.title, body, link) if p)
    # The body's sentence ends, found once for the post, placed in the thread's text; a part may
    # also end after the title and after the body.
    title = len(post.title) + 2 if post.title and (body or link) else 0
    ends = [title] if title else []
    ends += [title + e for e in source.ends(len(body) + 1) if e <= len(body)]
    ends += [title + len(body) + 2] if body and link else []
    ends = sorted({e for e in ends if 0 < e < len(text)} | {len(text)})
    parts = numbered(split_thread(text, net.count, limit, language, ends=ends))
    return tuple(_snippet(net, part, url, limit, ()) if i == len(parts) - 1
                 else Snippet(network=network, text=part, length=net.count(part), limit=limit, link=None)
                 for i, part in enumerate(parts))
