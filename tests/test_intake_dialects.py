"""Posts as generators write them (#13): TOML, JSON and Pelican front matter, reStructuredText,
dates from file names and in every form generators accept, their keys mapped onto ours, page
bundles, MDX, nested folders, and every file that is not read named."""

from __future__ import annotations

import textwrap
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from pipeline.intake.posts import LoadResult, load_posts
from pipeline.models import Post, Severity
from tests.conftest import SEED_SLUG

SITE = "https://www.rtrwellnesscenter.com"
SHIPPED = {SEED_SLUG, "2024-03-12-your-first-infusion", "mood-journal"}


@pytest.fixture
def write(project: Path):
    """Write posts/REL (folders made as needed); text is dedented. Returns the path."""

    def put(rel: str, text: str = "", *, raw: bytes | None = None) -> Path:
        path = project / "posts" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if raw is not None:
            path.write_bytes(raw)
        else:
            path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    return put


def _post(result: LoadResult, slug: str) -> Post:
    found = [p for p in result.posts if p.slug == slug]
    assert found, f"no post {slug!r}; problems: {[str(p) for p in result.problems]}"
    return found[0]


def _lines(result: LoadResult, rel: str, severity: Severity | None = None) -> list[str]:
    return [p.message for p in result.problems
            if p.where == f"posts/{rel}" and (severity is None or p.severity is severity)]


def _clean(result: LoadResult) -> None:
    """Every shipped post loaded and nothing reported."""
    assert {p.slug for p in result.posts} >= SHIPPED
    assert [str(p) for p in result.problems] == []


# -- front matter formats -----------------------------------------------------------------------

def test_hugo_toml_front_matter(config, write):
    write("size-matters.md", """
        +++
        date = "2020-05-25T08:09:26-07:00"
        title = "Size Matters"
        author = "Jessica Frazelle"
        description = "What the future of consumer computers should look like."
        tags = ["hardware", "laptops"]
        categories = ["Opinion"]
        +++

        My mom has a tendency to buy these machines.
        """)
    result = load_posts(config)
    _clean(result)
    post = _post(result, "size-matters")
    assert post.title == "Size Matters"
    assert post.date == datetime(2020, 5, 25, 15, 9, 26, tzinfo=UTC)
    assert post.author == "Jessica Frazelle"
    assert post.summary == "What the future of consumer computers should look like."
    assert post.tags == ("hardware", "laptops", "Opinion")
    assert "<p>My mom has a tendency" in post.body_html


def test_toml_native_dates(config, write):
    write("offset.md", '+++\ntitle = "A"\ndate = 2021-06-01T10:00:00+02:00\n+++\n\nBody.\n')
    write("local.md", '+++\ntitle = "B"\ndate = 2021-07-01T09:30:00\n+++\n\nBody.\n')
    write("day.md", '+++\ntitle = "C"\ndate = 2024-01-15\n+++\n\nBody.\n')
    result = load_posts(config)
    _clean(result)
    assert _post(result, "offset").date.utcoffset() == timedelta(hours=2)
    local = _post(result, "local").date
    assert str(local.tzinfo) == "America/New_York" and (local.hour, local.minute) == (9, 30)
    day = _post(result, "day").date
    assert day.replace(tzinfo=None) == datetime(2024, 1, 15) and str(day.tzinfo) == "America/New_York"


def test_bad_toml_names_the_file_line(config, write):
    write("bad.md", '+++\ntitle = "T"\ndate = 2024-01-01\ntags = [oops\n+++\n\nBody.\n')
    [line] = _lines(load_posts(config), "bad.md")
    assert line.startswith("line 4: front matter is not valid TOML (")


def test_unclosed_toml(config, write):
    write("bad.md", '+++\ntitle = "T"\n\nBody.\n')
    assert _lines(load_posts(config), "bad.md") == ["front matter is not closed: add a +++ line after it"]


def test_toml_time_alone_is_not_a_date(config, write):
    write("bad.md", '+++\ntitle = "T"\ndate = 09:30:00\n+++\n\nBody.\n')
    [line] = _lines(load_posts(config), "bad.md")
    assert line.startswith("front matter: 'date' is '09:30:00', not a date")


