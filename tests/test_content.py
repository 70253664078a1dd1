"""Posts: front matter errors (one line, file + field + fix, others still load), slugs, dates,
canonical URLs, tags, sanitized HTML, and the seed post."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from pipeline.errors import PostError
from pipeline.intake.posts import load_post, load_posts, markdown_to_html
from pipeline.models import Severity
from tests.conftest import FIXTURES, SEED_SLUG

SHIPPED_SLUGS = {SEED_SLUG, "2024-03-12-your-first-infusion", "mood-journal"}
SITE = "https://www.rtrwellnesscenter.com"


def _only_problem(result, name: str) -> str:
    """The single problem's line for posts/NAME; asserts the shipped posts still loaded."""
    assert {p.slug for p in result.posts} >= SHIPPED_SLUGS
    assert [p.where for p in result.problems] == [f"posts/{name}"]
    problem = result.problems[0]
    assert problem.severity is Severity.ERROR
    line = str(problem)
    assert "\n" not in line
    return line


def _post(result, slug: str):
    return next(p for p in result.posts if p.slug == slug)


# -- bad input: one line naming file, field and fix; the other posts still load -------------

def test_missing_front_matter(config, write_post):
    write_post("bad.md", "# Just a heading\n\nNo front matter here.\n")
    line = _only_problem(load_posts(config), "bad.md")
    assert line == ("posts/bad.md: no front matter: start the file with a --- block holding "
                    "title: and date:")


def test_unparseable_yaml_front_matter_names_a_line(config, write_post):
    write_post("bad.md", """\
        ---
        title: Fine
        date: 2024-01-01
        summary: this: breaks
        ---

        Body.
        """)
    line = _only_problem(load_posts(config), "bad.md")
    assert line.startswith("posts/bad.md: line ")
    assert line.endswith("front matter is not valid YAML (mapping values are not allowed here)")


def test_unparseable_yaml_front_matter_names_the_right_line(config, write_post):
    write_post("bad.md", "---\ntitle: Fine\ndate: 2024-01-01\nsummary: this: breaks\n---\n\nBody.\n")
    line = _only_problem(load_posts(config), "bad.md")
    assert line.startswith("posts/bad.md: line 4: front matter is not valid YAML")


def test_front_matter_not_closed(config, write_post):
    write_post("bad.md", "---\ntitle: Open\ndate: 2024-01-01\n\nBody without a closing line.\n")
    line = _only_problem(load_posts(config), "bad.md")
    assert line == "posts/bad.md: front matter is not closed: add a --- line after it"


def test_missing_title(config, write_post):
    write_post("bad.md", "---\ndate: 2024-01-01\n---\n\nBody.\n")
    line = _only_problem(load_posts(config), "bad.md")
    assert line == "posts/bad.md: front matter: 'title' is missing; add `title: ...`"


@pytest.mark.parametrize("title", ['""', '"   "'])
def test_empty_title(config, write_post, title):
    write_post("bad.md", f"---\ntitle: {title}\ndate: 2024-01-01\n---\n\nBody.\n")
    line = _only_problem(load_posts(config), "bad.md")
    assert line.startswith("posts/bad.md: front matter: 'title' ")
    assert "is empty" in line


def test_impossible_date_in_quotes_is_not_a_date(config, write_post):
    write_post("bad.md", '---\ntitle: T\ndate: "2020-13-01"\n---\n\nBody.\n')
    line = _only_problem(load_posts(config), "bad.md")
    assert line == ("posts/bad.md: front matter: 'date' is '2020-13-01', not a date "
                    "(YYYY-MM-DD, or YYYY-MM-DDTHH:MM:SS+HH:MM)")


def test_garbage_date_is_not_a_date(config, write_post):
    write_post("bad.md", "---\ntitle: T\ndate: next tuesday\n---\n\nBody.\n")
    line = _only_problem(load_posts(config), "bad.md")
    assert line.startswith("posts/bad.md: front matter: 'date' is 'next tuesday', not a date")


