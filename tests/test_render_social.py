"""Social snippets: the seed post per network, cutting, hashtags, overrides, and properties that
hold for any title, summary and tags (length, link, grapheme clusters)."""

from __future__ import annotations

import html
import json
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import regex
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pipeline.config import Config, load_config
from pipeline.errors import RenderError
from pipeline.intake.posts import load_posts
from pipeline.models import Post, Snippet
from pipeline.networks.base import Network
from pipeline.networks.registry import NETWORKS
from pipeline.render.cutting import Segmented, excerpt_cuts, first_sentence, sentence_ends, word_cuts
from pipeline.render.email import render_edition
from pipeline.render.fitting import fit
from pipeline.render.references import strip_markers
from pipeline.render.social import excerpt_source, hashtags, snippet, snippets
from pipeline.render.text import plain_text
from tests.conftest import FIXTURES, SEED_SLUG

NETWORK_NAMES = ("x", "mastodon", "bluesky")
SITE = "https://www.rtrwellnesscenter.com"
ELLIPSIS = "…"
CUT_CHARS = " ,;:–—-"       # a word cut may drop these from the end of the excerpt


def make_post(title: str = "A title", *, summary: str | None = None,
              body: str = "<p>Body text.</p>", tags: tuple[str, ...] = (),
              social: dict[str, str] | None = None, slug: str = "a-post") -> Post:
    return Post(path=f"posts/{slug}.md", slug=slug, title=title,
                date=datetime(2024, 5, 1, 9, 0, tzinfo=UTC), canonical_url=f"{SITE}/{slug}/",
                body_markdown="", body_html=body, summary=summary, tags=tags,
                social=MappingProxyType(social or {}))


def seed_post(config: Config) -> Post:
    return next(p for p in load_posts(config).posts if p.slug == SEED_SLUG)


def rewrite_config(project: Path, change: Callable[[dict[str, Any]], None]) -> Config:
    path = project / "config.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return load_config(path)


def parts(s: Snippet) -> list[str]:
    """The blocks before the link: title, excerpt and hashtag line (whichever are there)."""
    return s.text[: s.link.start].rstrip("\n").split("\n\n")


def shown_link(s: Snippet) -> str:
    return NETWORKS[s.network]().link_text(s.link.uri)


# --- the seed post --------------------------------------------------------------------------------

@pytest.mark.parametrize("network", NETWORK_NAMES)
def test_seed_snippet_fits_has_title_and_ends_with_tagged_link(config, network):
    post = seed_post(config)
    s = snippets(post, config)[network]
    net = NETWORKS[network]()
    assert s.network == network
    assert s.limit == config.network_limit(network)
    assert s.length == net.count(s.text) <= s.limit
    assert post.title == "Ketamine’s Potential Ability to Heal Neurological Damage"
    assert s.text.startswith(post.title + "\n\n")
    shown = net.link_text(s.link.uri)
    assert s.text.endswith(shown)
    assert s.text[s.link.start:s.link.end] == shown
    assert s.link.end == len(s.text)
    assert s.link.uri.startswith(post.canonical_url)
    assert (f"utm_source={network}&utm_medium=social&utm_campaign={SEED_SLUG}"
            in s.link.uri)
    assert parse_qs(urlsplit(s.link.uri).query) == {
        "utm_source": [network], "utm_medium": ["social"], "utm_campaign": [SEED_SLUG]}


def test_seed_snippets_use_the_first_sentences_and_all_hashtags(config):
    by_network = snippets(seed_post(config), config)
    assert set(by_network) == set(NETWORK_NAMES)
    first = ("In recent years, ketamine has been shown to possess capabilities as an extraordinarily "
             "effective treatment for a variety of conditions and symptoms.")
    for s in by_network.values():
        assert s.tags == ("#ketamine", "#depression", "#MentalHealth")
        _title, excerpt, tag_line = parts(s)
        assert excerpt.startswith(first)
        assert excerpt.endswith(".")
        assert tag_line == "#ketamine #depression #MentalHealth"
    # Mastodon's 500 leaves room for a second sentence; X's 280 and Bluesky's 300 do not.
    assert parts(by_network["mastodon"])[1] == first + (
        " One unique potential attribute of ketamine is the ability to regenerate dead or degraded "
        "brain cells.")
    assert parts(by_network["x"])[1] == first
    assert by_network["bluesky"].text.endswith("\nrtrwellnesscenter.com")


