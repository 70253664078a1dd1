"""X's official twitter-text conformance suite, read from tests/fixtures/twitter-text at collection time.

The suite's README asks implementers to read the YAML when the tests run rather than convert it
statically, so every case below comes from validate.yml / extract.yml as they are on disk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from twitter_text import extract_urls, extract_urls_with_indices, parse_tweet
from twitter_text.config import config as twitter_config

from pipeline.networks.registry import NETWORKS
from pipeline.networks.x import X
from tests.conftest import FIXTURES

SUITE = FIXTURES / "twitter-text"

DEFAULT_OPTIONS: dict[str, Any] = twitter_config["defaults"]
# The first counter section is written against twitter-text config v2 (no emoji parsing).
V2_OPTIONS: dict[str, Any] = {
    "version": 2, "max_weighted_tweet_length": 280, "scale": 100, "default_weight": 200,
    "emoji_parsing_enabled": False, "transformed_url_length": 23,
    "ranges": DEFAULT_OPTIONS["ranges"],
}
COUNTER_SECTIONS: dict[str, dict[str, Any]] = {
    "WeightedTweetsCounterTest": V2_OPTIONS,
    "WeightedTweetsWithDiscountedEmojiCounterTest": DEFAULT_OPTIONS,
    "UnicodeDirectionalMarkerCounterTest": DEFAULT_OPTIONS,
}
V3_SECTIONS = ("WeightedTweetsWithDiscountedEmojiCounterTest", "UnicodeDirectionalMarkerCounterTest")
URL_SECTIONS = ("urls", "urls_with_indices", "urls_with_directional_markers", "tco_urls_with_params")
RESULT_KEYS = {"weightedLength", "valid", "permillage", "displayRangeStart", "displayRangeEnd",
               "validRangeStart", "validRangeEnd"}


def _load(name: str) -> dict[str, list[dict[str, Any]]]:
    path: Path = SUITE / name
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)["tests"]


def _params(tests: dict[str, list[dict[str, Any]]], sections: tuple[str, ...] | list[str]
            ) -> list[Any]:
    out = []
    for section in sections:
        cases = tests[section]
        assert cases, f"section {section} of the conformance suite is empty"
        out += [pytest.param(section, case, id=f"{section}: {case['description']}") for case in cases]
    return out


VALIDATE = _load("validate.yml")
EXTRACT = _load("extract.yml")
COUNTER_CASES = _params(VALIDATE, list(COUNTER_SECTIONS))
V3_CASES = _params(VALIDATE, V3_SECTIONS)
URL_CASES = _params(EXTRACT, URL_SECTIONS)


def test_the_suite_was_found_and_is_not_trivial():
    assert len(COUNTER_CASES) >= 40
    assert len(URL_CASES) >= 100
    assert DEFAULT_OPTIONS["version"] == 3 and DEFAULT_OPTIONS["emoji_parsing_enabled"] is True


@pytest.mark.parametrize(("section", "case"), COUNTER_CASES)
def test_weighted_length(section: str, case: dict[str, Any]):
    expected = case["expected"]
    assert {"weightedLength", "valid"} <= set(expected) <= RESULT_KEYS
    result = parse_tweet(case["text"], COUNTER_SECTIONS[section]).asdict()
    got = {key: result[key] for key in expected}
    assert got == expected, case["description"]


@pytest.mark.parametrize(("section", "case"), V3_CASES)
def test_x_network_counts_the_v3_weighted_length(section: str, case: dict[str, Any]):
    assert X().count(case["text"]) == case["expected"]["weightedLength"]
    assert NETWORKS["x"]().count(case["text"]) == case["expected"]["weightedLength"]


@pytest.mark.parametrize(("section", "case"), _params(VALIDATE, ["WeightedTweetsCounterTest"]))
def test_x_network_counts_v3_not_v2_on_the_v2_cases(section: str, case: dict[str, Any]):
    """The v2 cases' texts, counted by X(): always the library's v3 (default) weighted length."""
    text = case["text"]
    assert X().count(text) == parse_tweet(text, DEFAULT_OPTIONS).weightedLength


def test_v2_and_v3_differ_on_emoji_so_the_options_matter():
    # Guards the parametrized tests above: if v2 and v3 agreed everywhere, passing the v2
    # options would prove nothing.
    texts = [case["text"] for case in VALIDATE["WeightedTweetsCounterTest"]]
    differ = [t for t in texts
              if parse_tweet(t, V2_OPTIONS).weightedLength != parse_tweet(t).weightedLength]
    assert differ, "no v2 case counts differently under v3"
    family = "\U0001F468\u200d\U0001F469\u200d\U0001F467\u200d\U0001F466"
    assert X().count(family) == 2
    assert parse_tweet(family, V2_OPTIONS).weightedLength == 11   # 4 emoji x 2 + 3 ZWJ x 1


@pytest.mark.parametrize(("section", "case"), URL_CASES)
def test_extract_urls(section: str, case: dict[str, Any]):
    text, expected = case["text"], case["expected"]
    if section in ("urls", "tco_urls_with_params"):
        assert extract_urls(text) == expected
    else:
        assert extract_urls_with_indices(text) == expected
        assert extract_urls(text) == [e["url"] for e in expected]
