"""Threads: every part fits its network, parts are numbered, and the parts joined give back the text."""

from __future__ import annotations

import regex
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.intake.posts import load_posts
from pipeline.networks.base import grapheme_boundaries
from pipeline.networks.registry import NETWORKS
from pipeline.render.cutting import Segmented, excerpt_cuts
from pipeline.render.social import excerpt_source, thread
from pipeline.render.thread import numbered, split_thread
from tests.conftest import thread_post

LIMITS = {"x": 280, "mastodon": 500, "bluesky": 300}
ATOMS = ["word", "Ketamine", "naïve", "e\u0301", "\U0001F468\u200d\U0001F469\u200d\U0001F467", "日本語",
         " ", " ", ". ", "? ", "! ", ", ", "\n\n", " https://example.com/results?id=42 ", "Dr. ", "a" * 40]
texts = st.lists(st.one_of(st.sampled_from(ATOMS), st.text(max_size=5)), max_size=400).map("".join)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=texts, network=st.sampled_from(sorted(LIMITS)))
def test_every_part_fits_and_the_parts_give_back_the_text(text, network):
    net = NETWORKS[network]()
    slices = split_thread(text, net.count, LIMITS[network])
    assert "".join(slices) == (text if text.strip() else "")
    parts = numbered(slices)
    assert all(net.count(p) <= LIMITS[network] for p in parts)
    assert all(p.strip() for p in parts)
    if len(parts) > 1:
        expected = [f"{i}/{len(parts)})" for i in range(1, len(parts) + 1)]
        assert [p.rsplit(" (", 1)[1] for p in parts] == expected
    boundaries = grapheme_boundaries(text)
    offset = 0
    for s in slices:                          # no part boundary splits a grapheme cluster
        offset += len(s)
        assert offset in boundaries or offset == len(text)


def test_thread_cuts_at_sentence_boundaries_when_sentences_fit():
    sentence = "This sentence is a sentence of moderate length for testing. "
    text = sentence * 20
    slices = split_thread(text, NETWORKS["x"]().count, 280)
    assert len(slices) > 1
    assert all(s.rstrip().endswith(".") for s in slices)


def test_a_posts_thread_ends_with_the_link_and_numbers_each_part(config, write_post):
    write_post("thread.md", thread_post(60))
    post = next(p for p in load_posts(config).posts if p.slug == "thread")
    parts = thread(post, "x", config)
    assert len(parts) > 2
    assert parts[0].text.startswith("A long story")
    assert parts[-1].link is not None and "utm_source=x" in parts[-1].link.uri
    assert parts[-1].text[parts[-1].link.start:parts[-1].link.end] in parts[-1].link.uri
    assert all(p.length <= 280 for p in parts)
    assert all(p.text.endswith(f"({i}/{len(parts)})") for i, p in enumerate(parts, 1))
    joined = " ".join(p.text for p in parts)
    assert regex.search(r"Sentence number 30 tells a little more of the story\.", joined)
    assert regex.search(r"of the story\.\n\nhttps://", joined)    # cut after a whole sentence



def test_a_thread_reuses_the_posts_sentences_and_cuts_as_reading_its_text_whole_would(config, write_post):
    # The post's sentence ends are found once (shared with its preheader and snippets) and placed
    # in the thread's text: the parts are those a fresh segmentation of that text gives.
    write_post("thread.md", thread_post(60))
    post = next(p for p in load_posts(config).posts if p.slug == "thread")
    for network, limit in LIMITS.items():
        parts = thread(post, network, config)
        net = NETWORKS[network]()
        source = Segmented(excerpt_source(post))
        body = excerpt_cuts(source, limit * 8)[-1].of(source.text)
        text = "\n\n".join([post.title, body, net.link_text(parts[-1].link.uri)])
        assert [p.text for p in parts] == numbered(split_thread(text, net.count, limit))
        assert all(p.length == net.count(p.text) <= limit for p in parts)