def test_seed_snippets_match_golden(config, golden):
    by_network = snippets(seed_post(config), config)
    data = {name: {**s.as_json(), "link_range": [s.link.start, s.link.end]}
            for name, s in by_network.items()}
    golden("seed/snippets.json", json.dumps(data, ensure_ascii=False, indent=2, sort_keys=True) + "\n")


# --- cutting the excerpt --------------------------------------------------------------------------

def test_excerpt_is_cut_at_a_sentence_boundary_when_a_sentence_fits(config):
    first = "Ketamine can help when other treatments have not."
    second = " ".join(["This second sentence goes on and on"] * 12) + " until it ends."
    post = make_post("Short title", summary=f"{first} {second}")
    for network in NETWORK_NAMES:
        s = snippet(post, network, config)
        assert parts(s) == ["Short title", first], network


def test_excerpt_is_cut_at_a_word_boundary_with_an_ellipsis_when_no_sentence_fits(config):
    words = [f"word{i}" for i in range(150)]
    source = " ".join(words) + "."
    post = make_post("Short title", summary=source)
    for network in NETWORK_NAMES:
        s = snippet(post, network, config)
        title, excerpt = parts(s)
        assert title == "Short title"
        assert excerpt.endswith(ELLIPSIS), network
        core = excerpt.removesuffix(ELLIPSIS)
        assert source.startswith(core)
        assert source[len(core)] == " ", f"{network}: cut inside a word: {core[-12:]!r}"
        assert core.split()[-1] in words
        # the cut is the longest that fits: one more word would not
        longer = source[: source.index(" ", len(core) + 1)] + ELLIPSIS
        bigger = s.text.replace(excerpt, longer)
        assert NETWORKS[network]().count(bigger) > s.limit


def test_excerpt_word_cut_drops_trailing_punctuation_before_the_ellipsis(config):
    source = ", ".join(f"item{i}" for i in range(200)) + "."
    excerpt = parts(snippet(make_post("T", summary=source), "x", config))[1]
    assert excerpt.endswith(ELLIPSIS)
    assert not excerpt.removesuffix(ELLIPSIS).endswith(tuple(CUT_CHARS))
    assert regex.fullmatch(r"item\d+", excerpt.removesuffix(ELLIPSIS).split()[-1])


def test_body_is_the_source_when_there_is_no_summary(config):
    body = "<p>The <em>body</em> speaks first. Then it speaks at great length " + \
        "and more " * 80 + "until the end.</p>"
    s = snippet(make_post("T", body=body), "x", config)
    assert parts(s) == ["T", "The body speaks first."]


# --- hashtags -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("tags", "expected"), [
    (["mental health"], ["#MentalHealth"]),
    (["ketamine", "depression"], ["#ketamine", "#depression"]),
    (["2024", "---", "42 42", "ketamine"], ["#ketamine"]),
    (["mental health", "mental health", "mental-health", "ketamine", "ketamine"],
     ["#MentalHealth", "#ketamine"]),
    (["covid-19"], ["#Covid19"]),
    (["first visit", "patient guide"], ["#FirstVisit", "#PatientGuide"]),
    (["naïve questions welcome"], ["#NaïveQuestionsWelcome"]),
    (["日本 語"], ["#日本語"]),
    ([], []),
    # Symbols that carry the meaning are spelled out; words of a tag are CamelCased.
    (["C#"], ["#CSharp"]), (["C++"], ["#Cpp"]), (["F#"], ["#FSharp"]), (["node.js"], ["#NodeJS"]),
    ([".NET"], ["#DotNet"]), (["Vue.js"], ["#VueJS"]), (["machine learning"], ["#MachineLearning"]),
    (["C# tips", "ASP.NET"], ["#CSharpTips", "#ASPNet"]),  # an acronym keeps its capitals
    (["#ketamine"], ["#ketamine"]),                       # a tag written as a hashtag stays one
    (["C", "C#", "C++"], ["#C", "#CSharp", "#Cpp"]),       # three languages, three tags
])
def test_hashtags_from_tags(tags, expected):
    assert hashtags(tags) == expected