def test_json_front_matter(config, write):
    write("json.md", """
        {
          "title": "JSON post",
          "date": "2024-02-03",
          "tags": ["a", "b"],
          "params": {"nested": {"deep": true}}
        }

        Body after the object.
        """)
    result = load_posts(config)
    post = _post(result, "json")
    assert post.title == "JSON post" and post.tags == ("a", "b")
    assert "Body after the object." in post.body_html
    assert _lines(result, "json.md") == ["front matter: unknown field 'params' (ignored)"]


def test_bad_json_names_the_line(config, write):
    write("bad.md", '{\n  "title": "T",\n  "date": "2024-01-01",\n}\n\nBody.\n')
    [line] = _lines(load_posts(config), "bad.md")
    assert line.startswith("line 4: front matter is not valid JSON (")


def test_liquid_at_the_top_is_no_front_matter_not_json(config, write):
    write("bad.md", "{% include header.html %}\n\nBody.\n")
    assert _lines(load_posts(config), "bad.md") == [
        "no front matter: start the file with a --- block holding title: and date:"]


def test_pelican_markdown_metadata(config, write):
    write("awstats.md", """
        Title: awstats+nginx配置笔记
        Date: 2013-11-04 16:33
        modified: 2014-03-13 09:17
        TAGS: awstats, perl, nginx
        Category: note
        Slug: awstats-nginx
        Authors: Alice Ng; Bob Li
        Summary: How to set up awstats
            behind nginx.

        Body: this line is not metadata.
        """)
    result = load_posts(config)
    _clean(result)
    post = _post(result, "awstats-nginx")
    assert post.title == "awstats+nginx配置笔记"
    assert post.date.replace(tzinfo=None) == datetime(2013, 11, 4, 16, 33)
    assert post.tags == ("awstats", "perl", "nginx", "note")
    assert post.author == "Alice Ng and Bob Li"
    assert post.summary == "How to set up awstats behind nginx."
    assert post.body_markdown.strip() == "Body: this line is not metadata."


def test_pelican_status_draft(config, write):
    write("d.md", "Title: Draft\nDate: 2024-01-01\nStatus: draft\n\nBody.\n")
    write("p.md", "Title: Published\nDate: 2024-01-01\nStatus: published\n\nBody.\n")
    result = load_posts(config)
    _clean(result)
    assert _post(result, "d").draft and not _post(result, "p").draft


def test_lines_without_a_title_are_not_pelican_metadata(config, write):
    write("bad.md", "Note: this is a body.\n\nMore body.\n")
    assert _lines(load_posts(config), "bad.md") == [
        "no front matter: start the file with a --- block holding title: and date:"]


# -- reStructuredText ----------------------------------------------------------------------------

RST = """
    ==========================================
     How to write a type-safe ``unwrap``
    ==========================================

    :date: 2020-06-19 10:00
    :tags: dependent-types, tricks
    :category: Coq
    :slug: unwrapping-options
    :authors: Clément Pit-Claudel, Tej Chajed
    :summary: Tips and tricks.
    :lang: en

    A paragraph with *emphasis*, a `link <https://coq.inria.fr/>`_ and :file:`package.json`.

    Section
    =======

    .. image:: figure.png
       :alt: A figure

    .. coq:: none

       Require Import Coq.Bool.Bool.

    .. include:: /etc/passwd

    .. raw:: html

       <script>alert(1)</script>
    """


