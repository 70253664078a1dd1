"""Post -> Snippet per network: title, the best-fitting start of the summary or body, hashtags
from `tags`, and the canonical link, counted the way each network counts.

The text is cut at a sentence boundary if one fits, else at a word boundary with "…". It is never
cut inside a word, a URL, a hashtag or a grapheme cluster; the link is always kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import regex

from pipeline.config import Config
from pipeline.errors import RenderError
from pipeline.models import Link, Post, Snippet
from pipeline.networks.base import Network
from pipeline.networks.registry import NETWORKS
from pipeline.render.cutting import excerpt_cuts, word_cuts
from pipeline.render.links import SOCIAL_MEDIUM, tag_url, utm_params
from pipeline.render.text import plain_text
from pipeline.render.thread import numbered, split_thread

_NOT_HASHTAG = regex.compile(r"[^\p{L}\p{M}\p{N}_]+")


def snippets(post: Post, config: Config) -> dict[str, Snippet]:
    """One snippet per enabled network in config. Raises RenderError for an override that
    does not fit."""
    return {name: snippet(post, name, config)
            for name, settings in config.networks.items() if settings.enabled}


def snippet(post: Post, network: str, config: Config, *, channel: str | None = None) -> Snippet:
    """The snippet of `post` for `network`; UTM parameters name `channel` (default: network)."""
    net = NETWORKS[network]()
    limit = config.network_limit(network)
    url = tag_url(post.canonical_url, utm_params(config, channel or network, post.slug,
                                                 SOCIAL_MEDIUM), config)
    tags = hashtags(post.tags)[: config.networks[network].hashtags]
    override = post.social.get(network)
    if override:
        return _override(post, net, override, url, limit)
    source = post.summary or plain_text(post.body_html)
    text, used = fit(net, title=post.title, source=source, tags=tags, url=url, limit=limit,
                     language=config.site.locale.split("_")[0])
    return _snippet(net, text, url, limit, used)


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
    return _snippet(net, text, url, limit, ())


def _find_canonical(text: str, canonical: str) -> tuple[int, int] | None:
    """Where the canonical URL stands as a whole word of `text` (not as the start of a longer URL)."""
    for m in regex.finditer(r"\S+", text):
        if m.group().rstrip(".,;:!?)»”’") in (canonical, canonical.rstrip("/")):
            return m.start(), m.start() + len(m.group().rstrip(".,;:!?)»”’"))
    return None


def _snippet(net: Network, text: str, url: str, limit: int, tags: Sequence[str]) -> Snippet:
    shown = net.link_text(url)
    start = text.rfind(shown) if shown in text else text.rfind(url)
    end = start + len(shown if shown in text else url)
    return Snippet(network=net.name, text=text, length=net.count(text), limit=limit,
                   link=Link(start=start, end=end, uri=url), tags=tuple(tags))


def hashtags(tags: Sequence[str]) -> list[str]:
    """`tags` as hashtags: "mental health" -> "#MentalHealth"; tags with no letters are dropped."""
    out: list[str] = []
    for tag in tags:
        words = [w for w in _NOT_HASHTAG.split(tag) if w]
        if not words or not any(ch.isalpha() for w in words for ch in w):
            continue
        word = words[0] if len(words) == 1 else "".join(_capitalized(w) for w in words)
        if f"#{word}".casefold() not in {t.casefold() for t in out}:   # networks ignore case
            out.append(f"#{word}")
    return out


def _capitalized(word: str) -> str:
    first = word[:1].upper()
    return (first if len(first) == 1 else word[:1]) + word[1:]     # "ß".upper() is "SS"


def fit(net: Network, *, title: str, source: str, tags: Sequence[str], url: str, limit: int,
        language: str = "en") -> tuple[str, tuple[str, ...]]:
    """The longest snippet that fits: the excerpt shrinks first, then hashtags go, then the
    title is shortened at a word boundary, then dropped. The link always stays."""
    link = net.link_text(url)

    def layout(head: str, excerpt: str, used: Sequence[str]) -> str:
        return "\n\n".join(p for p in (head, excerpt, " ".join(used)) if p) + \
            ("\n" if used else "\n\n" if head or excerpt else "") + link

    def fits(text: str) -> bool:
        return net.count(text) <= limit

    cuts = excerpt_cuts(source, language, chars=limit * 4)
    for n in range(len(tags), -1, -1):
        excerpt = _longest(cuts, lambda e, n=n: fits(layout(title, e, tags[:n])))
        if excerpt:
            return layout(title, excerpt, tags[:n]), tuple(tags[:n])
    for n in range(len(tags), -1, -1):
        if fits(layout(title, "", tags[:n])):
            return layout(title, "", tags[:n]), tuple(tags[:n])
    head = _longest(word_cuts(title), lambda t: fits(layout(t, "", ())))
    return layout(head or "", "", ()), ()


def _longest(candidates: Sequence[str], ok: Callable[[str], bool]) -> str | None:
    """The last candidate that is ok; candidates grow in length, so a binary search finds it."""
    lo, hi, best = 0, len(candidates) - 1, None
    while lo <= hi:
        mid = (lo + hi) // 2
        if ok(candidates[mid]):
            best, lo = candidates[mid], mid + 1
        else:
            hi = mid - 1
    return best


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
    language = config.site.locale.split("_")[0]
    # About ten parts at most: the longest start of the text that ends a sentence (else "…").
    cuts = excerpt_cuts(post.summary or plain_text(post.body_html), language, chars=limit * 8)
    body = cuts[-1] if cuts else ""
    text = "\n\n".join(p for p in (post.title, body, net.link_text(url)) if p)
    parts = numbered(split_thread(text, net.count, limit, language))
    return tuple(_snippet(net, part, url, limit, ()) if i == len(parts) - 1
                 else Snippet(network=network, text=part, length=net.count(part), limit=limit, link=None)
                 for i, part in enumerate(parts))