def test_a_tag_that_cannot_be_a_hashtag_is_left_out_with_a_note(config):
    post = make_post("T", summary="Short.", tags=("2024", "C#", "---", "machine learning"))
    s = snippet(post, "mastodon", config)
    assert s.tags == ("#CSharp", "#MachineLearning")
    assert len(s.notes) == 2
    assert "'2024'" in s.notes[0] and "letter" in s.notes[0]
    assert "'---'" in s.notes[1]
    assert s.as_json()["notes"] == list(s.notes)          # preview writes it into snippets.json
    # A post whose tags all make hashtags has no notes, and its JSON no "notes" key.
    assert "notes" not in snippet(make_post("T", tags=("ketamine",)), "x", config).as_json()


def test_hashtags_in_snippet_are_limited_by_config(project):
    config = rewrite_config(project, lambda d: d["networks"].update(x={"hashtags": 0},
                                                                     bluesky={"hashtags": 1}))
    post = seed_post(config)
    x, bluesky, mastodon = (snippet(post, n, config) for n in ("x", "bluesky", "mastodon"))
    assert x.tags == ()
    assert "#" not in x.text
    assert bluesky.tags == ("#ketamine",)
    assert "#ketamine\n" in bluesky.text and "#depression" not in bluesky.text
    assert mastodon.tags == ("#ketamine", "#depression", "#MentalHealth")


def test_hashtags_go_before_the_excerpt_is_dropped(config):
    # On X: title 239 + "\n\n" + "One." + "\n\n" + tags + "\n" + link 23 fits with one tag only.
    title = ("Title " * 40).strip()
    post = make_post(title, summary="One. Two three four five six seven.",
                     tags=("alpha", "beta", "gamma"))
    s = snippet(post, "x", config)
    assert parts(s) == [title, "One.", "#alpha"]
    assert s.tags == ("#alpha",)
    assert s.length == 239 + 2 + 4 + 2 + 6 + 1 + 23


def test_title_alone_when_no_excerpt_fits_even_without_hashtags(config):
    title = ("Title " * 42).strip()        # 251: title + link fits in 280, with "One." it does not
    s = snippet(make_post(title, summary="One. Two.", tags=("alpha",)), "x", config)
    assert parts(s) == [title]
    assert s.tags == ()


# --- overrides ------------------------------------------------------------------------------------

def test_front_matter_override_is_used_verbatim_plus_the_link(config, write_post):
    override = "Un journal d’humeur 🌿 — five minutes a day. Our guide:"
    write_post("2024-06-01-override.md", f"""
        ---
        title: "Override test"
        date: 2024-06-01
        tags: [ketamine]
        social:
          mastodon: "{override}"
        ---

        Body text that is not used by Mastodon. It is used by the others.
        """)
    post = next(p for p in load_posts(config).posts if p.slug == "2024-06-01-override")
    by_network = snippets(post, config)
    mastodon = by_network["mastodon"]
    assert mastodon.text == f"{override}\n\n{mastodon.link.uri}"
    assert mastodon.tags == ()
    assert mastodon.text[mastodon.link.start:mastodon.link.end] == mastodon.link.uri
    assert "utm_source=mastodon&utm_medium=social&utm_campaign=2024-06-01-override" in mastodon.link.uri
    # the other networks are built from the post as usual
    assert by_network["x"].text.startswith("Override test\n\nBody text that is not used by Mastodon.")
    assert override not in by_network["bluesky"].text