def test_rst_post(config, write):
    write("2020-06-19_unwrapping-options.rst", RST)
    result = load_posts(config)
    post = _post(result, "unwrapping-options")
    assert post.title == "How to write a type-safe unwrap"
    assert post.date.replace(tzinfo=None) == datetime(2020, 6, 19, 10, 0)
    assert post.tags == ("dependent-types", "tricks", "Coq")
    assert post.author == "Clément Pit-Claudel and Tej Chajed"
    assert post.summary == "Tips and tricks."
    html = post.body_html
    assert "<em>emphasis</em>" in html
    assert '<a href="https://coq.inria.fr/">link</a>' in html
    assert "<h2>Section</h2>" in html
    assert f'src="{SITE}/unwrapping-options/figure.png"' in html
    assert "package.json" in html and ":file:" not in html
    assert "Require Import" not in html
    assert "root:" not in html and "<script" not in html and "alert" not in html
    warnings = _lines(result, "2020-06-19_unwrapping-options.rst", Severity.WARNING)
    role = 'line 13: reStructuredText: Unknown interpreted text role "file"'
    assert any(w.startswith(role) for w in warnings)
    assert any('Unknown directive type "coq"; left out of the email' in w for w in warnings)
    assert any('"include" directive disabled' in w for w in warnings)
    assert any('"raw" directive disabled' in w for w in warnings)
    assert all("\n" not in w for w in warnings)


def test_rst_date_from_the_file_name_and_status_draft(config, write):
    write("2020-11-09_alectryon.rst", """
        Untangling mechanized proofs
        ============================

        :status: draft

        Body.
        """)
    post = _post(load_posts(config), "2020-11-09-alectryon")
    assert post.date.date() == date(2020, 11, 9)
    assert post.draft


def test_rst_without_a_title(config, write):
    write("bad.rst", ":date: 2024-01-01\n\nJust a paragraph.\n")
    assert _lines(load_posts(config), "bad.rst") == ["front matter: 'title' is missing; add `title: ...`"]


# -- dates ---------------------------------------------------------------------------------------

def test_jekyll_date_from_the_file_name_keeps_the_stem_as_slug(config, write):
    write("2024-03-12-my-post.md", "---\ntitle: T\n---\n\nBody.\n")
    result = load_posts(config)
    _clean(result)
    post = _post(result, "2024-03-12-my-post")
    assert post.date.replace(tzinfo=None) == datetime(2024, 3, 12)
    assert str(post.date.tzinfo) == "America/New_York"


def test_front_matter_date_wins_over_the_file_name(config, write):
    write("2024-03-12-my-post.md", "---\ntitle: T\ndate: 2024-03-13 08:00:00 -0500\n---\n\nBody.\n")
    assert _post(load_posts(config), "2024-03-12-my-post").date.day == 13


def test_page_bundle_date_from_the_folder_name(config, write):
    write("2021-03-05-second-security-audit/index.md", "---\ntitle: Audit\n---\n\nBody.\n")
    result = load_posts(config)
    _clean(result)
    post = _post(result, "2021-03-05-second-security-audit")
    assert post.date.date() == date(2021, 3, 5)
    assert post.path == "posts/2021-03-05-second-security-audit/index.md"


def test_impossible_file_name_date_is_one_line(config, write):
    write("2024-13-45-oops.md", "---\ntitle: T\n---\n\nBody.\n")
    assert _lines(load_posts(config), "2024-13-45-oops.md") == [
        "file name: '2024-13-45' is not a date; correct it, or add `date: ...`"]


@pytest.mark.parametrize(("written", "expected"), [
    ("2019-04-25 9:00:00", datetime(2019, 4, 25, 9, 0)),
    ("2019-04-09T8:09:26-07:00", datetime(2019, 4, 9, 15, 9, 26, tzinfo=UTC)),
    ("2013-05-06 12:00:00 -0500", datetime(2013, 5, 6, 17, 0, tzinfo=UTC)),
    ("2024-01-01T10:00:00Z", datetime(2024, 1, 1, 10, 0, tzinfo=UTC)),
    ("2024-01-01T10:00:00.123+01:00", datetime(2024, 1, 1, 9, 0, 0, 123000, tzinfo=UTC)),
    ("2024-03-12", datetime(2024, 3, 12)),
    ("'Jun 01 2024'", datetime(2024, 6, 1)),
    ("JUN 1, 2023", datetime(2023, 6, 1)),
    ("2013-11-04 16:33", datetime(2013, 11, 4, 16, 33)),
])
def test_date_forms_generators_accept(config, write, written, expected):
    write("d.md", f"---\ntitle: T\ndate: {written}\n---\n\nBody.\n")
    when = _post(load_posts(config), "d").date
    if expected.tzinfo:
        assert when == expected
    else:
        assert when.replace(tzinfo=None) == expected and str(when.tzinfo) == "America/New_York"


