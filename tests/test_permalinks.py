"""Canonical URLs that match the live site (#13): each generator's own config read from a small
repository written here, and each post's URL derived as that generator derives it.

The expected URLs follow each generator's documented behaviour and its source (cited per test).
"""

from __future__ import annotations

import os
import shutil
import textwrap
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import Config, load_config
from pipeline.errors import ConfigError, PipelineError
from pipeline.intake.generators import hugo
from pipeline.intake.permalinks import PermalinkError, derive, post_url, site_config
from pipeline.intake.slugs import github_slug, hugo_sanitize, jekyll_slugify, pelican_slugify

D = datetime(2024, 3, 5, 9, 30, tzinfo=UTC)


def write(root: Path, files: Mapping[str, str]) -> None:
    """Write each file (text dedented) under `root`."""
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")


@pytest.fixture
def blog(tmp_path: Path) -> Callable[..., Config]:
    """blog(generator, {file: text}, **site keys) -> the Config of a project whose config.yaml
    (in tmp/project) points at the blog repository written to tmp/blog."""

    def make(generator: str, files: Mapping[str, str], *, posts: str = "../blog",
             url: str = "https://www.example.com", **site: str) -> Config:
        write(tmp_path / "blog", files)
        project = tmp_path / "project"
        project.mkdir(exist_ok=True)
        extra = "".join(f"  {k}: {v}\n" for k, v in site.items())
        (project / "config.yaml").write_text(
            f"site:\n  name: Blog\n  url: {url}\n  generator: {generator}\n  root: ../blog\n{extra}"
            f"posts: {posts}\n", encoding="utf-8")
        return load_config(project / "config.yaml")

    return make


def url(config: Config, rel: str, meta: Mapping[str, Any] | None = None, *, date: datetime = D,
        categories: tuple[str, ...] = ()) -> str:
    """The canonical URL of the blog's file `rel` (the post's slug argument plays no part)."""
    path = config.path(config.site.root) / rel
    return post_url(config, slug="ignored", date=date, path=path, categories=categories, meta=meta or {})


# -- generator none: today's behaviour --------------------------------------------------------------

def test_generator_none_is_site_url_plus_permalink(config: Config) -> None:
    assert config.site.generator == "none"
    got = post_url(config, slug="my-post", date=D, path=config.path("posts/x.md"), meta={"title": "X"})
    assert got == "https://www.rtrwellnesscenter.com/my-post/"


# -- Hugo -----------------------------------------------------------------------------------------

HUGO_DEFAULT = {
    "hugo.toml": """
        baseURL = "https://example.org/"
        title = "Blog"
    """,
}


def test_hugo_default_path_is_section_and_slug_or_file_name(blog: Callable[..., Config]) -> None:
    """No [permalinks]: the content path, the file name replaced by `slug:`, a bundle named by
    its folder, lower-cased (page_paths.go); `url:` is used as written."""
    config = blog("hugo", HUGO_DEFAULT, posts="../blog/content")
    assert url(config, "content/posts/first-post.md", {"title": "First Post"}) == \
        "https://example.org/posts/first-post/"
    assert url(config, "content/posts/second.md", {"title": "Second", "slug": "Custom Slug"}) == \
        "https://example.org/posts/custom-slug/"
    assert url(config, "content/posts/Trip-Photos/index.md", {"title": "Trip"}) == \
        "https://example.org/posts/trip-photos/"
    assert url(config, "content/posts/moved.md", {"title": "Moved", "URL": "/archive/Old-Name/"}) == \
        "https://example.org/archive/Old-Name/"


def test_hugo_permalinks_by_section(blog: Callable[..., Config]) -> None:
    """`:slug` is the slug, else the title urlized; `:slugorfilename` the slug, else the file name
    (a bundle's folder); `:monthname` lower-cased like the whole path (permalinks.go)."""
    config = blog("hugo", {"hugo.toml": """
        baseURL = "https://example.org/blog/"
        [permalinks]
          posts = "/:year/:month/:slug/"
          notes = "/:section/:slugorfilename/"
          news = "/:year/:monthname/:day/:filename/"
    """}, posts="../blog/content")
    assert url(config, "content/posts/hello.md", {"title": "Hello, World! It's Me"}) == \
        "https://example.org/blog/2024/03/hello-world-its-me/"
    assert url(config, "content/posts/other.md", {"title": "Other", "slug": "my-slug"}) == \
        "https://example.org/blog/2024/03/my-slug/"
    assert url(config, "content/notes/trip-notes/index.md", {"title": "Notes of a trip"}) == \
        "https://example.org/blog/notes/trip-notes/"
    assert url(config, "content/news/launch.md", {"title": "Launch"}) == \
        "https://example.org/blog/2024/march/05/launch/"