def test_override_that_is_too_long_raises_naming_network_length_and_limit(config):
    override = "word " * 120
    post = make_post(social={"mastodon": override})
    expected_length = len(override.strip()) + len("\n\n") + 23     # the link counts 23
    with pytest.raises(RenderError) as info:
        snippet(post, "mastodon", config)
    message = str(info.value)
    assert "mastodon" in message
    assert str(expected_length) in message
    assert "500" in message
    assert post.path in message


def test_override_too_long_for_x_counts_the_way_x_counts(config):
    override = "日本語" * 50                       # 150 characters, weighted 300 on X
    with pytest.raises(RenderError, match=r"social\.x: .*\b325\b.*\b280\b"):
        snippet(make_post(social={"x": override}), "x", config)


@pytest.mark.parametrize("network", ["x", "mastodon"])
def test_override_that_already_contains_the_canonical_url_still_has_a_valid_link(config, network):
    post = make_post(social={network: f"New on the blog: {SITE}/a-post/ read it today"})
    s = snippet(post, network, config)
    assert 0 <= s.link.start < s.link.end <= len(s.text)
    assert s.text[s.link.start:s.link.end] in (shown_link(s), post.canonical_url)


# --- networks and titles --------------------------------------------------------------------------

def test_disabled_network_gets_no_snippet(project):
    config = rewrite_config(project, lambda d: d["networks"].update(bluesky={"enabled": False}))
    post = seed_post(config)
    assert set(snippets(post, config)) == {"x", "mastodon"}


def test_configured_limit_is_used(project):
    config = rewrite_config(project, lambda d: d["networks"].update(mastodon={"limit": 120}))
    s = snippet(seed_post(config), "mastodon", config)
    assert s.limit == 120
    assert s.length <= 120
    assert s.text.endswith(s.link.uri)


@pytest.mark.parametrize("network", NETWORK_NAMES)
def test_very_long_single_word_title_is_never_cut_inside_the_word(config, network):
    title = "a" * 400
    s = snippet(make_post(title, summary="A short summary."), network, config)
    before = s.text[: s.link.start]
    assert before == "" or before.startswith(title + "\n\n"), before[:40]
    assert s.text.endswith(shown_link(s))
    if network in ("x", "bluesky"):           # 400 does not fit in 280 / 300: the title goes
        assert before == ""
        assert "aaaa" not in s.text
    else:                                     # 400 + the link fits in Mastodon's 500
        assert title in s.text


@pytest.mark.parametrize("network", NETWORK_NAMES)
def test_long_title_is_cut_at_a_word_boundary(config, network):
    words = [f"w{i}" for i in range(200)]
    title = " ".join(words)
    s = snippet(make_post(title, summary="Summary."), network, config)
    (head,) = parts(s)
    assert title.startswith(head)
    assert title[len(head)] == " "
    assert head.split()[-1] in words
    assert s.length <= s.limit


def test_body_without_spaces_is_not_cut_inside_a_grapheme_cluster(config):
    family = "\U0001F468\u200d\U0001F469\u200d\U0001F467\u200d\U0001F466"
    post = make_post("T", body=f"<p>{family * 200}</p>")
    s = snippet(post, "bluesky", config)
    blocks = parts(s)
    if len(blocks) > 1:
        excerpt = blocks[1]
        core = excerpt.removesuffix(ELLIPSIS)
        assert regex.findall(r"\X", core) == [family] * len(regex.findall(r"\X", core))
        assert excerpt.endswith(ELLIPSIS)


@pytest.mark.parametrize("network", ["x", "mastodon"])
def test_url_heavy_body_is_not_cut_without_an_ellipsis(config, network):
    urls = [f"https://example.com/{'a' * 100}/{i}" for i in range(60)]
    post = make_post("T", body="<p>" + " ".join(urls) + "</p>")
    s = snippet(post, network, config)
    excerpt = "".join(parts(s)[1:2])
    assert excerpt.endswith(ELLIPSIS) or not excerpt, excerpt[-40:]