@pytest.mark.parametrize("written", ["2020-13-01", "2024", "June", "2024-02-30 10:00",
                                     "Sat, 01 Jun 2024 10:00:00 EST", "2023-01-29 18:30:22 2023 -0800"])
def test_not_dates_stay_one_line_errors(config, write, written):
    write("bad.md", f"---\ntitle: T\ndate: {written}\n---\n\nBody.\n")
    [line] = _lines(load_posts(config), "bad.md")
    assert line.startswith("front matter: 'date' is ") and "not a date" in line


def test_date_under_another_key_is_named_by_it(config, write):
    write("astro.md", "---\ntitle: T\npubDate: 'Jun 01 2024'\n---\n\nBody.\n")
    write("bad.md", "---\ntitle: T\npubDate: 'someday'\n---\n\nBody.\n")
    write("old.md", "---\ntitle: T\npublishDate: 1901-01-01\n---\n\nBody.\n")
    result = load_posts(config)
    assert _post(result, "astro").date.date() == date(2024, 6, 1)
    assert _lines(result, "bad.md") == [
        "front matter: 'pubDate' is 'someday', not a date (YYYY-MM-DD, or YYYY-MM-DDTHH:MM:SS+HH:MM)"]
    assert _lines(result, "old.md") == ["front matter: 'publishDate' is 1901-01-01, outside 1970-2200"]


# -- keys mapped onto ours -----------------------------------------------------------------------

@pytest.mark.parametrize("key", ["description", "excerpt", "summary"])
def test_summary_keys(config, write, key):
    write("s.md", f"---\ntitle: T\ndate: 2024-01-01\n{key}: The gist.\n---\n\nBody.\n")
    result = load_posts(config)
    _clean(result)
    assert _post(result, "s").summary == "The gist."


@pytest.mark.parametrize(("front_matter", "tags"), [
    ("categories: [Community, News]", ("Community", "News")),
    ("category: How-to", ("How-to",)),
    ("categories: release news", ("release", "news")),               # Jekyll: a space-separated string
    ("tags: [a, b]\ncategories: [b, C]", ("a", "b", "C")),
    ("tags: a, b\ncategory: Python Tips", ("a", "b", "Python Tips")),
])
def test_categories_become_tags(config, write, front_matter, tags):
    write("t.md", f"---\ntitle: T\ndate: 2024-01-01\n{front_matter}\n---\n\nBody.\n")
    result = load_posts(config)
    _clean(result)
    assert _post(result, "t").tags == tags


@pytest.mark.parametrize(("front_matter", "author"), [
    ("author: Marcy Sutton", "Marcy Sutton"),
    ("author: [Ann, Bo]", "Ann and Bo"),
    ("author: [Ann, Bo, Cy]", "Ann, Bo and Cy"),
    ("authors: [sparrowhawk]", "sparrowhawk"),
    ("authors: lucasfernog", "lucasfernog"),
    ("authors:\n- name: Robert Sayre\n  position: VSCO\n- name: Melinda Lu", "Robert Sayre and Melinda Lu"),
    ("author: 2024", "2024"),
])
def test_author_forms(config, write, front_matter, author):
    write("a.md", f"---\ntitle: T\ndate: 2024-01-01\n{front_matter}\n---\n\nBody.\n")
    result = load_posts(config)
    _clean(result)
    assert _post(result, "a").author == author


@pytest.mark.parametrize(("front_matter", "image", "alt"), [
    ("images: [/img/a.jpg, /img/b.jpg]", f"{SITE}/img/a.jpg", None),
    ("cover:\n  image: /img/c.jpg\n  alt: A cover", f"{SITE}/img/c.jpg", "A cover"),
    ("featured_image: /img/f.jpg", f"{SITE}/img/f.jpg", None),
    ("featuredImage: https://cdn.example.com/f.jpg", "https://cdn.example.com/f.jpg", None),
    ("heroImage: '/blog-placeholder-5.jpg'", f"{SITE}/blog-placeholder-5.jpg", None),
    ("image:\n  src: /img/s.jpg\n  alt: Source", f"{SITE}/img/s.jpg", "Source"),
    ("image:\n  path: /img/p.jpg", f"{SITE}/img/p.jpg", None),
    ("image: /img/i.jpg\nimage_alt: Alt", f"{SITE}/img/i.jpg", "Alt"),
])
def test_image_keys(config, write, front_matter, image, alt):
    write("i.md", f"---\ntitle: T\ndate: 2024-01-01\n{front_matter}\n---\n\nBody.\n")
    result = load_posts(config)
    _clean(result)
    post = _post(result, "i")
    assert (post.image, post.image_alt) == (image, alt)


