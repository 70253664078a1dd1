"""Template leftovers (Liquid, Nunjucks, Hugo shortcodes) and MDX in post bodies -> Markdown."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from pipeline.intake import front_matter
from pipeline.intake.leftovers import clean_body

CORPUS = Path(__file__).resolve().parent / "corpus"
DELIMITERS = re.compile(r"\{%|%\}|\{\{<|>\}\}")
# The grammar the loader renders bodies with (posts.py): what it calls code is what counts as code.
MARKDOWN = MarkdownIt("commonmark", {"html": True}).enable("table")


def clean(body: str, *, first_line: int = 1, mdx: bool = False) -> tuple[str, list[str]]:
    return clean_body(body, first_line=first_line, mdx=mdx)


def outside_code(markdown: str) -> list[str]:
    """The text of `markdown` a reader sees as prose or raw HTML (not code), as markdown-it reads it."""
    texts = []
    for token in MARKDOWN.parse(markdown):
        if token.type == "inline":
            texts += [child.content for child in token.children or [] if child.type != "code_inline"]
        elif token.type == "html_block":
            texts.append(token.content)
    return texts


# ---- plain Markdown is untouched


def test_a_body_without_template_syntax_comes_back_as_it_is():
    body = "# Hi\r\n\r\nSome *text* with {braces} and 100% of <b>HTML</b>.\r\n"
    assert clean(body) == (body, [])


def test_a_markdown_body_keeps_jsx_looking_text():
    body = "Use <Foo /> or {x} in React.\n"
    assert clean(body) == (body, [])


# ---- Liquid / Nunjucks


def test_highlight_becomes_a_fenced_code_block():
    body = "Before\n\n{% highlight ruby linenos %}\ndef x\n  `{{ y }}`\nend\n{% endhighlight %}\n\nAfter\n"
    assert clean(body) == ("Before\n\n```ruby\ndef x\n  `{{ y }}`\nend\n```\n\nAfter\n", [])


def test_highlight_in_a_list_keeps_its_indent_and_unwraps_raw():
    body = "1. Run:\n\n   {% highlight sh %}\n   {% raw %}echo {{ x }}{% endraw %}\n   {% endhighlight %}\n"
    assert clean(body) == ("1. Run:\n\n   ```sh\n   echo {{ x }}\n   ```\n", [])


def test_highlight_of_code_holding_a_fence_gets_a_longer_fence():
    body = "{% highlight markdown %}\n```\nx\n```\n{% endhighlight %}\n"
    assert clean(body) == ("````markdown\n```\nx\n```\n````\n", [])


def test_raw_keeps_its_content_verbatim_and_unprocessed():
    body = "Write {% raw %}`{{ page.title }}` or {% if %}{% endraw %} in a layout.\n"
    assert clean(body) == ("Write `{{ page.title }}` or {% if %} in a layout.\n", [])


def test_raw_around_a_fence_goes_with_its_lines():
    body = "Layout:\n\n{% raw %}\n```liquid\n{{ content }}\n```\n{% endraw %}\n\nDone\n"
    assert clean(body) == ("Layout:\n\n```liquid\n{{ content }}\n```\n\nDone\n", [])


def test_raw_inside_code_is_unwrapped_keeping_its_content():
    body = ("```liquid\n{% raw %}\n{% for p in site.posts %}{{ p.title }}{% endfor %}\n{% endraw %}\n```\n\n"
            "Inline `{% raw %}{{ x }}{% endraw %}` too.\n")
    assert clean(body) == ("```liquid\n{% for p in site.posts %}{{ p.title }}{% endfor %}\n```\n\n"
                           "Inline `{{ x }}` too.\n", [])


def test_template_syntax_in_fences_and_code_spans_is_left_alone():
    body = ("Use `{% include x.html %}` and ``{{< figure >}}``.\n\n"
            "```html\n{% include toc.html %}\n{{ site.url }} {{< youtube x >}}\n```\n\n"
            "~~~\n{% comment %}x{% endcomment %}\n~~~\n")
    assert clean(body) == (body, [])


def test_include_is_dropped_with_a_warning_naming_the_file_line():
    body = "Intro\n\n{% include toc.html %}\n\nText {%- include note.html param=\"a\" -%} here.\n"
    assert clean(body, first_line=40) == ("Intro\n\n\nText  here.\n", [
        "line 42: dropped {% include toc.html %} (a Liquid tag the email cannot show)",
        'line 44: dropped {%- include note.html param="a" -%} (a Liquid tag the email cannot show)'])


def test_a_line_holding_only_dropped_tags_goes_whole():
    body = "- one\n{% if site.two %}\n- two\n{% endif %}\n- three\n"
    assert clean(body) == ("- one\n- two\n- three\n", [
        "line 2: dropped {% if site.two %} (a Liquid tag the email cannot show)"])


def test_comment_is_dropped_silently():
    body = "A\n{% comment %}\nNote to self {{ x }}\n{% endcomment %}\nB {% comment %}x{% endcomment %}C\n"
    assert clean(body) == ("A\nB C\n", [])


def test_nunjucks_comment_is_dropped_silently():
    assert clean("A {# to do #}B\n") == ("A B\n", [])


def test_site_baseurl_in_a_link_leaves_the_path():
    body = ("[About]({{ site.baseurl }}/about) [Home]({{ site.url }}{{ site.baseurl }}/)"
            " [CV]({{ \"/cv.pdf\" | relative_url }}) ![Logo]({{ '/logo.png' | absolute_url }})\n"
            '<img src="{{ site.baseurl }}/a.png">\n')
    assert clean(body) == ("[About](/about) [Home](/) [CV](/cv.pdf) ![Logo](/logo.png)\n"
                           '<img src="/a.png">\n', [])


def test_a_link_to_an_unresolvable_template_keeps_its_text():
    body = ("See [v3.4.0]({% link _posts/2017-01-18-v3.md %}) and [v3.5]({% post_url 2017-06-15-v3-5 %})"
            " and [#1339]({{ site.repository }}/issues/1339).\n")
    text, warnings = clean(body)
    assert text == "See v3.4.0 and v3.5 and #1339.\n"
    assert warnings == [
        "line 1: unlinked [v3.4.0]({% link _posts/2017-01-18-v3.md %}) (its address is a template the email "
        "cannot resolve; the text is kept)",
        "line 1: unlinked [v3.5]({% post_url 2017-06-15-v3-5 %}) (its address is a template the email cannot "
        "resolve; the text is kept)",
        "line 1: unlinked [#1339]({{ site.repository }}/issues/1339) (its address is a template the email "
        "cannot resolve; the text is kept)"]


def test_link_and_post_url_outside_links_are_dropped_with_a_warning():
    assert clean("Read {% post_url 2010-07-21-name %} now.\n") == ("Read  now.\n", [
        "line 1: dropped {% post_url 2010-07-21-name %} (a Liquid link the email cannot resolve)"])


def test_a_link_definition_to_a_template_is_dropped_or_resolved():
    body = "Text [one] [two].\n\n[one]: {% post_url 2013-05-06-x %}\n[two]: {{ site.baseurl }}/two/\n"
    assert clean(body) == ("Text [one] [two].\n\n[two]: /two/\n", [
        "line 3: dropped the link definition [one]: {% post_url 2013-05-06-x %} (its address is a template "
        "the email cannot resolve)"])


def test_other_variables_and_tags_are_dropped_with_a_shortened_warning():
    body = "Hi {{ page.author | upcase }}!\n{% assign x = 1 %}\n" + "{% mytag " + "a" * 80 + " %}\n"
    text, warnings = clean(body, first_line=3)
    assert text == "Hi !\n"
    assert warnings == [
        "line 3: dropped {{ page.author | upcase }} (a Liquid variable the email cannot show)",
        f"line 5: dropped {{% mytag {'a' * 50}… (a Liquid tag the email cannot show)"]


def test_a_loop_is_dropped_whole():
    body = ("Fixes:\n\n{% for issue in issue_numbers %}\n"
            "[#{{ issue }}]: {{ site.repository }}/issues/{{ issue }}\n{% endfor %}\nThanks\n")
    assert clean(body) == ("Fixes:\n\nThanks\n", [
        "line 3: dropped {% for issue in issue_numbers %} ... {% endfor %} "
        "(a Liquid loop the email cannot run)"])


def test_nested_loops_and_captures_are_dropped_whole():
    body = "{% for a in b %}{% for c in d %}{{ c }}{% endfor %}{{ a }}{% endfor %}after\n"
    assert clean(body) == ("after\n", [
        "line 1: dropped {% for a in b %} ... {% endfor %} (a Liquid loop the email cannot run)"])
    assert clean("x {% capture t %}hidden{% endcapture %} y\n") == ("x  y\n", [
        "line 1: dropped {% capture t %} ... {% endcapture %} (a Liquid block the email cannot run)"])


def test_an_unclosed_block_drops_only_its_tag():
    assert clean("{% raw %}never closed {{ x }}\n") == ("never closed \n", [
        "line 1: dropped {% raw %} (no {% endraw %} follows)",
        "line 1: dropped {{ x }} (a Liquid variable the email cannot show)"])


def test_windows_line_ends_count_as_one_line():
    assert clean("a\r\n{% include x %}\r\nb {{ y }}\r\n", first_line=3) == ("a\nb \n", [
        "line 4: dropped {% include x %} (a Liquid tag the email cannot show)",
        "line 5: dropped {{ y }} (a Liquid variable the email cannot show)"])


def test_a_site_link_tag_with_text_and_address_becomes_a_link():
    body = '- {% indieweblink "Andy Bell", "https://piccalil.li/" %}\n- {% indieweblink "Docs", "/docs/" %}\n'
    assert clean(body) == ("- [Andy Bell](https://piccalil.li/)\n- [Docs](/docs/)\n", [
        "line 1: rendered 2 {% indieweblink %} tags as links (a tag of the site's own, read as a text and "
        "an address)"])


def test_liquid_video_tags_become_links():
    assert clean("{% youtube dQw4w9WgXcQ %}\n")[0] == "[YouTube video](https://www.youtube.com/watch?v=dQw4w9WgXcQ)\n"


def test_unclosed_and_stray_delimiters_are_dropped():
    text, warnings = clean("50%} done {% oops\n\nnext >}} end\n")
    assert text == "50 done  oops\n\nnext  end\n"
    assert warnings == [
        "line 1: dropped a stray %} (no {% opens it)",
        "line 1: dropped {% (a Liquid tag with no %} to end it)",
        "line 3: dropped a stray >}} (no {{< opens it)"]


# ---- Hugo shortcodes


def test_figure_becomes_an_image_with_its_caption():
    body = '{{< figure src="/img/a b.png" alt="A [test]" caption="The **caption**" title="T" >}}\n'
    assert clean(body) == ("![A \\[test\\]](/img/a%20b.png)\n\n*The **caption***\n", [])


def test_figure_without_alt_uses_its_title():
    assert clean('{{< figure src="happy.png" title="Happy" >}}\n') == ("![Happy](happy.png)\n", [])


@pytest.mark.parametrize(("shortcode", "markdown"), [
    ("{{< youtube w7Ft2ymGmfc >}}", "[YouTube video](https://www.youtube.com/watch?v=w7Ft2ymGmfc)"),
    ('{{< youtube id="BwFBYLa5mgY" class="v" title="T" >}}',
     "[YouTube video](https://www.youtube.com/watch?v=BwFBYLa5mgY)"),
    ("{{< vimeo 146022717 >}}", "[Vimeo video](https://vimeo.com/146022717)"),
    ('{{< tweet user="SanDiegoZoo" id="1453110110599868418" >}}',
     "[Post by @SanDiegoZoo on X](https://x.com/SanDiegoZoo/status/1453110110599868418)"),
    ('{{< x user="SanDiegoZoo" id="1453110110599868418" >}}',
     "[Post by @SanDiegoZoo on X](https://x.com/SanDiegoZoo/status/1453110110599868418)"),
    ("{{< tweet 877500564405444608 >}}", "[Post on X](https://twitter.com/i/status/877500564405444608)"),
    ("{{< gist spf13 7896402 >}}", "[Gist spf13/7896402](https://gist.github.com/spf13/7896402)"),
])
def test_embeds_become_links(shortcode, markdown):
    assert clean(f"Watch:\n\n{shortcode}\n") == (f"Watch:\n\n{markdown}\n", [])


def test_highlight_shortcode_becomes_a_fenced_code_block():
    body = '{{< highlight go "linenos=table" >}}\nfunc main() {}\n{{< / highlight >}}\n'
    assert clean(body) == ("```go\nfunc main() {}\n```\n", [])


def test_ref_in_a_link_leaves_its_path_with_a_warning():
    body = 'See [Kotlin]({{< relref "kotlin-meet-grpc" >}}) and [FAQ]({{<ref faq.md >}}).\n'
    assert clean(body, first_line=9) == ("See [Kotlin](kotlin-meet-grpc) and [FAQ](faq.md).\n", [
        'line 9: replaced {{< relref "kotlin-meet-grpc" >}} by the path kotlin-meet-grpc (check the link)',
        "line 9: replaced {{<ref faq.md >}} by the path faq.md (check the link)"])


def test_a_link_to_an_unknown_shortcode_keeps_its_text():
    body = "Requires [a build](https://github.com/grpc/grpc/blob/{{< param grpc_vers.core >}}/README.md).\n"
    assert clean(body) == ("Requires a build.\n", [
        "line 1: unlinked [a build](https://github.com/grpc/grpc/blob/{{< param grpc_… (its address is a "
        "template the email cannot resolve; the text is kept)"])


def test_other_shortcodes_are_dropped_with_a_warning():
    body = "A {{< instagram BWNjjyYFxVx >}}\n\nB {{< param version >}}.\n"
    assert clean(body, first_line=2) == ("A \n\nB .\n", [
        "line 2: dropped {{< instagram BWNjjyYFxVx >}} (a Hugo shortcode the email cannot show)",
        "line 4: dropped {{< param version >}} (a Hugo shortcode the email cannot show)"])


def test_a_paired_unknown_shortcode_keeps_its_content():
    body = ("{{< notice info >}}\nRead **this**.\n{{< /notice >}}\n\n"
            '{{% alert title="Note" %}}Hi{{% /alert %}}\n')
    assert clean(body) == ("Read **this**.\n\nHi\n", [
        "line 1: removed {{< notice info >}} (a Hugo shortcode the email cannot show), kept its content",
        'line 5: removed {{% alert title="Note" %}} (a Hugo shortcode the email cannot show), '
        "kept its content"])


def test_escaped_shortcodes_show_as_shortcodes():
    body = ("```go-html-template\n{{</* figure src=\"x.png\" */>}}\n{{%/* notice */%}}\n```\n\n"
            "Write {{</* youtube ID */>}} or `{{</* gist u id */>}}`.\n")
    assert clean(body) == ('```go-html-template\n{{< figure src="x.png" >}}\n{{% notice %}}\n```\n\n'
                           "Write `{{< youtube ID >}}` or `{{< gist u id >}}`.\n", [])


# ---- MDX


def test_imports_and_exports_go():
    body = ('import { Tabs, TabItem } from "@astrojs/starlight/components";\n'
            "import Chart from '../components/Chart.astro'\n"
            "import {\n  a,\n  b,\n} from 'x';\n"
            "export const meta = {\n  title: 'Hi',\n  tags: ['a', 'b'],\n};\n"
            "export default function Layout({ children }) {\n  return <main>{children}</main>\n}\n\n"
            "# Hello\n\nimport this into your project, they said.\n")
    assert clean(body, mdx=True) == ("\n# Hello\n\nimport this into your project, they said.\n", [])


def test_imports_and_exports_in_code_stay():
    body = "```js\nimport x from 'y'\nexport default x\n<Foo />\n{a}\n```\n"
    assert clean(body, mdx=True) == (body, [])


def test_jsx_comments_go_silently():
    assert clean("A {/* note */} B\n\n{/*\n  multi\n*/}\nC\n", mdx=True) == ("A  B\n\nC\n", [])


def test_components_go_keeping_their_content_with_one_warning():
    body = ('<Callout type="warning">\nSome **bold** text.\n</Callout>\n\n'
            '<Tweet id="1453110110599868418" />\n\nPress <Kbd>Ctrl</Kbd>, then <Kbd>C</Kbd>.\n\n'
            '<Callout>\nAgain\n</Callout>\n')
    assert clean(body, first_line=5, mdx=True) == (
        "\nSome **bold** text.\n\n\n\n\nPress Ctrl, then C.\n\n\nAgain\n\n", [
            "line 5: removed JSX components: Callout, Tweet, Kbd (the email cannot show them; "
            "their text is kept)"])


def test_component_content_is_dedented_so_it_is_not_code():
    body = ('<Tabs>\n  <TabItem label="npm">\n    Run it:\n\n    ```sh\n    npm i {{ x }}\n    ```\n'
            "  </TabItem>\n</Tabs>\n")
    text, warnings = clean(body, mdx=True)
    assert text == "\n\nRun it:\n\n```sh\nnpm i {{ x }}\n```\n\n\n"
    assert warnings == ["line 1: removed JSX components: Tabs, TabItem (the email cannot show them; "
                        "their text is kept)"]


def test_image_components_become_images():
    body = ('import hero from "./hero.png";\nimport { Image } from "astro:assets";\n\n'
            '<Image src={hero} alt="The hero" width={800} />\n\n'
            "<Image src=\"/a.png\" alt={'A'} />\n"
            '<img src={"/b.png"} alt="B">\n'
            '<Figure src="/c.png" alt="C" />\n\n'
            'Inline <Image src={hero.src} alt="small" /> here.\n')
    assert clean(body, mdx=True) == (
        "\n\n![The hero](./hero.png)\n\n\n\n![A](/a.png)\n\n\n![B](/b.png)\n\n\n![C](/c.png)\n\n\n"
        "Inline ![small](./hero.png) here.\n", [])


def test_an_image_component_in_html_gets_blank_lines_around_it():
    body = ('import shot from "../shot.png"\n\n'
            '<div align="center">\n    <Image src={shot} alt="Shot" />\n</div>\n')
    assert clean(body, mdx=True) == ('\n<div align="center">\n\n   ![Shot](../shot.png)\n\n</div>\n', [])


def test_an_image_with_an_unknown_src_is_dropped_with_a_warning():
    assert clean("<Image src={props.hero} alt=\"x\" />\n", mdx=True) == ("", [
        'line 1: dropped <Image src={props.hero} alt="x" /> (an image whose src is not a path)'])


def test_expressions_are_dropped_with_a_warning():
    body = "# {frontmatter.title}\n\nBy {props.author}, {' '}today{\"!\"}\n"
    assert clean(body, first_line=3, mdx=True) == ("# \n\nBy ,  today!\n", [
        "line 3: dropped {frontmatter.title} (a JSX expression the email cannot show)",
        "line 5: dropped {props.author} (a JSX expression the email cannot show)"])


def test_html_stays_but_loses_expression_attributes():
    body = ('<div style={{ display: "flex" }} className="row">\n<a href={url}>x</a>\n</div>\n')
    assert clean(body, mdx=True) == ('<div className="row">\n<a>x</a>\n</div>\n', [
        "line 2: dropped href={url} from <a> (a JSX expression the email cannot show)"])


def test_warnings_after_mdx_name_the_file_lines():
    body = 'import a from "b"\nimport {\n x\n} from "y"\n\n<Note>\n  text {{ page.x }}\n</Note>\n\nmore\n'
    assert clean(body, first_line=10, mdx=True) == ("\n\ntext \n\n\nmore\n", [
        "line 15: removed JSX components: Note (the email cannot show them; their text is kept)",
        "line 16: dropped {{ page.x }} (a Liquid variable the email cannot show)"])


def test_fragments_go_silently():
    assert clean("<>\nText <>here</>\n</>\n", mdx=True) == ("\nText here\n\n", [])


def test_multi_line_self_closing_component_goes():
    body = 'Update:\n\n<CommandTabs\n  npm="npm i a"\n  yarn="yarn add a"\n/>\n\nDone\n'
    assert clean(body, mdx=True)[0] == "Update:\n\n\n\nDone\n"


# ---- robustness

# Text made of the characters and constructs template syntax, Markdown and MDX are built of.
PIECES = [*"{}%<>/*#-=\"' \nab`~![]()|:.1\t", "{%", "%}", "{{", "}}", "{{<", ">}}", "{{%", "%}}", "{{</*",
          "*/>}}", "{% raw %}", "{% endraw %}", "{% highlight x %}", "{% endhighlight %}", "{% comment %}",
          "{% endcomment %}", "{% for x %}", "{% endfor %}", "{{< figure src=a caption=b >}}", "{{< x >}}",
          "{{< /x >}}", "{{% x %}}", "{{% /x %}}", "{{< highlight go >}}", "{{< /highlight >}}", "<Tag>",
          "</Tag>", '<Tag\n a="b"\n>', "<Image src={a} />", "<img src={a}>", "{a}", "{/*", "*/}", "```",
          "~~~", "````", "import a from 'b'\n", "export const a = {\n", "](", "[a](", "[a]: ",
          "{{ site.baseurl }}", "{{ '/a' | relative_url }}", "{% link a %}", "{% post_url b %}", "    ",
          "\n\n", "<div>", "</div>", '<a href="', "<!--", "-->", "<http://x>", "- ", "> ", "1. ", "# ",
          "---\n", "<pre>", '{% indieweblink "a", "/b" %}']
texts = st.lists(st.sampled_from(PIECES), max_size=50).map("".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=texts, mdx=st.booleans(), first_line=st.integers(1, 99))
def test_any_text_gives_markdown_without_template_delimiters_outside_code(body, mdx, first_line):
    text, warnings = clean(body, first_line=first_line, mdx=mdx)
    assert isinstance(text, str)
    assert all(re.match(r"line \d+: |\d+ more ", w) for w in warnings), warnings
    if "{% raw %}" not in body:         # raw content is shown verbatim, as the author asked
        assert not [t for t in outside_code(text) if DELIMITERS.search(t)], text


@pytest.mark.parametrize("mdx", [False, True])
def test_hostile_input_is_cleaned_in_about_linear_time(mdx):
    # Each of these repeated to 200 KB would make a naive scan, or a backtracking regex, quadratic.
    pieces = ["{% ", "{{< ", "{{% ", "{{ ", "{% raw %}", "{% for x %}", "{{< a%d >}}", "<A x={", "<A b=\"",
              "[x](", "[", "`", "``", "{/*", "import {", "{", "<", "-->", "<!--", "](({{"]
    for piece in pieces:
        body = (piece * (200_000 // len(piece) + 1))[:200_000]
        text, warnings = clean(body, mdx=mdx)
        assert isinstance(text, str) and len(warnings) <= 30
    mixed = "".join(f"{p}{n}" for n, p in enumerate(pieces * 2000))[:200_000]
    assert isinstance(clean(mixed, mdx=mdx)[0], str)


def test_warnings_are_capped_with_a_count():
    text, warnings = clean("{{ a }}\n" * 100)
    assert text == ""
    assert len(warnings) == 30 and warnings[-1] == "71 more template leftovers like these (not listed)"


# ---- the corpus of real posts


def _corpus_files() -> list[Path]:
    if not CORPUS.is_dir():
        return []
    return sorted(path for path in CORPUS.rglob("*")
                  if path.suffix in (".md", ".markdown", ".mdx") and "_site" not in path.parts)


@pytest.mark.skipif(not _corpus_files(), reason="no tests/corpus")
def test_corpus_posts_come_out_without_leftovers_outside_code():
    survivors = []
    for path in _corpus_files():
        try:
            split = front_matter.split(path.read_text(encoding="utf-8"))
        except front_matter.FrontMatterError:
            continue
        text, _ = clean(split.body, first_line=split.first_line, mdx=path.suffix == ".mdx")
        survivors += [(path.name, t[:80]) for t in outside_code(text) if DELIMITERS.search(t)]
    assert survivors == []