def test_hugo_config_dir_production_wins_and_languages(blog: Callable[..., Config]) -> None:
    """config/_default/ then config/production/ (what `hugo` builds with); a language's
    contentDir, the default language at the root, another one under /<lang>/."""
    config = blog("hugo", {
        "config/_default/hugo.toml": """
            baseURL = "http://localhost:1313/"
            defaultContentLanguage = "en"
            [languages.en]
              contentDir = "content/en"
            [languages.fr]
              contentDir = "content/fr"
        """,
        "config/_default/permalinks.yaml": "blog: /blog/:slug/\n",
        "config/production/hugo.toml": 'baseURL = "https://grpc.example.io/"\n',
    }, posts="../blog/content")
    assert url(config, "content/en/blog/deadlines.md", {"title": "gRPC and Deadlines"}) == \
        "https://grpc.example.io/blog/grpc-and-deadlines/"
    assert url(config, "content/fr/blog/delais.md", {"title": "Délais", "slug": "délais"}) == \
        "https://grpc.example.io/fr/blog/d%C3%A9lais/"


def test_hugo_patterns_expand_as_hugo_does() -> None:
    page = hugo._Page(date=datetime(2024, 3, 5, 14, 7, tzinfo=UTC), title="Vim (text editor)", slug=None,
                      base="vim", sections=("posts", "2024"), lower=True)
    assert hugo.expand("/:sections[1:]/:2006-:01/:title/", page) == "/2024/2024-03/vim-text-editor/"
    assert hugo.expand("/:weekdayname/:yearday/:section/:Jan\\:x/", page) == "/Tuesday/65/posts/Mar:x/"
    with pytest.raises(ValueError, match=r"':nope' in '/:nope/' is not a permalink attribute Hugo knows"):
        hugo.check_pattern("/:nope/")


# -- Jekyll ---------------------------------------------------------------------------------------

def test_jekyll_pretty_with_categories_and_baseurl(blog: Callable[..., Config]) -> None:
    """pretty = /:categories/:year/:month/:day/:title/; categories lower-cased (url_drop.rb), the
    folders above _posts/ among them; `:title` keeps the file name's case; `category:` is one
    category even with a space (escaped); `url` + `baseurl` before it."""
    config = blog("jekyll", {"_config.yml": """
        url: https://jekyll.example.com
        baseurl: /blog
        permalink: pretty
    """})
    assert url(config, "_posts/2024-03-05-Hello-World.md", {"title": "Hi", "categories": ["Tech", "News"]}) \
        == "https://jekyll.example.com/blog/tech/news/2024/03/05/Hello-World/"
    assert url(config, "travel/_posts/2023-12-31-year-end.md", {"title": "Y", "category": "Life Stories"},
               date=datetime(2023, 12, 31, tzinfo=UTC)) == \
        "https://jekyll.example.com/blog/travel/life%20stories/2023/12/31/year-end/"
    # A `categories:` string is split on spaces; a `slug:` replaces the file name's.
    assert url(config, "_posts/2024-03-05-x.md", {"categories": "Ruby Release", "slug": "Big News"}) == \
        "https://jekyll.example.com/blog/ruby/release/2024/03/05/Big-News/"


def test_jekyll_date_style_html_and_front_matter_permalink(blog: Callable[..., Config]) -> None:
    """The default style `date` ends in .html; `permalink:` in front matter wins (its placeholders
    filled too); no `url` in _config.yml: site.url is the base."""
    config = blog("jekyll", {"_config.yml": "title: Blog\n"})
    assert url(config, "_posts/2019-07-04-independence.md", {"title": "Fourth"},
               date=datetime(2019, 7, 4, tzinfo=UTC)) == "https://www.example.com/2019/07/04/independence.html"
    assert url(config, "_posts/2019-07-05-about.md", {"permalink": "/about-this/"}) == \
        "https://www.example.com/about-this/"
    assert url(config, "_posts/2019-07-05-a.md", {"permalink": "/:year/:slug/", "slug": "Other Name"}) == \
        "https://www.example.com/2024/other-name/"