def test_image_under_another_key_with_a_bad_scheme_is_still_refused(config, write):
    write("bad.md", "---\ntitle: T\ndate: 2024-01-01\ncover:\n  image: 'javascript:alert(1)'\n---\n\nBody.\n")
    [line] = _lines(load_posts(config), "bad.md")
    assert line.startswith("front matter: 'image' is 'javascript:alert(1)', not an http(s) URL")


@pytest.mark.parametrize("key", ["canonicalURL", "canonical", "canonical_url", "canonicalUrl"])
def test_canonical_keys(config, write, key):
    write("c.md", f"---\ntitle: T\ndate: 2024-01-01\n{key}: https://medium.com/@rtr/c-1\n---\n\nBody.\n")
    result = load_posts(config)
    _clean(result)
    assert _post(result, "c").canonical_url == "https://medium.com/@rtr/c-1"


@pytest.mark.parametrize(("front_matter", "draft"), [
    ("published: false", True), ("published: true", False), ("status: draft", True),
    ("draft: true", True), ("draft: false", False), ("status: publish", False),
])
def test_draft_keys(config, write, front_matter, draft):
    write("d.md", f"---\ntitle: T\ndate: 2024-01-01\n{front_matter}\n---\n\nBody.\n")
    result = load_posts(config)
    _clean(result)
    assert _post(result, "d").draft is draft


def test_keys_generators_use_are_ignored_silently(config, write):
    write("k.md", """
        ---
        title: T
        date: 2024-01-01
        lastmod: 2024-02-01
        updated: 2024-02-01
        modified: 2024-02-01
        layout: post
        aliases: [/old/]
        weight: 3
        toc: true
        comments: false
        eleventyNavigation: {key: T, parent: Blog}
        permalink: /t/
        type: post
        series: [Basics]
        keywords: [a]
        showToc: true
        hidemeta: false
        math: true
        share: true
        disqus_identifier: t
        redirect_from: /x/
        ---

        Body.
        """)
    _clean(load_posts(config))


def test_keys_are_matched_ignoring_case(config, write):
    write("c.md", '+++\nTitle = "Hugo Title"\nDate = 2024-01-01\nTags = ["x"]\n+++\n\nBody.\n')
    result = load_posts(config)
    _clean(result)
    post = _post(result, "c")
    assert (post.title, post.tags) == ("Hugo Title", ("x",))


# -- a theme's key of the same name as ours ------------------------------------------------------

def test_a_themes_social_block_is_a_warning_not_an_error(config, write):
    write("s.md", "---\ntitle: T\ndate: 2024-01-01\nsocial:\n  fediverse_creator: '@me@example.social'\n"
                  "---\n\nBody.\n")
    result = load_posts(config)
    assert _post(result, "s").social == {}
    [line] = _lines(result, "s.md")
    assert line.startswith("front matter: 'social' is not the pipeline's per-network text "
                           "(it holds fediverse_creator); ignored")
    assert [p.severity for p in result.problems] == [Severity.WARNING]


def test_our_social_overrides_still_work_and_a_typo_is_still_an_error(config, write):
    write("ok.md", "---\ntitle: T\ndate: 2024-01-01\nsocial:\n  mastodon: Toot text\n---\n\nBody.\n")
    write("typo.md", "---\ntitle: T\ndate: 2024-01-01\nsocial:\n  mastodon: a\n  twiter: b\n---\n\nBody.\n")
    result = load_posts(config)
    assert _post(result, "ok").social == {"mastodon": "Toot text"}
    [line] = _lines(result, "typo.md")
    assert line.startswith("front matter: 'social.twiter' is not a known key")


