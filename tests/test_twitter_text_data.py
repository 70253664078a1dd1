"""X and Mastodon count without importing twitter-text: its URL and emoji rules as data
(networks/twitter_data.py, generated from it), run by networks/twitter_urls.py and
networks/twitter_emoji.py. twitter-text itself is the reference here: on its conformance suite, its
list of top-level domains, both corpora and generated texts made of the pieces URLs are made of,
the two give exactly what it gives."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from twitter_text import extract_urls_with_indices as reference_urls
from twitter_text import parse_tweet
from twitter_text.extract_emojis import extract_emojis_with_indices
from twitter_text.regexp.emoji import emoji_list

from pipeline.networks import make_twitter_data, twitter_data
from pipeline.networks.twitter_emoji import emoji_spans, may_hold_emoji
from pipeline.networks.twitter_urls import extract_urls_with_indices
from pipeline.networks.x import X
from tests.conftest import FIXTURES, ROOT

SUITE = FIXTURES / "twitter-text"


def _suite_texts() -> list[str]:
    texts = []
    for name in ("extract.yml", "validate.yml", "tlds.yml"):
        tests = yaml.safe_load((SUITE / name).read_text(encoding="utf-8"))["tests"]
        texts += [case["text"] for cases in tests.values() for case in cases
                  if isinstance(case.get("text"), str)]
    return texts


def _corpus_texts() -> list[str]:
    """Every post of both corpora (the 102 Jekyll posts and the generators' posts), in pieces of
    a snippet's size."""
    paths = sorted((FIXTURES / "jekyll-posts").iterdir()) + sorted((ROOT / "tests" / "corpus").rglob("*.*"))
    texts = []
    for path in paths:
        if path.suffix in (".md", ".markdown", ".mdx", ".rst"):
            body = path.read_text(encoding="utf-8")
            texts += [body[i:i + 500] for i in range(0, len(body), 500)]
    return texts


SUITE_TEXTS = _suite_texts()
CORPUS_TEXTS = _corpus_texts()


def test_the_texts_are_there() -> None:
    assert len(SUITE_TEXTS) > 1500 and len(CORPUS_TEXTS) > 3000
    assert sum(bool(reference_urls(t)) for t in SUITE_TEXTS) > 1000      # most of them hold URLs


@pytest.mark.parametrize("without_protocol", [True, False])
def test_urls_as_twitter_text_finds_them_in_its_suite(without_protocol: bool) -> None:
    for text in SUITE_TEXTS:
        ours = extract_urls_with_indices(text, without_protocol)
        assert ours == reference_urls(text, without_protocol), text


@pytest.mark.parametrize("without_protocol", [True, False])
def test_urls_as_twitter_text_finds_them_in_the_corpora(without_protocol: bool) -> None:
    for text in CORPUS_TEXTS:
        ours = extract_urls_with_indices(text, without_protocol)
        assert ours == reference_urls(text, without_protocol), text


# What URLs and the text around them are made of, the pieces twitter-text's regex turns on:
# schemes, labels, every kind of top-level domain (in other cases too: `re` folds "ſ" to "s" and
# the Kelvin sign to "k"), punycode, ports, paths with parentheses, queries, t.co slugs, what may
# and may not precede a URL, directional marks, non-ASCII letters, spaces.
PIECES = ["http://", "https://", "HTTPS://", "www.", "example", "t.co/", "abc123", ".", "..", "/", ":",
          ":8080", "?", "=", "&", "#", "-", "_", "@", "+", "(", ")", "[x]", "com", "COM", "Com", "jp",
          "co", "org", "net", "info", "xn--", "xn--p1ai", "рф", "РФ", "中国", "香港", "みんな", "삼성",
          "嘉里", "嘉里大酒店", "онлайн", "ſ", "\u212a", "İ", "ı", "é", "日本", "한", "\u200e", "\u202a",
          "\ufeff", " ", "  ", "\n", "$", "＠", "#", "~", ",", "'", "!", "1", "0", "the", "x" * 30,
          "bbc.co.uk", "ſite", "\u212aey", "gooGle", "mil", "onion", "museum", "aaa", "a_b", "a-b"]


@settings(max_examples=600, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=14), st.booleans())
def test_urls_as_twitter_text_finds_them_in_texts_made_of_url_pieces(pieces: list[str], bare: bool) -> None:
    text = "".join(pieces)
    assert extract_urls_with_indices(text, bare) == reference_urls(text, bare)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=40))