@pytest.mark.parametrize("network", NETWORK_NAMES)
def test_excerpt_is_never_cut_inside_a_url(config, network):
    url = "https://example.com/results?id=42"
    summary = f"Read {url} for the trial data and " + "more words here " * 30 + "end."
    s = snippet(make_post("T", summary=summary), network, config)
    excerpt = "".join(parts(s)[1:2])
    assert url in excerpt or "https://" not in excerpt, excerpt


# --- properties -----------------------------------------------------------------------------------
# Texts below are built from these atoms; URLs (with queries) are among them.

ATOMS = [
    "word", "Ketamine", "naïve", "e\u0301", "a\u0301\u0302", "\u0301", "\u200d", "\u200f",
    "\U0001F44D\U0001F3FD", "\U0001F468\u200d\U0001F469\u200d\U0001F467\u200d\U0001F466",
    "\U0001F1EB\U0001F1F7", "\U0001F33F", "\u2764\ufe0f", "日本語", "漢字", "ありがとう", "한국어",
    "שלום", "مرحبا", "\u0915\u094d\u0937", " ", " ", " ", ". ", "? ", "! ", ", ", "; ", " — ",
    "…", "-", "Dr. ", "3.5", "(", ")", "“", "”", "#", "@", "\t", "\n",
    " https://example.com/results?id=42 ", " https://example.org/a/b.html#frag. ",
]
pieces = st.one_of(st.sampled_from(ATOMS), st.text(max_size=4))
texts = st.lists(pieces, max_size=60).map("".join)
titles = texts.filter(lambda t: bool(t.strip()))
# Up to 150 pieces: around and beyond X's limit * 4, the most of a body that is segmented.
medium_texts = st.lists(pieces, max_size=150).map("".join)
long_texts = st.lists(st.one_of(st.sampled_from(ATOMS), st.text(min_size=1, max_size=6)),
                      min_size=100, max_size=300).map("".join)
tag_lists = st.lists(st.one_of(st.sampled_from(["mental health", "ketamine", "2024", "日本 語",
                                                "naïve questions", "e\u0301cole"]),
                               st.text(max_size=12)), max_size=5)


def _graphemes(text: str) -> list[str]:
    return regex.findall(r"\X", text)


_WORD_CHAR = regex.compile(r"[\p{L}\p{M}\p{N}_]")


def _check_prefix_cut(cut: str, source: str, what: str) -> None:
    """`cut` is `source` cut at a word boundary without splitting a grapheme cluster.
    A word cut (title, or excerpt before "…") is made at a space; a sentence cut is made
    where pysbd ends a sentence, which must at least not be between two word characters."""
    assert source.startswith(cut), f"{what} {cut!r} is not a start of {source!r}"
    assert cut, f"empty {what}"
    g_cut = _graphemes(cut)
    assert _graphemes(source)[: len(g_cut)] == g_cut, f"{what} {cut!r} splits a grapheme cluster"
    if len(cut) == len(source):
        return
    after = source[len(cut)]
    if what.startswith("sentence"):
        assert not (_WORD_CHAR.match(cut[-1]) and _WORD_CHAR.match(after)), \
            f"{what} {cut!r} is cut inside a word of {source!r}"
    else:
        assert after in CUT_CHARS or after.isspace(), f"{what} {cut!r} is cut inside a word of {source!r}"