# -- titles YAML reads as numbers or dates -------------------------------------------------------

@pytest.mark.parametrize(("written", "title"), [
    ("2024", "2024"), ("2020-01-01", "2020-01-01"), ("1.10", "1.10"), ("yes", "yes"), ("0x1F", "0x1F")])
def test_title_yaml_reads_as_a_number_or_date_is_text_as_written(config, write, written, title):
    write("n.md", f"---\ntitle: {written}\ndate: 2024-01-01\n---\n\nBody.\n")
    result = load_posts(config)
    _clean(result)
    assert _post(result, "n").title == title


def test_title_toml_reads_as_a_number_or_date_is_text(config, write):
    write("a.md", '+++\ntitle = 2024\ndate = 2024-01-01\n+++\n\nBody.\n')
    write("b.md", '+++\ntitle = 2020-01-01\ndate = 2024-01-01\n+++\n\nBody.\n')
    result = load_posts(config)
    _clean(result)
    assert (_post(result, "a").title, _post(result, "b").title) == ("2024", "2020-01-01")


# -- page bundles, MDX and folders ---------------------------------------------------------------

def test_page_bundle_relative_images_resolve_below_the_post(config, write):
    write("my-trip/index.md", """
        ---
        title: My trip
        date: 2024-05-01
        cover:
          image: cover.jpg
        ---

        ![The lake](lake.jpg) and [the map](files/map.pdf) and ![site](/img/x.png).
        """)
    write("my-trip/lake.jpg", raw=b"\xff\xd8\xff")
    write("my-trip/cover.jpg", raw=b"\xff\xd8\xff")
    write("my-trip/files/map.pdf", raw=b"%PDF-1.4")
    result = load_posts(config)
    _clean(result)
    post = _post(result, "my-trip")
    assert post.canonical_url == f"{SITE}/my-trip/"
    assert f'src="{SITE}/my-trip/lake.jpg"' in post.body_html
    assert f'href="{SITE}/my-trip/files/map.pdf"' in post.body_html
    assert f'src="{SITE}/img/x.png"' in post.body_html
    assert post.image == f"{SITE}/my-trip/cover.jpg"


def test_bundle_image_resolves_in_its_folder_whatever_the_permalink(project, write):
    config_path = project / "config.yaml"
    config_path.write_text(config_path.read_text(encoding="utf-8").replace(
        'permalink: "/{slug}/"', 'permalink: "/{slug}"').replace("permalink: /{slug}/", "permalink: /{slug}"),
        encoding="utf-8")
    from pipeline.config import load_config
    config = load_config(config_path)
    if config.site.permalink != "/{slug}":
        pytest.skip("the shipped config sets no permalink to change")
    write("trip/index.md", "---\ntitle: Trip\ndate: 2024-05-01\n---\n\n![x](lake.jpg)\n")
    post = _post(load_posts(config), "trip")
    assert f'src="{post.canonical_url}/lake.jpg"' in post.body_html


def test_hugo_section_page_and_bundle_resources_are_named_not_read(config, write):
    write("_index.md", "---\ntitle: Posts\n---\n\nAll the posts.\n")
    write("trip/index.md", "---\ntitle: Trip\ndate: 2024-05-01\n---\n\nBody.\n")
    write("trip/notes.md", "---\ntitle: Notes\n---\n\nA page resource.\n")
    result = load_posts(config)
    assert "trip" in {p.slug for p in result.posts}
    assert _lines(result, "_index.md", Severity.NOTE) == [
        "not read: a section page (Hugo's _index), not a post"]
    assert _lines(result, "trip/notes.md", Severity.NOTE) == [
        "not read: a resource of the page bundle trip/index.md, not a post of its own"]


def test_eleventy_folder_named_post_is_a_bundle(config, write):
    write("fourthpost/fourthpost.md", "---\ntitle: Fourth\ndate: 2018-09-30\n---\n\n![possum](possum.png)\n")
    write("fourthpost/possum.png", raw=b"\x89PNG")
    result = load_posts(config)
    _clean(result)
    post = _post(result, "fourthpost")
    assert f'src="{SITE}/fourthpost/possum.png"' in post.body_html


