"""What a Liquid/Nunjucks tag's or a Hugo shortcode's arguments say, read on their own (no
position, no output): the helpers `template_tags.py` renders template syntax with.

Takes the text inside one tag; gives `url_value` (the site-relative URL a Liquid output expression
stands for, or None), `shortcode` (a Hugo shortcode's name, positional and named arguments), and
`liquid_embed` / `hugo_embed` (a video, gist, post or figure tag as a Markdown link or image, or None
when it has no Markdown form).
"""

from __future__ import annotations

import re

from pipeline.intake.markdown_out import md_image, md_link

_SITE_ROOT = {"site.baseurl", "site.url", "site.base_url", "baseurl", "base_url"}
_URL_FILTERS = {"relative_url", "absolute_url", "url", "htmlBaseUrl", "prepend_baseurl"}
_QUOTED = re.compile(r"\s*(?:\"([^\"]*)\"|'([^']*)')\s*")
_PIPES = re.compile(r"(?:\"[^\"]*\"|'[^']*'|[^|\"'])+")
_SC_TOKEN = re.compile(r"\s*(?:([A-Za-z_][\w-]*)\s*=\s*)?(\"(?:[^\"\\]|\\.)*\"|`[^`]*`|'[^']*'|[^\s\"'`]+)")
_YOUTUBE_ID = re.compile(r"(?:v=|youtu\.be/|/embed/|/shorts/)([\w-]{6,20})|^([\w-]{6,20})$")
_NUMBER = re.compile(r"\d{1,20}")


def url_value(expression: str) -> str | None:
    """The path a Liquid/Nunjucks output expression stands for, when it is only a site-relative URL
    (`site.baseurl` -> "", `"/about" | relative_url` -> "/about"); None for anything else."""
    parts = _PIPES.findall(expression)
    if not parts:
        return None
    head = parts[0].strip()
    quoted = _QUOTED.fullmatch(head)
    if head in _SITE_ROOT:
        value = ""
    elif quoted:
        value = quoted.group(1) if quoted.group(1) is not None else quoted.group(2)
    else:
        return None
    for part in parts[1:]:
        name, _, arg = part.partition(":")
        name, arg = name.strip(), arg.strip()
        literal = _QUOTED.fullmatch(arg)
        if name in _URL_FILTERS or (name in ("prepend", "append") and arg in _SITE_ROOT):
            continue
        if name in ("prepend", "append") and literal:
            piece = literal.group(1) if literal.group(1) is not None else literal.group(2)
            value = piece + value if name == "prepend" else value + piece
            continue
        return None
    return value


def shortcode(inner: str) -> tuple[str, list[str], dict[str, str]]:
    """A Hugo shortcode's name, positional and named arguments."""
    tokens = _SC_TOKEN.findall(inner)
    if not tokens or tokens[0][0]:
        return "", [], {}
    positional: list[str] = []
    named: dict[str, str] = {}
    for key, value in tokens[1:]:
        if value[:1] in "\"'`" and len(value) > 1 and value[-1] == value[0]:
            value = value[1:-1].replace('\\"', '"')
        if key:
            named[key.lower()] = value
        else:
            positional.append(value)
    return tokens[0][1], positional, named


def _youtube(argument: str) -> str | None:
    m = _YOUTUBE_ID.search(argument.strip().strip("\"'"))
    return f"https://www.youtube.com/watch?v={m.group(1) or m.group(2)}" if m else None


def liquid_embed(name: str, args: str) -> str | None:
    """The embed tags of common Jekyll/Eleventy plugins, as links."""
    first = args.split()[0].strip("\"'") if args.split() else ""
    if name in ("youtube", "youtubeembed"):
        url = _youtube(first)
        return md_link("YouTube video", url) if url else None
    if name == "vimeo" and _NUMBER.fullmatch(first):
        return md_link("Vimeo video", f"https://vimeo.com/{first}")
    if name == "gist" and re.fullmatch(r"(?:[\w-]+/)?[0-9a-f]{8,}", first):
        return md_link(f"Gist {first}", f"https://gist.github.com/{first}")
    return None


def hugo_embed(name: str, positional: list[str], named: dict[str, str]) -> str | None:
    """Hugo's built-in shortcodes that have a Markdown form."""
    first = positional[0] if positional else ""
    if name == "figure":
        src = named.get("src") or first
        if not src:
            return None
        image = md_image(named.get("alt") or named.get("title") or "", src)
        caption = named.get("caption", "").strip()
        # Hugo renders a caption as Markdown: it is kept so, in italics.
        return f"{image}\n\n*{' '.join(caption.split())}*" if caption else image
    if name == "youtube":
        url = _youtube(named.get("id") or first)
        return md_link("YouTube video", url) if url else None
    if name == "vimeo":
        video = named.get("id") or first
        return md_link("Vimeo video", f"https://vimeo.com/{video}") if _NUMBER.fullmatch(video) else None
    if name in ("tweet", "twitter", "x"):
        user = named.get("user") or (first if len(positional) > 1 else "")
        post = named.get("id") or (positional[-1] if positional else "")
        if not _NUMBER.fullmatch(post):
            return None
        if user and re.fullmatch(r"\w{1,50}", user):
            return md_link(f"Post by @{user} on X", f"https://x.com/{user}/status/{post}")
        return md_link("Post on X", f"https://twitter.com/i/status/{post}")
    if name == "gist" and len(positional) >= 2:
        user, gist = positional[0], positional[1]
        if re.fullmatch(r"[\w-]+", user) and re.fullmatch(r"\w+", gist):
            return md_link(f"Gist {user}/{gist}", f"https://gist.github.com/{user}/{gist}")
    return None