def test_impossible_unquoted_date_is_not_a_date(config, write_post):
    write_post("bad.md", "---\ntitle: T\ndate: 2020-13-01\n---\n\nBody.\n")
    line = _only_problem(load_posts(config), "bad.md")
    assert line.startswith("posts/bad.md: ")
    assert "'date'" in line
    assert "not a date" in line


@pytest.mark.parametrize(("front_matter", "shown"), [
    ("date: 0001-01-01", "'date' is 0001-01-01"),
    ('date: "0001-01-01T00:00:00+05:00"', "'date' is 0001-01-01T00:00:00+05:00"),
    ("date: 9999-12-31T23:59:00-05:00", "'date' is 9999-12-31T23:59:00-05:00"),
    ("date: 2300-01-01", "'date' is 2300-01-01"),
    ("date: 1969-12-31T23:00:00Z", "'date' is 1969-12-31T23:00:00Z"),
    ("date: 99999-01-01", "'date' is 99999-01-01"),         # a year `datetime` cannot hold
    ("date: 0000-01-01", "'date' is 0000-01-01"),
    ("date: !!timestamp 0001-01-01", "'date' is 0001-01-01"),   # YAML builds a date object
    ("date: !!timestamp 0001-01-01T00:00:00+05:00", "'date' is 0001-01-01T00:00:00+05:00"),
    ("date: 2024-01-01\npublish_at: 0001-01-01T00:00:00+05:00",
     "'publish_at' is 0001-01-01T00:00:00+05:00"),
    ("date: 2024-01-01\npublish_at: 99999-01-01T09:00:00-05:00",
     "'publish_at' is 99999-01-01T09:00:00-05:00"),
])
def test_date_outside_1970_to_2200_is_one_line_naming_the_field(config, write_post, front_matter, shown):
    write_post("bad.md", f"---\ntitle: T\n{front_matter}\n---\n\nBody.\n")
    line = _only_problem(load_posts(config), "bad.md")
    assert line == f"posts/bad.md: front matter: {shown}, outside 1970-2200"


def test_missing_date(config, write_post):
    write_post("bad.md", "---\ntitle: T\n---\n\nBody.\n")
    line = _only_problem(load_posts(config), "bad.md")
    assert line == ("posts/bad.md: front matter: 'date' is missing; add `date: ...` "
                    "(or start the file name with it: 2024-03-12-name.md)")


def test_missing_date_is_an_error_naming_date(config, write_post):
    write_post("bad.md", "---\ntitle: T\n---\n\nBody.\n")
    line = _only_problem(load_posts(config), "bad.md")
    assert line.startswith("posts/bad.md: front matter: 'date")


def test_unknown_field_is_a_warning_and_post_loads(config, write_post):
    # `layout:` (Jekyll's) is known and ignored silently; a key no generator uses is a warning.
    write_post("extra.md", "---\ntitle: T\ndate: 2024-01-01\nlayout: post\ncolour: blue\n---\n\nBody.\n")
    result = load_posts(config)
    assert "extra" in {p.slug for p in result.posts}
    assert {p.slug for p in result.posts} >= SHIPPED_SLUGS
    [problem] = result.problems
    assert problem.severity is Severity.WARNING
    assert str(problem) == "posts/extra.md: front matter: unknown field 'colour' (ignored)"


def test_non_utf8_file_names_the_line(config, write_post):
    write_post("latin1.md", raw=b"---\ntitle: caf\xe9\ndate: 2024-01-01\n---\n\nBody.\n")
    line = _only_problem(load_posts(config), "latin1.md")
    assert line == ("posts/latin1.md: line 2: not UTF-8 text (byte 0xE9); save the file as UTF-8")


def test_non_utf8_in_body_names_its_line(config, write_post):
    write_post("latin1.md", raw=b"---\ntitle: T\ndate: 2024-01-01\n---\n\nfirst\nna\xefve\n")
    line = _only_problem(load_posts(config), "latin1.md")
    assert line.startswith("posts/latin1.md: line 7: not UTF-8 text (byte 0xEF)")