def test_mdx_is_read(config, write):
    write("using-mdx.mdx", """
        ---
        title: 'Using MDX'
        description: 'Lorem ipsum'
        pubDate: 'Jun 01 2024'
        heroImage: '/blog-placeholder-5.jpg'
        ---

        ## Why MDX?

        MDX is a special flavor of Markdown.
        """)
    result = load_posts(config)
    post = _post(result, "using-mdx")
    assert post.date.date() == date(2024, 6, 1)
    assert post.summary == "Lorem ipsum"
    assert "<h2>Why MDX?</h2>" in post.body_html
    assert not _lines(result, "using-mdx.mdx", Severity.ERROR)


def test_nested_folders_are_read(config, write):
    write("2024/03/deep.md", "---\ntitle: Deep\ndate: 2024-03-01\n---\n\nBody.\n")
    write("Notes/Upper.MD", "---\ntitle: Upper\ndate: 2024-03-02\n---\n\nBody.\n")
    result = load_posts(config)
    _clean(result)
    assert _post(result, "deep").path == "posts/2024/03/deep.md"
    assert _post(result, "upper").path == "posts/Notes/Upper.MD"


def test_every_file_not_read_is_named(config, write):
    write("page.njk", "---\ntitle: T\n---\n{{ content }}\n")
    write("old/post.html", "<p>Hi</p>\n")
    write("doc.adoc", "= Title\n")
    write("notes.org", "* Heading\n")
    write("LICENSE", "MIT\n")
    write("posts.json", '{"layout": "post"}\n')
    write("blog.11tydata.js", "module.exports = {};\n")
    write("data.yml", "a: 1\n")
    write("_drafts/idea.md", "---\ntitle: Idea\n---\n\nLater.\n")
    write("_drafts/more.md", "---\ntitle: More\n---\n\nLater.\n")
    write("img/photo.jpg", raw=b"\xff\xd8\xff")       # an asset: never a post, not named
    write(".DS_Store", raw=b"\x00")                   # hidden: not named
    write(".obsidian/workspace.json", "{}")           # a hidden folder: not named
    result = load_posts(config)
    assert {p.slug for p in result.posts} == SHIPPED
    named = {p.where: (p.severity, p.message) for p in result.problems}
    assert set(named) == {"posts/page.njk", "posts/old/post.html", "posts/doc.adoc", "posts/notes.org",
                          "posts/LICENSE", "posts/posts.json", "posts/blog.11tydata.js", "posts/data.yml",
                          "posts/_drafts"}
    assert all(m.startswith("not read: ") for _, m in named.values())
    assert named["posts/page.njk"] == (Severity.WARNING, "not read: a Nunjucks template (.njk) is not a "
                                       "post; the pipeline reads .md, .markdown, .mdx and .rst files")
    assert named["posts/doc.adoc"][1].startswith("not read: AsciiDoc (.adoc) is not a post")
    assert named["posts/LICENSE"][1].startswith("not read: a file without extension is not a post")
    assert named["posts/_drafts"] == (Severity.NOTE, "not read: a drafts folder (2 files); drafts are never "
                                      "sent: move a post out of it to send it")
    assert named["posts/blog.11tydata.js"][0] is Severity.NOTE
    assert named["posts/posts.json"][1].startswith("not read: Eleventy directory data")


def test_clean_body_warnings_are_warnings_of_the_post(config, write):
    # Whatever clean_body finds is a warning of that post: the post still loads.
    write("liquid.md", "---\ntitle: T\ndate: 2024-01-01\n---\n\nText {% include note.html %} more.\n")
    result = load_posts(config)
    assert "liquid" in {p.slug for p in result.posts}
    assert all(p.severity is Severity.WARNING for p in result.problems if p.where == "posts/liquid.md")


# -- the command line lists what it did not read -------------------------------------------------