def check_snippet(s: Snippet, post: Post, config: Config) -> None:
    net = NETWORKS[s.network]()
    limit = config.network_limit(s.network)
    # length, as the network counts it
    assert s.limit == limit
    assert s.length == net.count(s.text) <= limit
    # the link, exactly once, at the end
    shown = net.link_text(s.link.uri)
    assert s.link.uri.startswith(post.canonical_url)
    assert s.text[s.link.start:s.link.end] == shown
    assert s.link.end == len(s.text)
    assert s.text.count(shown) == 1
    # hashtags: the first n of the post's
    assert s.tags == tuple(hashtags(post.tags)[: len(s.tags)])
    before = s.text[: s.link.start]
    if s.tags:
        tag_line = " ".join(s.tags) + "\n"
        assert before.endswith(tag_line)
        before = before[: -len(tag_line)]
    rest = before.removesuffix("\n\n")
    # title, excerpt: whole, or cut at a word boundary between grapheme clusters
    if rest in ("", post.title):
        event(f"{s.network}: {'title' if rest else 'link'} only")
        return
    if rest.startswith(post.title + "\n\n"):
        excerpt = rest[len(post.title) + 2:]
        source = " ".join(excerpt_source(post).split())
        if source.startswith(excerpt):
            event(f"{s.network}: {'whole' if excerpt == source else 'sentence'} excerpt")
            _check_prefix_cut(excerpt, source, "sentence excerpt")
        else:
            event(f"{s.network}: word-cut excerpt")
            assert excerpt.endswith(ELLIPSIS), f"excerpt {excerpt!r} neither whole nor with …"
            _check_prefix_cut(excerpt.removesuffix(ELLIPSIS), source, "word excerpt")
        return
    event(f"{s.network}: cut title")
    _check_prefix_cut(rest, " ".join(post.title.split()), "cut title")


PROPERTY_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture])


@PROPERTY_SETTINGS
@given(title=titles, summary=st.one_of(st.none(), medium_texts), body=medium_texts, tags=tag_lists)
def test_any_post_gives_snippets_that_fit_keep_the_link_and_whole_graphemes(config, title, summary,
                                                                            body, tags):
    # `config` is only read, never changed, so sharing it between examples is safe.
    post = make_post(title, summary=summary, body=f"<p>{html.escape(body)}</p>", tags=tuple(tags))
    by_network = snippets(post, config)
    assert set(by_network) == set(NETWORK_NAMES)
    for s in by_network.values():
        check_snippet(s, post, config)


@PROPERTY_SETTINGS
@given(title=titles, summary=long_texts, tags=tag_lists)
def test_long_summaries_are_cut_between_grapheme_clusters(config, title, summary, tags):
    post = make_post(title[:80] if title[:80].strip() else "T", summary=summary, tags=tuple(tags))
    for network in NETWORK_NAMES:
        check_snippet(snippet(post, network, config), post, config)



@PROPERTY_SETTINGS
@given(title=long_texts.filter(lambda t: bool(t.strip())), summary=st.one_of(st.none(), texts),
       tags=tag_lists)
def test_long_titles_are_cut_between_grapheme_clusters_or_dropped(config, title, summary, tags):
    post = make_post(title, summary=summary, tags=tuple(tags))
    for network in NETWORK_NAMES:
        check_snippet(snippet(post, network, config), post, config)


# --- references: never in a snippet or a preheader --------------------------------------------------

REFERENCE_MARKS = regex.compile(r"\[\^?\d|\[\^|[¹²³⁴⁵⁶⁷⁸⁹⁰]")


def test_seed_snippets_and_preheader_carry_no_reference_markers(project):
    # Mastodon at 1,000 reaches past the quotation that ends with "[1]" in the post.
    config = rewrite_config(project, lambda d: d["networks"].update(mastodon={"limit": 1000}))
    post = seed_post(config)
    assert "” [1]." in post.body_markdown
    source = excerpt_source(post)
    assert "[1]" not in source and "ncbi.nlm.nih.gov" not in source and "Sources" not in source
    assert "neurodegenerative processes”." in source
    by_network = snippets(post, config)
    assert "neurodegenerative processes”." in by_network["mastodon"].text
    for s in by_network.values():
        assert not REFERENCE_MARKS.search(s.text), s.text
    assert not REFERENCE_MARKS.search(render_edition(post, config).preheader)


FOOTNOTED = """
    ---
    title: Footnotes
    date: 2024-06-01
    ---

    Ketamine works fast[^1] and was approved in 2019[1] [1]. Trials[1][2] and reviews[^review]
    agree¹, an effect of 10 m² per dose[^missing]. It is also cheap [12, 14].

    ## References

    1. Smith, J. *A trial*. 2019.

    [^1]: The first footnote, which no snippet shows.
    [^review]: A review of the trials.
    """