def test_urls_as_twitter_text_finds_them_in_any_text(text: str) -> None:
    text = f"{text}.com {text} https://{text}.org/{text}"
    assert extract_urls_with_indices(text) == reference_urls(text)


# Long chains of labels: the regex backtracks through every count of subdomains at every start
# (a second for the first of these); the chains here share their tails. Same answers.
CHAINS = ["a." * 150, "日本." * 100, "a.b-c." * 60 + "com", "x.com." * 80, "a.co.uk." * 40 + "/p",
          "xn--a." * 50 + "xn--b", "http://" + "a." * 100 + "jp/x", "a_b." * 60 + "org", ".co" * 100,
          "中国.中国." * 40, "www." + "sub." * 100 + "example.com/x"]


@pytest.mark.parametrize("text", CHAINS, ids=[c[:12] for c in CHAINS])
@pytest.mark.parametrize("without_protocol", [True, False])
def test_urls_as_twitter_text_finds_them_in_long_chains_of_labels(text: str, without_protocol: bool) -> None:
    assert extract_urls_with_indices(text, without_protocol) == reference_urls(text, without_protocol)


def _reference_emoji(text: str) -> list[tuple[int, int]]:
    return [tuple(e["indices"]) for e in extract_emojis_with_indices(text)]  # type: ignore[misc]


def test_every_emoji_twitter_text_knows_alone_and_in_text() -> None:
    emoji = [e.emoji for e in emoji_list]
    assert len(emoji) > 3000
    for i, e in enumerate(emoji):
        text = f"{e}a {e}{e}{emoji[i - 1]}\u200d{e}\ufe0f"
        assert may_hold_emoji(text)
        assert emoji_spans(text) == _reference_emoji(text), text


def test_emoji_as_twitter_text_finds_them_in_the_suite_and_corpora() -> None:
    """Texts of ASCII alone are left out: no emoji is ASCII alone (test_networks.py)."""
    texts = [text for text in SUITE_TEXTS + CORPUS_TEXTS if not text.isascii()]
    assert len(texts) > 500
    for text in texts:
        spans = _reference_emoji(text)
        assert emoji_spans(text) == spans, text
        assert may_hold_emoji(text) or not spans


EMOJI_PARTS = sorted({c for e in emoji_list for c in e.emoji} | {"a", " ", "#", "1", "*", "\u20e3"})


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(EMOJI_PARTS), max_size=12))
def test_emoji_as_twitter_text_finds_them_in_any_run_of_their_code_points(parts: list[str]) -> None:
    text = "".join(parts)
    assert emoji_spans(text) == _reference_emoji(text)


def test_the_data_is_what_the_installed_twitter_text_holds() -> None:
    """twitter_data.py is generated; after an upgrade of twitter-text this fails until it is
    generated again (python -m pipeline.networks.make_twitter_data)."""
    pieces: dict[str, Any] = make_twitter_data._pieces()
    assert pieces.keys() == {n for n in vars(twitter_data) if n.isupper()}
    for name, value in pieces.items():
        assert getattr(twitter_data, name) == value, name


def test_the_generator_stops_on_a_pattern_of_another_shape() -> None:
    with pytest.raises(SystemExit, match="changed shape"):
        make_twitter_data._cut("(?:com|org)", "(?:(?:", ")")


def test_counting_for_x_and_mastodon_does_not_import_twitter_text(tmp_path: Path) -> None:
    code = ("import sys\nfrom pipeline.networks.registry import NETWORKS\n"
            "for n in NETWORKS.values():\n    n().count('café 😀 https://example.com/a example.org 日本')\n"
            "print(sorted(m for m in sys.modules if m.startswith('twitter_text')))")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.strip() == "[]"
    text = "café 😀 https://example.com/a example.org 日本"
    assert X().count(text) == parse_tweet(text).weightedLength == 5 + 3 + 24 + 24 + 4