def test_check_lists_files_not_read(project, write, run_cli):
    write("_index.md", "---\ntitle: Posts\n---\n\nAll the posts.\n")
    write("about.adoc", "= About\n")
    result = run_cli("check", cwd=project)
    assert result.returncode == 0, result.stderr
    assert "note: posts/_index.md: not read: a section page (Hugo's _index), not a post" in result.stderr
    assert "warning: posts/about.adoc: not read: AsciiDoc (.adoc) is not a post" in result.stderr


def test_preview_with_no_post_rendered_but_files_present_exits_1(project, write, run_cli, tmp_path):
    for path in (project / "posts").iterdir():
        path.unlink()
    write("first.adoc", "= First post\n")
    write("second.html", "<h1>Second</h1>\n")
    result = run_cli("preview", "--out", tmp_path / "out", cwd=project)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "warning: posts/first.adoc: not read: AsciiDoc (.adoc) is not a post" in result.stderr
    assert "warning: posts/second.html: not read: HTML (.html) is not a post" in result.stderr
    assert "Wrote 0 preview(s)" in result.stdout


def test_preview_of_an_empty_posts_folder_still_exits_0(project, run_cli, tmp_path):
    for path in (project / "posts").iterdir():
        path.unlink()
    result = run_cli("preview", "--out", tmp_path / "out", cwd=project)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(("name", "text"), [
    ("deep-json.md", '{"title": ' + "[" * 50_000 + "\n\nBody.\n"),
    ("deep-toml.md", "+++\ntitle = " + "[" * 50_000 + "\n+++\n\nBody.\n"),
])
def test_front_matter_nested_too_deeply_is_one_line(config, write, name, text):
    write(name, raw=text.encode())
    assert _lines(load_posts(config), name) == [
        "front matter: nested too deeply; flatten the lists and mappings"]


def test_a_dangling_link_is_one_line_not_a_crash(config, project, write):
    (project / "posts" / "gone.md").symlink_to(project / "nowhere.md")
    assert _lines(load_posts(config), "gone.md") == ["cannot be read (No such file or directory)"]


def test_a_linked_folder_is_named_not_followed(config, project, write):
    write("../elsewhere/post.md", "---\ntitle: T\ndate: 2024-01-01\n---\n\nBody.\n")
    (project / "posts" / "shared").symlink_to(project / "elsewhere", target_is_directory=True)
    result = load_posts(config)
    assert {p.slug for p in result.posts} == SHIPPED
    assert _lines(result, "shared", Severity.WARNING) == [
        "not read: a link to a folder; links are not followed: move or copy the posts here"]


def test_a_key_written_twice_in_two_cases_is_named(config, write):
    write("twice.md", "---\ntitle: First\nTitle: Second\ndate: 2024-01-01\n---\n\nBody.\n")
    result = load_posts(config)
    assert _post(result, "twice").title == "First"
    assert _lines(result, "twice.md") == ["front matter: 'Title' repeats 'title' (ignored)"]


def test_a_post_without_title_takes_the_one_its_author_wrote_elsewhere(config, write_post):
    """Eleventy's own blog keeps titles in `newstitle:` (its JavaScript data makes `title`); a
    heading or Eleventy's navigation key is a title too. Never the file name."""
    write_post("2021-02-26-news.md", "---\nnewstitle: Join the Network\n---\n\nBody.\n")
    write_post("2021-02-27-nav.md", "---\neleventyNavigation: {key: Docs Moved}\n---\n\nBody.\n")
    write_post("2021-02-28-heading.md", "---\ntags: [a]\n---\n\n# The Heading\n\nBody.\n")
    write_post("2021-03-01-none.md", "---\ntags: [a]\n---\n\nBody.\n")
    result = load_posts(config)
    titles = {p.slug: p.title for p in result.posts}
    assert titles["2021-02-26-news"] == "Join the Network"
    assert titles["2021-02-27-nav"] == "Docs Moved"
    assert titles["2021-02-28-heading"] == "The Heading"
    assert "2021-03-01-none" not in titles
    notes = [p.message for p in result.problems if "2021-02-26-news" in p.where]
    assert any(m.startswith("no `title:`; using 'Join the Network'") for m in notes)
    assert any("'title' is missing" in p.message for p in result.problems if "2021-03-01-none" in p.where)