def test_empty_body(config, write_post):
    write_post("empty.md", "---\ntitle: T\ndate: 2024-01-01\n---\n\n   \n")
    line = _only_problem(load_posts(config), "empty.md")
    assert line == "posts/empty.md: empty body: write the article below the front matter"


def test_duplicate_slug_keeps_the_first_and_names_it(config, write_post):
    write_post("a.md", "---\ntitle: A\ndate: 2024-01-01\nslug: same\n---\n\nA.\n")
    write_post("b.md", "---\ntitle: B\ndate: 2024-01-02\nslug: same\n---\n\nB.\n")
    result = load_posts(config)
    line = _only_problem(result, "b.md")
    assert line == "posts/b.md: slug 'same' is already used by posts/a.md; set a different `slug:`"
    assert _post(result, "same").title == "A"


def test_several_bad_posts_are_each_reported(config, write_post):
    write_post("a-bad.md", "---\ndate: 2024-01-01\n---\n\nBody.\n")
    write_post("b-bad.md", "no front matter\n")
    result = load_posts(config)
    assert [p.where for p in result.problems] == ["posts/a-bad.md", "posts/b-bad.md"]
    assert {p.slug for p in result.posts} == SHIPPED_SLUGS


def test_load_post_raises_post_error_with_path_and_reason(config, write_post):
    path = write_post("bad.md", "---\ndate: 2024-01-01\n---\n\nBody.\n")
    with pytest.raises(PostError) as info:
        load_post(path, config, display="posts/bad.md")
    assert info.value.path == "posts/bad.md"
    assert str(info.value) == "posts/bad.md: front matter: 'title' is missing; add `title: ...`"


# -- good input ---------------------------------------------------------------------------------

def test_slug_defaults_to_slugified_file_name(config, write_post):
    write_post("Hello World.md", "---\ntitle: T\ndate: 2024-01-01\n---\n\nBody.\n")
    post = _post(load_posts(config), "hello-world")
    assert post.path == "posts/Hello World.md"


def test_slug_override(config, write_post):
    write_post("2024-01-01-long-file-name.md",
               "---\ntitle: T\ndate: 2024-01-01\nslug: Short Name\n---\n\nBody.\n")
    slugs = {p.slug for p in load_posts(config).posts}
    assert "short-name" in slugs
    assert "2024-01-01-long-file-name" not in slugs


def test_canonical_url_defaults_to_site_url_and_permalink(config, write_post):
    write_post("hello.md", "---\ntitle: T\ndate: 2024-01-01\n---\n\nBody.\n")
    assert _post(load_posts(config), "hello").canonical_url == f"{SITE}/hello/"


def test_explicit_canonical_url_is_kept(config, write_post):
    write_post("hello.md", "---\ntitle: T\ndate: 2024-01-01\n"
                           "canonical_url: https://medium.com/@rtr/hello-123\n---\n\nBody.\n")
    assert _post(load_posts(config), "hello").canonical_url == "https://medium.com/@rtr/hello-123"


@pytest.mark.parametrize("field", ["image", "canonical_url"])
@pytest.mark.parametrize("url", [
    "javascript:alert(1)", '" JaVaScRiPt:alert(1)"', '"java\\tscript:alert(1)"', "vbscript:msgbox(1)",
    "data:image/png;base64,iVBORw0KGgo=", '"data:text/html,<script>alert(1)</script>"',
    "file:///etc/passwd", "ftp://example.com/a.jpg", "mailto:team@example.com"])
def test_front_matter_url_with_another_scheme_is_one_line_naming_the_field(config, write_post, field,
                                                                           url):
    write_post("bad.md", f"---\ntitle: T\ndate: 2024-01-01\n{field}: {url}\n---\n\nBody.\n")
    line = _only_problem(load_posts(config), "bad.md")
    assert line.startswith(f"posts/bad.md: front matter: {field!r} is ")
    assert "http(s) URL" in line