def test_jekyll_defaults_collections_and_timezone(blog: Callable[..., Config]) -> None:
    """`defaults:` scoped to posts set the permalink (brew.sh does); `collections.posts.permalink`
    otherwise; a date with an offset is read in `timezone` (Time#localtime)."""
    config = blog("jekyll", {"_config.yml": """
        url: https://brew.example.sh
        permalink: :title
        timezone: UTC
        collections:
          posts:
            permalink: /news/:year/:title/
        defaults:
          - scope: {path: "", type: posts}
            values: {permalink: ":year/:month/:day/:title/"}
          - scope: {path: old, type: posts}
            values: {permalink: "/archive/:title:output_ext"}
    """})
    assert url(config, "_posts/2016-09-21-homebrew-1.0.0.md", {"title": "Homebrew 1.0.0"},
               date=datetime(2016, 9, 21, tzinfo=UTC)) == "https://brew.example.sh/2016/09/21/homebrew-1.0.0/"
    assert url(config, "old/_posts/2010-01-01-first.md", {}) == "https://brew.example.sh/archive/first.html"
    late = datetime(2024, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1)))
    assert url(config, "_posts/2024-01-01-new-year.md", {"date": "2024-01-01 00:30:00 +0100"}, date=late) == \
        "https://brew.example.sh/2023/12/31/new-year/"


def test_jekyll_post_outside_posts_folder_is_a_post_problem(blog: Callable[..., Config]) -> None:
    config = blog("jekyll", {"_config.yml": "title: Blog\n"})
    with pytest.raises(PermalinkError, match=r"canonical URL \(Jekyll\): Jekyll publishes only "
                                             r"_posts/YYYY-MM-DD-title.md files"):
        url(config, "_posts/no-date.md", {"title": "x"})


# -- Pelican --------------------------------------------------------------------------------------

PELICANCONF = """
    AUTHOR = 'Ann Author'
    SITENAME = 'Blog'
    SITEURL = ''
    PATH = 'content'
    TIMEZONE = 'Europe/Paris'
    ARTICLE_URL = '{date:%Y}/{slug}/'
    ARTICLE_SAVE_AS = ARTICLE_URL + 'index.html'
"""
PUBLISHCONF = """
    import os
    import sys
    sys.path.append(os.curdir)
    from pelicanconf import *

    SITEURL = 'https://blog.example.net'
    RELATIVE_URLS = False
"""


def test_pelican_article_url_with_date_and_siteurl_from_publishconf(blog: Callable[..., Config]) -> None:
    """ARTICLE_URL filled like str.format with the date; the slug is the title slugified as
    Pelican's utils.slugify does (ASCII-fied, punctuation dropped), unless `Slug:`; SITEURL from
    publishconf.py."""
    config = blog("pelican", {"pelicanconf.py": PELICANCONF, "publishconf.py": PUBLISHCONF},
                  posts="../blog/content")
    assert url(config, "content/python/first.md", {"Title": "Ünïcode & Python: A Guide!"},
               date=datetime(2020, 5, 1, tzinfo=UTC)) == "https://blog.example.net/2020/unicode-python-a-guide/"
    assert url(config, "content/python/custom.md", {"Title": "Whatever", "Slug": "my-custom"}) == \
        "https://blog.example.net/2024/my-custom/"
    assert url(config, "content/python/moved.md", {"title": "Moved", "url": "old/moved.html"}) == \
        "https://blog.example.net/old/moved.html"


