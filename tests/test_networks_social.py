"""LinkedIn, Threads, Telegram and Facebook: each limit as the network counts it, to the character.

Conformance-style: a text exactly at the limit fits, one unit more does not, and emoji, CJK,
combining marks and URLs count as each network documents (see each module's docstring).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.channels.registry import build_channel
from pipeline.config import Config
from pipeline.errors import ConfigError
from pipeline.intake.posts import load_posts
from pipeline.models import Post
from pipeline.networks.facebook import Facebook
from pipeline.networks.linkedin import LinkedIn
from pipeline.networks.registry import NETWORKS
from pipeline.networks.telegram import CAPTION_LIMIT, Telegram
from pipeline.networks.threads import Threads
from pipeline.networks.utf16 import utf16_units
from pipeline.render.social import snippet, snippets
from tests.conftest import SEED_SLUG, add_channel
from tests.test_render_social import rewrite_config

GRINNING = "\U0001F600"                                                        # 😀, 4 bytes in UTF-8
THUMBS_UP_MEDIUM = "\U0001F44D\U0001F3FD"                                      # 👍🏽
FAMILY = "\U0001F468\u200d\U0001F469\u200d\U0001F467\u200d\U0001F466"          # 👨‍👩‍👧‍👦
FLAG_FR = "\U0001F1EB\U0001F1F7"                                               # 🇫🇷
KEYCAP_HASH = "#\ufe0f\u20e3"                                                  # #️⃣
E_ACUTE_NFD = "e\u0301"                                                        # é, decomposed
E_ACUTE_NFC = "\u00e9"                                                         # é, one code point
CJK = "日本語"                                                                  # three BMP ideographs
CJK_EXT_B = "\U00020000"                                                       # 𠀀, beyond the BMP
URL = "https://www.example.com/2024/05/a-long-article-path/?utm_source=x&utm_medium=social"

UTF16_NETWORKS = [LinkedIn, Facebook, Telegram]


def test_the_four_networks_are_registered_with_their_limits():
    assert {n: NETWORKS[n].default_limit for n in ("linkedin", "threads", "telegram", "facebook")} == {
        "linkedin": 3000, "threads": 500, "telegram": 4096, "facebook": 63206}
    assert NETWORKS["linkedin"] is LinkedIn and NETWORKS["threads"] is Threads
    assert NETWORKS["telegram"] is Telegram and NETWORKS["facebook"] is Facebook
    assert CAPTION_LIMIT == 1024


# --- LinkedIn, Facebook, Telegram: UTF-16 code units ------------------------------------------------

@pytest.mark.parametrize("network", UTF16_NETWORKS)
@pytest.mark.parametrize(("piece", "units"), [
    ("a", 1), (E_ACUTE_NFC, 1), (E_ACUTE_NFD, 2), (CJK, 3), (CJK_EXT_B, 2), (GRINNING, 2),
    (THUMBS_UP_MEDIUM, 4), (FAMILY, 11), (FLAG_FR, 4), (KEYCAP_HASH, 3), ("\n", 1), (URL, len(URL)),
])
def test_utf16_networks_count_code_units(network: type, piece: str, units: int):
    assert network().count(piece) == units
    assert network().count(f"Read {piece} now") == len("Read ") + units + len(" now")


@pytest.mark.parametrize("network", UTF16_NETWORKS)
@pytest.mark.parametrize("filler", ["a", E_ACUTE_NFD, GRINNING, CJK_EXT_B])
def test_utf16_networks_exactly_at_the_limit_and_one_over(network: type, filler: str):
    limit = network.default_limit
    size = utf16_units(filler)
    at_limit = filler * (limit // size) + "a" * (limit % size)
    assert network().count(at_limit) == limit
    assert network().count(at_limit + "a") == limit + 1
    # An emoji that would end exactly at the limit fits; one unit later it is two over.
    assert network().count("a" * (limit - 2) + GRINNING) == limit
    assert network().count("a" * (limit - 1) + GRINNING) == limit + 1


def test_telegram_caption_limit_is_counted_the_same_way():
    caption = "a" * (CAPTION_LIMIT - 2) + GRINNING
    assert Telegram().count(caption) == CAPTION_LIMIT
    assert Telegram().count(caption + "!") == CAPTION_LIMIT + 1


@pytest.mark.parametrize("network", [*UTF16_NETWORKS, Threads])
def test_links_count_in_full_and_are_shown_in_full(network: type):
    long_url = "https://example.com/" + "p" * 300
    assert network().link_text(long_url) == long_url
    assert network().count(long_url) == len(long_url)        # no t.co-style 23 on these networks


# --- Threads: characters, an emoji its UTF-8 bytes --------------------------------------------------

@pytest.mark.parametrize(("piece", "count"), [
    ("a", 1), (E_ACUTE_NFC, 1), (E_ACUTE_NFD, 2), (CJK, 3), (CJK_EXT_B, 1),
    (GRINNING, 4), (THUMBS_UP_MEDIUM, 8), (FAMILY, 25), (FLAG_FR, 8), (KEYCAP_HASH, 7),
    (URL, len(URL)), (f"{GRINNING}{GRINNING}", 8), (f"ok {FAMILY}!", 3 + 25 + 1),
])
def test_threads_counts_characters_and_emoji_as_their_utf8_bytes(piece: str, count: int):
    assert Threads().count(piece) == count


@pytest.mark.parametrize(("filler", "weight"), [("a", 1), (CJK[0], 1), (GRINNING, 4), (FLAG_FR, 8)])
def test_threads_exactly_at_the_limit_and_one_over(filler: str, weight: int):
    at_limit = filler * (500 // weight) + "a" * (500 % weight)
    assert Threads().count(at_limit) == 500
    assert Threads().count(at_limit + "a") == 501
    assert Threads().count("a" * 496 + GRINNING) == 500
    assert Threads().count("a" * 497 + GRINNING) == 501


# --- running counts agree with the counter ----------------------------------------------------------

ATOMS = st.sampled_from(["a", "Z", " ", ".", E_ACUTE_NFD, E_ACUTE_NFC, CJK, CJK_EXT_B, GRINNING,
                         THUMBS_UP_MEDIUM, FAMILY, FLAG_FR, KEYCAP_HASH, "#tag", "https://example.com/x"])


@settings(max_examples=300, deadline=None)
@given(atoms=st.lists(ATOMS, max_size=40), stop=st.integers(0, 120),
       network=st.sampled_from([*UTF16_NETWORKS, Threads]))
def test_prefix_counts_are_the_counts_of_each_prefix(atoms: list[str], stop: int, network: type):
    net = network()
    text = "".join(atoms)
    counts = net.prefix_counts(text, stop)
    assert counts[0] == 0
    for i, known in enumerate(counts):
        assert known is None or known == net.count(text[:i]), (text, i)
    # It goes on until the count passes `stop`, or to the end of the text.
    last = max(i for i, c in enumerate(counts) if c is not None)
    assert len(counts) == len(text) + 1 or counts[last] > stop
    if network is not Threads:
        assert None not in counts                    # every prefix of UTF-16 is a plain sum


def test_threads_running_count_is_unknown_only_inside_an_emoji():
    text = f"a{FAMILY}b"
    counts = Threads().prefix_counts(text, 100)
    assert counts == [0, 1] + [None] * (len(FAMILY) - 1) + [26, 27]


# --- snippets fit these limits ---------------------------------------------------------------------

def _long_post() -> Post:
    sentence = f"Ketamine {GRINNING} helps some patients with 日本語 notes and caf{E_ACUTE_NFD}. "
    return Post(path="posts/long.md", slug="long", title="A long post",
                date=datetime(2024, 5, 1, 9, 0, tzinfo=UTC),
                canonical_url="https://www.rtrwellnesscenter.com/long/", body_markdown="",
                body_html="<p>" + sentence * 2000 + "</p>", summary=None, tags=("ketamine",),
                social=MappingProxyType({}))


NEW = ("linkedin", "threads", "telegram", "facebook")


@pytest.fixture
def social_config(project: Path) -> Config:
    """The project's config with the four networks enabled (the shipped one enables x, mastodon
    and bluesky: a snippet is rendered for a network only when a channel needs it)."""
    return rewrite_config(project, lambda d: d["networks"].update({n: {} for n in NEW}))


def test_seed_snippets_of_the_four_networks_match_golden(social_config, golden):
    post = next(p for p in load_posts(social_config).posts if p.slug == SEED_SLUG)
    by_network = snippets(post, social_config)
    assert set(by_network) == {"x", "mastodon", "bluesky", *NEW}
    data = {name: {**s.as_json(), "link_range": [s.link.start, s.link.end]}
            for name, s in by_network.items() if name in NEW and s.link is not None}
    for name, s in data.items():
        assert s["length"] == NETWORKS[name]().count(str(s["text"])) <= s["limit"], name
    golden("seed/snippets-social.json", json.dumps(data, ensure_ascii=False, indent=2, sort_keys=True) + "\n")


def test_a_network_a_channel_needs_must_be_enabled(project, monkeypatch):
    monkeypatch.setenv("LINKEDIN_TOKEN", "t")
    config = add_channel(project, "li", "linkedin", {"author": "urn:li:organization:1",
                                                     "access_token": "${LINKEDIN_TOKEN}"})
    with pytest.raises(ConfigError, match=r"channels\.li: the linkedin network is not enabled under "
                                          r"`networks:`; add `linkedin: \{\}` there"):
        build_channel(config, "li")


@pytest.mark.parametrize("network", ["linkedin", "threads", "telegram"])
def test_a_long_post_gives_a_snippet_that_fills_the_limit_without_passing_it(social_config, network):
    config = social_config
    s = snippet(_long_post(), network, config)
    net = NETWORKS[network]()
    assert s.length == net.count(s.text) <= s.limit == net.default_limit
    assert s.length > s.limit - 80                    # cut at a sentence end or a word: near the limit
    assert s.text.endswith(s.link.uri)
    assert "#ketamine" in s.text


def test_a_configured_limit_below_the_networks_own_is_kept(project):
    config = rewrite_config(project, lambda d: d["networks"].update(facebook={"limit": 400}))
    s = snippet(_long_post(), "facebook", config)
    assert s.limit == 400
    assert Facebook().count(s.text) == s.length <= 400
