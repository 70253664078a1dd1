"""Each network's own way of counting a post and showing a link."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twitter_text import parse_tweet

from pipeline.networks.base import grapheme_boundaries, graphemes
from pipeline.networks.bluesky import Bluesky
from pipeline.networks.mastodon import Mastodon
from pipeline.networks.registry import NETWORKS
from pipeline.networks.x import X

THUMBS_UP_MEDIUM = "\U0001F44D\U0001F3FD"                                          # 👍🏽
FAMILY = "\U0001F468\u200d\U0001F469\u200d\U0001F467\u200d\U0001F466"              # 👨‍👩‍👧‍👦
FLAG_FR = "\U0001F1EB\U0001F1F7"                                                   # 🇫🇷
E_ACUTE_NFD = "e\u0301"                                                            # é, decomposed


def test_registry_names_every_network_with_its_default_limit():
    assert {n: NETWORKS[n] for n in ("x", "mastodon", "bluesky")} == {"x": X, "mastodon": Mastodon,
                                                                      "bluesky": Bluesky}
    # (and linkedin, threads, telegram, facebook: tests/test_networks_social.py)
    assert set(NETWORKS) == {"x", "mastodon", "bluesky", "linkedin", "threads", "telegram", "facebook"}
    assert (X.default_limit, Mastodon.default_limit, Bluesky.default_limit) == (280, 500, 300)


# --- Mastodon -------------------------------------------------------------------------------------

@pytest.mark.parametrize("path_length", [0, 1, 4, 23, 60, 500, 3000])
@pytest.mark.parametrize("scheme", ["https://", "http://"])
def test_mastodon_url_of_any_length_counts_23(scheme: str, path_length: int):
    url = f"{scheme}example.com/{'p' * path_length}"
    assert Mastodon().count(url) == 23
    assert Mastodon().count(f"Read {url} now") == len("Read ") + 23 + len(" now")


def test_mastodon_counts_every_url_in_a_text():
    text = "a https://example.com/one b http://example.org/" + "x" * 80 + " c"
    assert Mastodon().count(text) == len("a ") + 23 + len(" b ") + 23 + len(" c")


@pytest.mark.parametrize("text", ["example.com", "go to example.com now", "www.example.com/a/path"])
def test_mastodon_url_without_protocol_counts_its_characters(text: str):
    assert Mastodon().count(text) == len(text)


@pytest.mark.parametrize(("text", "expected"), [
    ("@user@instance.social", len("@user")),
    ("hi @alice@mastodon.example.org!", len("hi @alice!")),
    ("@a@b.social and @c@d.example", len("@a and @c")),
    ("@user", len("@user")),
    ("write to me@host.com", len("write to me@host.com")),     # an address, not a mention
])
def test_mastodon_remote_mention_counts_as_its_user_part(text: str, expected: int):
    assert Mastodon().count(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    (THUMBS_UP_MEDIUM, 1), (FAMILY, 1), (FLAG_FR, 1), (E_ACUTE_NFD, 1),
    ("caf" + E_ACUTE_NFD, 4), (f"{FAMILY} {FLAG_FR} ok", 6), ("日本語", 3),
])
@pytest.mark.parametrize("network", [Mastodon, Bluesky])
def test_mastodon_and_bluesky_count_grapheme_clusters(network: type, text: str, expected: int):
    assert network().count(text) == expected


def test_mastodon_shows_the_full_url():
    url = "https://www.example.com/a/very/long/path?utm_source=mastodon"
    assert Mastodon().link_text(url) == url


# --- Bluesky --------------------------------------------------------------------------------------

def test_bluesky_counts_graphemes_not_code_points_and_urls_in_full():
    url = "https://example.com/" + "a" * 100
    assert Bluesky().count(url) == len(url)      # a URL in the text is just text on Bluesky
    assert Bluesky().count(FAMILY * 3) == 3
    assert len(FAMILY * 3) == 21


def test_bluesky_link_text_shortens_a_long_path():
    url = "https://www.example.com/a/very/long/path"
    shown = Bluesky().link_text(url)
    assert shown.startswith("example.com/a/very/")
    assert shown.endswith("...")
    assert "www." not in shown and "https" not in shown
    assert len(shown) < len("example.com/a/very/long/path")
    # what is shown before the "..." is the real start of the path
    assert "example.com/a/very/long/path".startswith(shown.removesuffix("..."))


def test_bluesky_link_text_drops_the_query_which_the_facet_keeps():
    shown = Bluesky().link_text("https://www.example.com/a/very/long/path?utm_source=bluesky&x=1")
    assert "?" not in shown and "utm_source" not in shown
    assert shown == Bluesky().link_text("https://www.example.com/a/very/long/path")


@pytest.mark.parametrize(("url", "shown"), [
    ("https://example.com/about", "example.com/about"),
    ("https://www.example.com/blog/", "example.com/blog/"),
    ("https://example.com/", "example.com"),
    ("https://example.com", "example.com"),
    ("http://sub.example.org/x?y=1", "sub.example.org/x"),
])
def test_bluesky_link_text_leaves_a_short_link_whole(url: str, shown: str):
    assert Bluesky().link_text(url) == shown


# --- X --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("日本語", 6), ("한국어", 6), ("漢字かな", 8), ("abc", 3), ("Hi 日本", 3 + 4),
    (THUMBS_UP_MEDIUM, 2), (FAMILY, 2), (FLAG_FR, 2),
])
def test_x_weighs_cjk_and_emoji_two(text: str, expected: int):
    assert X().count(text) == expected


@pytest.mark.parametrize("path_length", [0, 5, 200, 2000])
def test_x_url_counts_23(path_length: int):
    url = "https://example.com/" + "q" * path_length
    assert X().count(url) == 23
    assert X().count(f"Hi 日本 {url}") == 3 + 4 + 1 + 23


def test_x_counts_a_url_without_protocol_too_unlike_mastodon():
    assert X().count("example.com") == 23
    assert Mastodon().count("example.com") == 11


def test_x_count_is_twitter_texts_v3_weighted_length():
    text = f"Caf{E_ACUTE_NFD} 日本 {FAMILY} https://example.com/{'z' * 40} #tag"
    assert X().count(text) == parse_tweet(text).weightedLength == 5 + 4 + 1 + 2 + 1 + 23 + 5


def test_x_shows_the_full_url():
    url = "https://www.example.com/a/very/long/path?utm_source=x"
    assert X().link_text(url) == url


# --- shared helpers -------------------------------------------------------------------------------

def test_grapheme_helpers_never_split_a_cluster():
    text = f"a{FAMILY}b{E_ACUTE_NFD}{FLAG_FR}"
    assert graphemes(text) == 5
    cuts = grapheme_boundaries(text)
    assert cuts == {0, 1, 1 + len(FAMILY), 2 + len(FAMILY), 4 + len(FAMILY), len(text)}
    assert 2 not in cuts          # inside the ZWJ family
    assert len(text) - 1 not in cuts   # between the two regional indicators


# --- running counts -------------------------------------------------------------------------------
# Renderers search cut points with `prefix_counts` and count only what they keep: every count it
# gives must be the network's own, whatever the text holds.

PIECES = ["word", "Ketamine", "naïve", E_ACUTE_NFD, "\u0301", "\u200d", THUMBS_UP_MEDIUM, FAMILY, FLAG_FR,
          "日本語", "’", "“", "…", ".", ",", "-", "#tag", "©", "1\ufe0f\u20e3", "\u20e3", "\u212b",
          "\u0600", "https://example.com/results?id=42", "example.com", "e.g.", "node.js",
          "@user@instance.social", "3.5", "(see", "note)."]
one_line_texts = st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=3)), max_size=25).map(
    lambda parts: " ".join(" ".join(parts).split()))


@settings(max_examples=300, deadline=None)
@given(text=one_line_texts, stop=st.integers(min_value=0, max_value=80),
       network=st.sampled_from(sorted(NETWORKS)))
def test_prefix_counts_are_the_networks_own_counts(text: str, stop: int, network: str):
    net = NETWORKS[network]()
    counts = net.prefix_counts(text, stop)
    assert counts[0] == 0
    for i, known in enumerate(counts):
        if known is not None:
            assert known == net.count(text[:i]), (text[:i], known)
    # They run past `stop` (where no longer text can fit) or to the end of the text.
    reached = next((c for c in reversed(counts) if c is not None), 0)
    assert len(counts) == len(text) + 1 or reached > stop or net.count(text[:len(counts)]) > stop


@pytest.mark.parametrize("network", sorted(NETWORKS))
def test_prefix_counts_of_prose_are_known_at_every_word_end(network: str):
    text = "Ketamine’s effect on mood, as “the trial” showed, is fast: see https://example.com/t?id=4 now."
    net = NETWORKS[network]()
    counts = net.prefix_counts(text, 10**6)
    assert len(counts) == len(text) + 1
    word_ends = [i for i in range(1, len(text) + 1) if i == len(text) or text[i] == " "]
    assert all(counts[i] == net.count(text[:i]) for i in word_ends)
    # Inside a word only a URL (or, on X, a word with a dot, which a start of could be one) is
    # left to the network's counter.
    words = [(m.start(), m.end(), m.group()) for m in re.finditer(r"\S+", text)]
    unknown = {word for i, c in enumerate(counts) if c is None
               for start, end, word in words if start < i < end}
    assert unknown <= {"https://example.com/t?id=4", "now."}


def test_every_emoji_twitter_text_knows_holds_a_character_beyond_ascii():
    # X's running counts weigh a word's characters unless it holds one of these; a keycap such as
    # "#️⃣" starts with ASCII but always carries U+20E3, so no emoji hides among plain characters.
    from twitter_text.regexp.emoji import emoji_list

    assert emoji_list and all(any(ord(c) > 0x7F for c in e.emoji) for e in emoji_list)


def test_x_count_without_emoji_equals_parse_tweet_on_every_text_we_have():
    """X's count skips twitter-text's emoji scan for a text without an emoji; on the conformance
    suite's texts, every corpus post's running text and mixed line endings it must give exactly
    parse_tweet's weighted length."""
    import yaml
    from twitter_text import parse_tweet

    from tests.conftest import FIXTURES, ROOT

    suite = yaml.safe_load((FIXTURES / "twitter-text" / "validate.yml").read_text(encoding="utf-8"))
    texts = [case["text"] for cases in suite["tests"].values() for case in cases
             if isinstance(case.get("text"), str)]
    for path in sorted((ROOT / "tests" / "corpus").rglob("*.md"))[:80]:
        body = path.read_text(encoding="utf-8")
        texts += [body[i:i + 400] for i in range(0, min(len(body), 4000), 400)]
    assert len(texts) > 200
    texts += ["a\r\nb\rc\nd https://example.com/x\r\n", "café\u0301 e\u0301 日本語 example.co"]
    x = X()
    for text in texts:
        assert x.count(text) == parse_tweet(text).weightedLength, text


def test_x_count_with_emoji_equals_parse_tweet():
    """The emoji scan tried only where an emoji can start finds what twitter-text's finds: every
    emoji of its own list, alone, in text, after a URL, and keycaps, flags, ZWJ sequences."""
    from twitter_text import parse_tweet
    from twitter_text.regexp.emoji import emoji_list

    x = X()
    samples = [e.emoji for e in emoji_list][::7]
    texts = [f"a {e} b https://example.com/{e} {e}{e}#1\ufe0f\u20e3" for e in samples]
    texts += ["🇫🇷🇩🇪 👩‍👩‍👧 #️⃣ 1️⃣ ©️ ® ™ ‼️", "Un journal d’humeur 🌿 https://x.example/🌿"]
    for text in texts:
        assert x.count(text) == parse_tweet(text).weightedLength, text