def test_pelican_category_author_lang_and_filename_metadata(blog: Callable[..., Config]) -> None:
    """{category} is the category's slug: the metadata's, else the folder (USE_FOLDER_AS_CATEGORY),
    else DEFAULT_CATEGORY; {author} the author's slug; another language uses ARTICLE_LANG_URL;
    FILENAME_METADATA may give the slug (mit-plv/blog's does)."""
    config = blog("pelican", {"pelicanconf.py": """
        SITEURL = 'https://pelican.example.org'
        PATH = 'content'
        AUTHOR = 'Ann Author'
        ARTICLE_URL = '{category}/{author}/{slug}.html'
        ARTICLE_LANG_URL = '{lang}/{slug}.html'
        FILENAME_METADATA = r'(?P<date>\\d{4}-\\d{2}-\\d{2})_(?P<slug>.*)'
    """}, posts="../blog/content")
    assert url(config, "content/Code Notes/tips.md", {"title": "Tips"}) == \
        "https://pelican.example.org/code-notes/ann-author/tips.html"
    meta = {"title": "X", "category": "Python 3", "author": "Bo B"}
    assert url(config, "content/Code Notes/x.md", meta) == \
        "https://pelican.example.org/python-3/bo-b/x.html"
    assert url(config, "content/top.md", {"title": "Top"}) == "https://pelican.example.org/misc/ann-author/top.html"
    assert url(config, "content/2019-01-02_proof-engineering.md", {"title": "Proofs"}) == \
        "https://pelican.example.org/misc/ann-author/proof-engineering.html"
    assert url(config, "content/a.md", {"title": "Bonjour", "lang": "fr"}) == \
        "https://pelican.example.org/fr/bonjour.html"


def test_pelican_missing_metadata_field_is_a_post_problem(blog: Callable[..., Config]) -> None:
    config = blog("pelican", {"pelicanconf.py": "PATH = 'content'\nARTICLE_URL = '{series}/{slug}/'\n"},
                  posts="../blog/content")
    assert url(config, "content/a.md", {"title": "A", "series": "Intro"}) == "https://www.example.com/Intro/a/"
    with pytest.raises(PermalinkError, match=r"ARTICLE_URL '\{series\}/\{slug\}/' uses \{series\}, which "
                                             r"this post's metadata does not have"):
        url(config, "content/b.md", {"title": "B"})


def test_pelicanconf_is_read_never_run(blog: Callable[..., Config], tmp_path: Path) -> None:
    """Code in pelicanconf.py must not run: only literal assignments are read."""
    marker = tmp_path / "ran"
    config = blog("pelican", {"pelicanconf.py": f"""
        import os
        os.system('touch {marker}')
        open({str(marker)!r}, 'w').write('ran')
        SITEURL = __import__('pathlib').Path({str(marker)!r}).write_text('ran') and 'https://evil.example'
        HOST = 'blog.example.org'
        SITEURL2 = f'https://{{HOST}}'
        SITEURL = SITEURL2 + ''
        ARTICLE_URL = 'posts/{{slug}}.html'
        if True:
            ARTICLE_URL = 'never/{{slug}}.html'
    """})
    assert url(config, "a.md", {"title": "Safe"}) == "https://blog.example.org/posts/safe.html"
    assert not marker.exists()


def test_pelican_computed_siteurl_falls_back_to_site_url_with_a_note(blog: Callable[..., Config]) -> None:
    config = blog("pelican", {"pelicanconf.py": "import os\nSITEURL = os.getenv('SITE_URL', default='')\n"})
    assert url(config, "a.md", {"title": "A"}) == "https://www.example.com/a.html"
    assert site_config(config).notes == (
        "../blog/pelicanconf.py:2: SITEURL is computed (os.getenv('SITE_URL', default='')), not read; "
        "using site.url",)


# -- Eleventy and Astro ---------------------------------------------------------------------------

def test_eleventy_url_is_the_path_under_the_input_folder(blog: Callable[..., Config]) -> None:
    """TemplatePermalink.js: `x.md` -> /x/, `index.md` and `post/post.md` -> their folder, the date
    in a file name kept; a literal `permalink:` wins; a template one is not run (a note)."""
    config = blog("eleventy", {"eleventy.config.js": """
        export default function (eleventyConfig) {
          return { dir: { input: "src", includes: "../_includes", output: "_site" } };
        }
    """}, posts="../blog/src")
    assert url(config, "src/posts/my-post.md") == "https://www.example.com/posts/my-post/"
    assert url(config, "src/blog/2024-10-02-eleventy-v3.md") == \
        "https://www.example.com/blog/2024-10-02-eleventy-v3/"
    assert url(config, "src/blog/fourthpost/fourthpost.md") == "https://www.example.com/blog/fourthpost/"
    assert url(config, "src/blog/index.md") == "https://www.example.com/blog/"
    assert url(config, "src/posts/x.md", {"permalink": "/custom/url/index.html"}) == \
        "https://www.example.com/custom/url/"
    derived = derive(config, slug="x", date=D, path=config.path("../blog/src/posts/t.md"),
                     meta={"permalink": "/blog/{{ page.fileSlug }}/"})
    assert derived.url == "https://www.example.com/posts/t/"
    assert derived.notes == ("permalink '/blog/{{ page.fileSlug }}/' is a template, which is not run here; "
                             "the URL is derived from the file path: check it, or set canonical_url:",)
    with pytest.raises(PermalinkError, match="permalink: false: Eleventy writes no page"):
        url(config, "src/posts/hidden.md", {"permalink": False})