def test_footnotes_and_typed_markers_never_reach_snippets_or_preheader(config, write_post):
    write_post("footnotes.md", FOOTNOTED)
    post = next(p for p in load_posts(config).posts if p.slug == "footnotes")
    source = excerpt_source(post)
    assert source == ("Ketamine works fast and was approved in 2019. Trials and reviews agree, an effect "
                      "of 10 m² per dose. It is also cheap.")
    for s in snippets(post, config).values():
        assert not REFERENCE_MARKS.search(s.text.replace("m²", "m")), s.text
        assert "first footnote" not in s.text and "Smith" not in s.text
    assert "10 m² per dose" in snippets(post, config)["mastodon"].text
    edition = render_edition(post, config)
    assert edition.preheader == "Ketamine works fast and was approved in 2019."
    assert "[1]" in edition.text             # the email's text part keeps its notes


@pytest.mark.parametrize(("body", "text"), [
    # markdown-it, after sanitizing (classes gone, links absolute)
    ('<p>Fast<sup><a href="https://www.rtrwellnesscenter.com/p/#fn1">[1]</a></sup>.</p><hr>'
     '<ol><li id="fn1"><p>Note. <a href="https://www.rtrwellnesscenter.com/p/#fnref1">↩︎</a></p></li></ol>',
     "Fast."),
    # kramdown (Jekyll) and Hugo: fn:1, a bare number
    ('<p>Fast<sup id="fnref:1"><a href="#fn:1">1</a></sup> indeed.</p><div><ol><li id="fn:1"><p>N.</p>'
     '</li></ol></div>', "Fast indeed."),
    # Pandoc: the link holds the superscript
    ('<p>Fast<a href="#fn1"><sup>1</sup></a>.</p><section><ol><li id="fn1"><p>N.</p></li></ol></section>',
     "Fast."),
    # link numbers are the text part's, not the running text's
    ('<p>Call <a href="https://www.rtrwellnesscenter.com/contact/">the front desk</a> today.</p>',
     "Call the front desk today."),
    # code keeps its brackets; an exponent after a unit stays; a typed marker goes
    ("<p>Use <code>items[1]</code> in m<sup>2</sup> as shown<sup>3</sup> [2].</p>",
     "Use items[1] in m2 as shown."),
    # a "Sources" section (up to the next heading as high) is not running text
    ("<p>Body.</p><h2>Sources</h2><ol><li>https://a.example/1</li></ol><h2>Next</h2><p>More.</p>",
     "Body. More."),
])
def test_running_text_leaves_out_references_however_they_are_written(body, text):
    assert plain_text(body) == text


@pytest.mark.parametrize(("text", "expected"), [
    ("In 2020[1] [1] it was", "In 2020 it was"),
    ("text[^1] more", "text more"),
    ("a [1][2] b [3, 4] c [5–7].", "a b c."),
    ("works¹ and sources.²³ x", "works and sources. x"),
    ("10 m² and E = mc²", "10 m² and E = mc²"),
    ("[2024] and [0] and [citation needed]", "[2024] and [0] and [citation needed]"),
])
def test_typed_reference_markers(text, expected):
    assert strip_markers(text) == expected


# --- fitting: the running counts choose what counting each candidate would -------------------------

def _layout(head: str, excerpt: str, used: list[str] | tuple[str, ...], link: str) -> str:
    return "\n\n".join(p for p in (head, excerpt, " ".join(used)) if p) + \
        ("\n" if used else "\n\n" if head or excerpt else "") + link