def test_front_matter_image_on_the_site_or_elsewhere_is_an_absolute_http_url(config, write_post):
    write_post("a.md", "---\ntitle: T\ndate: 2024-01-01\nimage: /images/a.jpg\n---\n\nBody.\n")
    write_post("b.md", "---\ntitle: T\ndate: 2024-01-01\nimage: //cdn.example.com/b.jpg\n---\n\nB.\n")
    write_post("c.md", "---\ntitle: T\ndate: 2024-01-01\nimage: HTTPS://cdn.example.com/c.jpg\n---\n\nC.\n")
    result = load_posts(config)
    assert result.problems == ()
    assert _post(result, "a").image == f"{SITE}/images/a.jpg"
    assert _post(result, "b").image == "https://cdn.example.com/b.jpg"
    assert _post(result, "c").image == "https://cdn.example.com/c.jpg"


def test_date_only_is_midnight_in_config_timezone(config, write_post):
    write_post("d.md", "---\ntitle: T\ndate: 2024-01-15\n---\n\nBody.\n")
    when = _post(load_posts(config), "d").date
    assert when.tzinfo is not None
    assert str(when.tzinfo) == "America/New_York"
    assert when.replace(tzinfo=None) == datetime(2024, 1, 15, 0, 0)
    assert when.astimezone(UTC) == datetime(2024, 1, 15, 5, 0, tzinfo=UTC)


def test_datetime_with_offset_is_kept(config, write_post):
    write_post("d.md", "---\ntitle: T\ndate: 2021-06-01T10:00:00+02:00\n---\n\nBody.\n")
    when = _post(load_posts(config), "d").date
    assert when == datetime(2021, 6, 1, 10, 0, tzinfo=timezone(timedelta(hours=2)))
    assert when.utcoffset() == timedelta(hours=2)


def test_quoted_datetime_with_offset_is_kept(config, write_post):
    write_post("d.md", '---\ntitle: T\ndate: "2021-06-01T10:00:00+02:00"\n---\n\nBody.\n')
    assert _post(load_posts(config), "d").date.utcoffset() == timedelta(hours=2)


def test_jekyll_style_datetime_is_parsed(config, write_post):
    write_post("d.md", "---\ntitle: T\ndate: 2013-05-06 12:00:00 -0500\n---\n\nBody.\n")
    when = _post(load_posts(config), "d").date
    assert when == datetime(2013, 5, 6, 17, 0, tzinfo=UTC)
    assert when.utcoffset() == timedelta(hours=-5)


def test_naive_datetime_gets_config_timezone(config, write_post):
    write_post("d.md", "---\ntitle: T\ndate: 2021-07-01 09:30:00\n---\n\nBody.\n")
    when = _post(load_posts(config), "d").date
    assert str(when.tzinfo) == "America/New_York"
    assert when.utcoffset() == timedelta(hours=-4)
    assert (when.hour, when.minute) == (9, 30)


@pytest.mark.parametrize("tags", ["[ketamine, first visit, care]", '"ketamine, first visit ,care"'])
def test_tags_as_list_or_comma_string(config, write_post, tags):
    write_post("t.md", f"---\ntitle: T\ndate: 2024-01-01\ntags: {tags}\n---\n\nBody.\n")
    assert _post(load_posts(config), "t").tags == ("ketamine", "first visit", "care")


def test_markdown_suffix_is_loaded(config, write_post):
    write_post("long-suffix.markdown", "---\ntitle: T\ndate: 2024-01-01\n---\n\nBody.\n")
    assert "long-suffix" in {p.slug for p in load_posts(config).posts}


@pytest.mark.parametrize("name", ["notes.txt", "draft.md.bak", "README", "x.html"])
def test_other_suffixes_are_not_read_and_named(config, write_post, name):
    write_post(name, "---\ntitle: T\ndate: 2024-01-01\n---\n\nBody.\n")
    result = load_posts(config)
    assert {p.slug for p in result.posts} == SHIPPED_SLUGS
    [problem] = result.problems
    assert problem.where == f"posts/{name}"
    assert problem.severity is Severity.WARNING
    assert problem.message.startswith("not read: ")
    assert problem.message.endswith("is not a post; the pipeline reads .md, .markdown, .mdx and .rst files")