def test_post_url_logs_a_doubtful_url_as_a_warning(blog: Callable[..., Config],
                                                   caplog: pytest.LogCaptureFixture) -> None:
    config = blog("eleventy", {"posts/t.md": "---\ntitle: T\n---\nt\n"}, posts="../blog")
    with caplog.at_level("WARNING", logger="pipeline.intake.permalinks"):
        assert url(config, "posts/t.md", {"permalink": "{% if x %}/a/{% endif %}"}) == \
            "https://www.example.com/posts/t/"
    [record] = caplog.records
    assert record.getMessage().endswith("/blog/posts/t.md: permalink '{% if x %}/a/{% endif %}' is a "
                                        "template, which is not run here; the URL is derived from the "
                                        "file path: check it, or set canonical_url:")


def test_astro_collection_entry_is_collection_and_slug(blog: Callable[..., Config]) -> None:
    """content/utils.ts: the entry's `slug:`, else each path segment slugged by github-slugger
    (`Release 2.0` -> `release-20`), `/index` dropped; a page in src/pages is its path."""
    config = blog("astro", {
        "astro.config.mjs": """
            import { defineConfig } from 'astro/config';
            export default defineConfig({ site: 'https://astro.example.dev', integrations: [] });
        """,
        "src/pages/blog/[...slug].astro": "---\n---\n",
    }, posts="../blog/src")
    assert url(config, "src/content/blog/my-first-post.md") == "https://astro.example.dev/blog/my-first-post/"
    assert url(config, "src/content/blog/Release 2.0.mdx") == "https://astro.example.dev/blog/release-20/"
    assert url(config, "src/content/blog/x.md", {"slug": "custom/path"}) == \
        "https://astro.example.dev/blog/custom/path/"
    assert url(config, "src/content/blog/2024/Nested/index.md") == "https://astro.example.dev/blog/2024/nested/"
    assert url(config, "src/pages/about/team.md") == "https://astro.example.dev/about/team/"
    assert site_config(config).notes == ()


def test_astro_starlight_docs_collection_is_the_site_root(blog: Callable[..., Config]) -> None:
    """Starlight serves src/content/docs/ at the root (tauri's and biome's blogs live there)."""
    config = blog("astro", {"astro.config.mjs": """
        import starlight from '@astrojs/starlight';
        export default { site: 'https://v2.tauri.example', integrations: [starlight({ title: 'T' })] };
    """}, posts="../blog/src/content/docs/blog")
    assert url(config, "src/content/docs/blog/tauri-2.0.mdx") == "https://v2.tauri.example/blog/tauri-20/"


# -- auto, errors, caching ------------------------------------------------------------------------

@pytest.mark.parametrize(("files", "generator"), [
    ({"hugo.toml": 'baseURL = "https://h.example/"\n'}, "hugo"),
    ({"config.toml": 'baseurl = "https://h.example/"\n'}, "hugo"),
    ({"_config.yml": "title: x\n"}, "jekyll"),
    ({"pelicanconf.py": "SITEURL = ''\n"}, "pelican"),
    ({".eleventy.js": "module.exports = {};\n"}, "eleventy"),
    ({"astro.config.mjs": "export default {};\n"}, "astro"),
])
def test_auto_detects_the_generator(blog: Callable[..., Config], files: dict[str, str],
                                    generator: str) -> None:
    config = blog("auto", files)
    assert site_config(config).generator == generator