def recount_fit(net: Network, title: str, source: str, tags: list[str], url: str, limit: int,
                *, bisect: bool = True) -> str:
    """The snippet the straightforward way: every candidate tried is counted by the network
    (bisecting, or trying each from the longest down)."""
    link = net.link_text(url)
    seg = Segmented(source)
    cuts = [c.of(seg.text) for c in excerpt_cuts(seg, limit * 4)]

    def longest(candidates: list[str], ok: Callable[[str], bool]) -> str | None:
        if not bisect:
            return next((c for c in reversed(candidates) if ok(c)), None)
        lo, hi, best = 0, len(candidates) - 1, None
        while lo <= hi:
            mid = (lo + hi) // 2
            if ok(candidates[mid]):
                best, lo = candidates[mid], mid + 1
            else:
                hi = mid - 1
        return best

    for n in range(len(tags), -1, -1):
        excerpt = longest(cuts, lambda e, n=n: net.count(_layout(title, e, tags[:n], link)) <= limit)
        if excerpt:
            return _layout(title, excerpt, tags[:n], link)
    for n in range(len(tags), -1, -1):
        if net.count(_layout(title, "", tags[:n], link)) <= limit:
            return _layout(title, "", tags[:n], link)
    head = longest(word_cuts(title), lambda t: net.count(_layout(t, "", (), link)) <= limit)
    return _layout(head or "", "", (), link)


def _corpus_posts(project: Path) -> list[Post]:
    posts = project / "posts"
    for path in (FIXTURES / "jekyll-posts").iterdir():
        shutil.copy(path, posts / path.name)
    return list(load_posts(load_config(project / "config.yaml")).posts)


def test_fitting_matches_a_straightforward_recount_on_shipped_and_jekyll_posts(project):
    posts = _corpus_posts(project)
    assert len(posts) >= 100
    config = rewrite_config(project, lambda d: d["networks"].update({n: {} for n in NETWORKS}))
    checked = 0
    for post in posts:
        for network, net_type in NETWORKS.items():
            net, limit = net_type(), config.network_limit(network)
            s = snippet(post, network, config)
            if network in post.social:
                continue
            tags = hashtags(post.tags)[:3]
            assert s.text == recount_fit(net, post.title, excerpt_source(post), tags, s.link.uri, limit)
            assert s.length == net.count(s.text)
            # More hashtags than fit, and a tight limit: the excerpt is cut at a word, tags go.
            # (Where a link counts in full, 140 on top of it.)
            extra = ["#ketamine", "#MentalHealth", "#PatientGuide"]
            tight = 140 + max(net.count(net.link_text(s.link.uri)) - 23, 0)
            fitted = fit(net, title=post.title, source=Segmented(excerpt_source(post)), chars=tight * 4,
                         tags=extra, url=s.link.uri, limit=tight)
            assert fitted.text == recount_fit(net, post.title, excerpt_source(post), extra, s.link.uri, tight)
            assert fitted.length == net.count(fitted.text) <= tight
            checked += 1
    assert checked >= 700


@PROPERTY_SETTINGS
@given(title=titles, source=medium_texts, tags=tag_lists, network=st.sampled_from(NETWORK_NAMES),
       limit=st.sampled_from([60, 140, 280]))
def test_fitting_matches_counting_every_candidate_for_any_text(title, source, tags, network, limit):
    net = NETWORKS[network]()
    url = f"{SITE}/a-post/?utm_source={network}"
    tags = hashtags(tags)[:3]
    fitted = fit(net, title=title, source=Segmented(source), chars=limit * 4, tags=tags, url=url, limit=limit)
    assert fitted.length == net.count(fitted.text) <= limit
    assert fitted.text == recount_fit(net, title, source, tags, url, limit, bisect=False)


# --- sentences: found once, as if the whole text were read ------------------------------------------

def test_sentence_ends_found_chunk_by_chunk_are_those_of_the_whole_text(project):
    for post in _corpus_posts(project):
        seg = Segmented(excerpt_source(post))
        assert seg.ends(len(seg.text)) == sentence_ends(seg.text), post.path


def test_a_long_quotation_is_not_cut_into_sentences_by_a_chunk_end():
    quote = "“" + " ".join(f"Quoted sentence number {i} ends here." for i in range(40)) + "”"
    text = f"First sentence here. {quote} After the quote. Last one."
    seg = Segmented(text)
    assert seg.ends(60) == [21]                     # nothing inside the quotation
    assert seg.ends(len(text)) == sentence_ends(text)
    assert first_sentence(text) == "First sentence here."