def test_multiline_title_is_collapsed_to_one_line(config, write_post):
    write_post("m.md", """\
        ---
        title: |
          A title that
          spans   two lines
        date: 2024-01-01
        ---

        Body.
        """)
    assert _post(load_posts(config), "m").title == "A title that spans two lines"


def test_posts_are_sorted_by_date(config, write_post):
    write_post("early.md", "---\ntitle: T\ndate: 2001-01-01\n---\n\nBody.\n")
    slugs = [p.slug for p in load_posts(config).posts]
    assert slugs == ["early", SEED_SLUG, "2024-03-12-your-first-infusion", "mood-journal"]


# -- sanitization -------------------------------------------------------------------------------

BASE = "https://www.rtrwellnesscenter.com/hello/"


def test_script_is_removed():
    html = markdown_to_html("Hi.\n\n<script>alert('x')</script>\n\nBye.\n", base=BASE)
    assert "<script" not in html
    assert "alert" not in html
    assert "<p>Hi.</p>" in html
    assert "<p>Bye.</p>" in html


def test_event_handler_attribute_is_removed():
    html = markdown_to_html('<p onclick="steal()">Click</p>\n', base=BASE)
    assert "onclick" not in html
    assert "steal" not in html
    assert "Click" in html


def test_javascript_href_is_removed():
    html = markdown_to_html('<a href="javascript:alert(1)">x</a> and <a href="JaVaScRiPt:alert(2)">y</a>\n',
                            base=BASE)
    assert "javascript" not in html.lower()
    assert "<a>x</a>" in html
    assert "<a>y</a>" in html


@pytest.mark.parametrize("html", [
    '<a href="javascript:alert(1)">x</a>', '<a href=" JaVaScRiPt:alert(1)">x</a>',
    '<a href="java&#x09;script:alert(1)">x</a>', '<a href="&#106;avascript:alert(1)">x</a>',
    '<a href="\u00a0javascript:alert(1)">x</a>', '<a href="\u2003JaVaScRiPt:alert(1)">x</a>',
    '<a href="&nbsp;javascript:alert(1)">x</a>', '<a href="vbscript:msgbox(1)">x</a>',
    '<img src="data:image/png;base64,AAAA" alt="x">', '<img src="\u00a0data:image/png;base64,AAAA" alt="x">',
    '<a href="file:///etc/passwd">x</a>', '<a href="jav\nascript:alert(1)">x</a>',
    "[x](javascript:alert(1))", "[x](<\u00a0javascript:alert(1)>)", "![x](data:image/png;base64,AAAA)",
])
def test_hostile_href_or_src_never_survives(html):
    out = markdown_to_html(html + "\n", base=BASE)
    for scheme in ("javascript:", "vbscript:", "data:", "file:"):
        assert f'="{scheme}' not in out.lower().replace("&nbsp;", "").replace("\u00a0", "")
    assert all(u.startswith(("https://", "http://", "mailto:"))
               for u in re.findall(r'(?:href|src)="([^"]*)"', out)), out


def test_protocol_relative_link_becomes_https():
    html = markdown_to_html('<a href="//example.org/x">x</a>\n', base=BASE)
    assert 'href="https://example.org/x"' in html


def test_javascript_markdown_link_is_not_a_link():
    html = markdown_to_html("[x](javascript:alert(1))\n", base=BASE)
    assert "href" not in html


def test_relative_links_and_images_are_made_absolute():
    html = markdown_to_html("[next](next/) [price](/pricing/) ![photo](/images/a.jpg) ![b](b.png)\n",
                            base=BASE)
    assert 'href="https://www.rtrwellnesscenter.com/hello/next/"' in html
    assert 'href="https://www.rtrwellnesscenter.com/pricing/"' in html
    assert 'src="https://www.rtrwellnesscenter.com/images/a.jpg"' in html
    assert 'src="https://www.rtrwellnesscenter.com/hello/b.png"' in html


def test_absolute_and_mailto_links_are_kept():
    html = markdown_to_html("[a](https://example.org/x?y=1) [m](mailto:team@example.org)\n", base=BASE)
    assert 'href="https://example.org/x?y=1"' in html
    assert 'href="mailto:team@example.org"' in html