def config_errors(blog: Callable[..., Config], *args: Any, **kwargs: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        blog(*args, **kwargs)
    return str(info.value).splitlines()


def test_auto_without_any_generator_names_site_root(blog: Callable[..., Config]) -> None:
    [line] = config_errors(blog, "auto", {"README.md": "# blog\n"})
    assert line.endswith("config.yaml:5: site.root: ../blog has no site generator config (hugo.toml, "
                         "_config.yml, pelicanconf.py, eleventy.config.js, astro.config.mjs); check "
                         "site.root or set site.generator")


def test_auto_with_two_generators_asks_which(blog: Callable[..., Config]) -> None:
    [line] = config_errors(blog, "auto", {"hugo.toml": "", "_config.yml": "title: x\n"})
    assert line.endswith("site.root: ../blog looks like a Hugo and a Jekyll site; set site.generator to "
                         "the one that builds it")


@pytest.mark.parametrize(("generator", "files", "expected"), [
    ("hugo", {"hugo.toml": 'baseURL = "https://x.example/"\n[permalinks]\nposts = "/:year/:nope/"\n'},
     "../blog/hugo.toml: permalinks.posts: ':nope' in '/:year/:nope/' is not a permalink attribute "
     "Hugo knows"),
    ("hugo", {"hugo.toml": 'baseURL = "https://x.example/\n'},
     "../blog/hugo.toml:1: not valid TOML"),
    ("hugo", {"README.md": "x\n"}, ":5: site.root: ../blog has no Hugo config (hugo.toml, hugo.yaml, "
     "hugo.json, config.toml, config.yaml, config.json or config/_default/); check site.root and "
     "site.generator"),
    ("jekyll", {"_config.yml": "permalink: /:year/:what/\n"},
     "../blog/_config.yml: permalink: ':what' in '/:year/:what/' is not a placeholder Jekyll knows"),
    ("jekyll", {"_config.yml": "url: [unclosed\n"}, "../blog/_config.yml:2: not valid YAML"),
    ("pelican", {"pelicanconf.py": "SITEURL = 'https://x.example'\nARTICLE_URL = '{slug\n"},
     "../blog/pelicanconf.py:2: not valid Python"),
    ("pelican", {"pelicanconf.py": "ARTICLE_URL = '{date:%Y}/{slug}/{date.__class__}'\n"},
     "../blog/pelicanconf.py: ARTICLE_URL: '{date:%Y}/{slug}/{date.__class__}' cannot be filled"),
])
def test_bad_generator_config_is_one_config_error_naming_the_file(
        blog: Callable[..., Config], generator: str, files: dict[str, str], expected: str) -> None:
    [line] = config_errors(blog, generator, files)
    assert expected in line, line
    assert "Traceback" not in line


def test_the_command_line_shows_a_bad_generator_config_in_one_line(blog: Callable[..., Config],
                                                                   run_cli: Callable[..., Any],
                                                                   tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        blog("jekyll", {"_config.yml": "permalink: /:year/:bogus/\n"})
    result = run_cli("--config", tmp_path / "project" / "config.yaml", "check", "--urls")
    assert result.returncode == 1
    assert result.stderr == ("error: ../blog/_config.yml: permalink: ':bogus' in '/:year/:bogus/' is not a "
                             "placeholder Jekyll knows (:year, :month, :day, :title, :slug, :categories, "
                             ":output_ext, ...)\n")


def test_a_missing_site_root_and_posts_outside_it_are_config_errors(blog: Callable[..., Config],
                                                                     tmp_path: Path) -> None:
    write(tmp_path / "blog", {"hugo.toml": 'baseURL = "https://x.example/"\n'})
    project = tmp_path / "project"
    project.mkdir()
    (project / "config.yaml").write_text("site:\n  name: B\n  url: https://x.example\n  generator: hugo\n"
                                         "  root: ../nowhere\nposts: posts\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"config.yaml:5: site.root: ../nowhere is not a folder"):
        load_config(project / "config.yaml")
    with pytest.raises(ConfigError, match=r"config.yaml:6: posts: ../elsewhere is not inside site.root "
                                          r"\(../blog\)"):
        blog("hugo", {}, posts="../elsewhere")


def test_generator_config_is_read_once_and_again_when_it_changes(blog: Callable[..., Config]) -> None:
    config = blog("hugo", HUGO_DEFAULT, posts="../blog/content")
    first = site_config(config)
    assert site_config(config) is first      # cached: render asks for every post
    hugo_toml = config.path("../blog/hugo.toml")
    hugo_toml.write_text('baseURL = "https://moved.example/"\n', encoding="utf-8")
    os.utime(hugo_toml, ns=(first.files[0].stat().st_mtime_ns + 10**9,) * 2)
    assert site_config(config) is not first
    assert url(config, "content/posts/a.md", {"title": "A"}) == "https://moved.example/posts/a/"


def test_a_post_outside_site_root_is_a_post_problem(blog: Callable[..., Config], tmp_path: Path) -> None:
    config = blog("hugo", HUGO_DEFAULT, posts="../blog/content")
    with pytest.raises(PermalinkError, match=r"the file is not inside site.root \(../blog\)"):
        post_url(config, slug="x", date=D, path=tmp_path / "elsewhere.md", meta={"title": "x"})
    assert issubclass(PermalinkError, PipelineError)


# -- the slugifiers, against the generators' own examples -----------------------------------------

def test_slugifiers_match_the_generators() -> None:
    assert hugo_sanitize("Vim (text editor)") == "vim-text-editor"          # helpers/url.go example
    assert hugo_sanitize("Social Media", lower=False) == "Social-Media"     # helpers/path.go example
    assert jekyll_slugify("The _config.yml file") == "the-config-yml-file"  # utils.rb examples
    assert jekyll_slugify("The _config.yml file", pretty=True) == "the-_config.yml-file"
    assert jekyll_slugify("The _config.yml file?", pretty=True, cased=True) == "The-_config.yml-file"
    assert pelican_slugify("Hello, World! <b>Bold</b> move") == "hello-world-bold-move"
    assert github_slug("Hello World!") == "hello-world" and github_slug("tauri-2.0") == "tauri-20"


# -- end to end: check --urls and the preview's footer --------------------------------------------

def test_check_urls_and_preview_footer_use_the_derived_url(project: Path,
                                                           run_cli: Callable[..., Any]) -> None:
    """config.yaml with site.generator + site.root + posts inside the blog: `check --urls` lists
    the Hugo URL, and the email's footer says "Originally published at" it."""
    shipped = run_cli("--config", project / "config.yaml", "check", "--urls")     # generator: none
    assert shipped.returncode == 0, shipped.stderr
    assert "Canonical URLs from site.url + site.permalink (/{slug}/); base " \
           "https://www.rtrwellnesscenter.com" in shipped.stdout
    assert "https://www.rtrwellnesscenter.com/mood-journal/" in shipped.stdout

    blog = project.parent / "blog"
    write(blog, {
        "hugo.toml": 'baseURL = "https://hugo.example.org/"\n[permalinks]\nposts = "/:year/:month/:slug/"\n',
        "content/posts/launch-day.md": """
            ---
            title: "Launch Day, At Last"
            date: 2024-03-05T09:00:00-05:00
            tags: [news]
            ---
            We launched today. Here is the story of the launch.
        """,
        "content/posts/bundle-post/index.md": """
            ---
            title: A Bundle
            slug: bundled
            date: 2024-04-01
            ---
            A page bundle, with its images beside it.
        """,
    })
    shutil.rmtree(project / "posts")
    cfg = (project / "config.yaml").read_text(encoding="utf-8")
    cfg = cfg.replace("  permalink: /{slug}/\n", "  generator: hugo\n  root: ../blog\n")
    cfg = cfg.replace("posts: posts/\n", "posts: ../blog/content/posts\n")
    (project / "config.yaml").write_text(cfg, encoding="utf-8")

    result = run_cli("--config", project / "config.yaml", "check", "--urls")
    assert result.returncode == 0, result.stderr
    assert "Canonical URLs from Hugo (../blog/hugo.toml); base https://hugo.example.org/" in result.stdout
    assert "https://hugo.example.org/2024/03/launch-day-at-last/" in result.stdout
    assert "https://hugo.example.org/2024/04/bundled/" in result.stdout
    assert "note: site.url is https://www.rtrwellnesscenter.com but Hugo publishes at " \
           "https://hugo.example.org/" in result.stderr

    result = run_cli("--config", project / "config.yaml", "preview", "--out", project / "out")
    assert result.returncode == 0, result.stderr
    text = (project / "out" / "launch-day" / "email.txt").read_text(encoding="utf-8")
    assert "Originally published at https://hugo.example.org/2024/03/launch-day-at-last/ on" in text