def test_liquid_tags_survive_as_text():
    html = markdown_to_html("{% highlight ruby %}\n\nSee {{ site.url }} for more.\n\n{% endhighlight %}\n",
                            base=BASE)
    assert "{% highlight ruby %}" in html
    assert "{{ site.url }}" in html
    assert "{% endhighlight %}" in html


def test_post_body_html_is_sanitized_and_absolute(config, write_post):
    write_post("s.md", "---\ntitle: T\ndate: 2024-01-01\n---\n\n"
                       "<script>x()</script>\n\nSee [pricing](/pricing/).\n")
    post = _post(load_posts(config), "s")
    assert "<script" not in post.body_html
    assert 'href="https://www.rtrwellnesscenter.com/pricing/"' in post.body_html


# -- the seed post ------------------------------------------------------------------------------

def _seed_paragraphs() -> list[str]:
    blocks = [b.strip() for b in (FIXTURES / "seed" / "ketamine-article.txt").read_text(
        encoding="utf-8").split("\n\n")]
    start = next(i for i, b in enumerate(blocks) if "min read" in b) + 1
    end = blocks.index("SOURCES")
    return blocks[start:end]


def test_seed_post_front_matter(config):
    post = _post(load_posts(config), SEED_SLUG)
    assert post.title == "Ketamine’s Potential Ability to Heal Neurological Damage"
    assert post.author == "RTR Wellness Center"
    assert post.date.date() == date(2020, 9, 1)
    assert post.canonical_url == "https://www.rtrwellnesscenter.com"
    assert post.path == f"posts/{SEED_SLUG}.md"


def test_seed_post_has_every_paragraph_of_the_article(config):
    post = _post(load_posts(config), SEED_SLUG)
    paragraphs = _seed_paragraphs()
    assert len(paragraphs) == 4
    for paragraph in paragraphs:
        assert paragraph in post.body_markdown


def test_seed_post_links_both_sources(config):
    post = _post(load_posts(config), SEED_SLUG)
    for url in ("https://www.ncbi.nlm.nih.gov/pmc/articles/PMC4810965/",
                "https://www.mayoclinic.org/diseases-conditions/depression/symptoms-causes/syc-20356007"):
        assert f'<a href="{url}">{url}</a>' in post.body_html


def test_shipped_posts_load_without_problems(config):
    result = load_posts(config)
    assert {p.slug for p in result.posts} == SHIPPED_SLUGS
    assert result.problems == ()


# -- every problem of a post at once (#12) ------------------------------------------------------

def test_every_problem_of_a_post_is_reported_in_one_pass(config, write_post, run_cli, project):
    write_post("many.md", """
        ---
        date: 2020-13-01
        publish_at: 0001-01-01
        tags: {not: a list}
        image: "javascript:alert(1)"
        colour: blue-ish
        ---
        """)
    result = load_posts(config)
    messages = [p.message for p in result.problems if p.where == "posts/many.md"]
    assert len(messages) == 5, messages
    assert any("'date' is '2020-13-01', not a date" in m for m in messages)
    assert any("'publish_at' is 0001-01-01, outside 1970-2200" in m for m in messages)
    assert any("'title' is missing" in m for m in messages)
    assert any(m.startswith("front matter: 'tags'") for m in messages)
    assert any(m.startswith("empty body") for m in messages)
    cli = run_cli("check", cwd=project)
    assert cli.returncode == 1 and "Traceback" not in cli.stderr
    assert len([line for line in cli.stderr.splitlines() if "posts/many.md" in line]) == 5


def test_every_url_problem_of_a_post_is_reported_in_one_pass(config, write_post):
    write_post("urls.md", """
        ---
        title: URLs
        date: 2024-01-01
        canonical_url: "ftp://example.com/a"
        image: "data:image/png;base64,AAAA"
        ---

        Body.
        """)
    messages = [p.message for p in load_posts(config).problems if p.where == "posts/urls.md"]
    assert [m.split(" is ")[0] for m in messages] == ["front matter: 'canonical_url'",
                                                      "front matter: 'image'"]
