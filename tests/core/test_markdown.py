"""Text from the repository renders on GitHub as itself: no HTML, no markup, no links, no mentions. Checked by
rendering with cmark-gfm (GitHub's renderer) and GitHub's mention and reference patterns (tests/gfm.py)."""

import pytest

from pipelines_dagster.core import markdown as md
from tests.gfm import github, visible

HOSTILE = [
    '</details><h3>pwned</h3><img src="https://evil.example/x.png">',
    "<script>alert(1)</script><!-- hidden --> <a href='https://evil.example'>x</a>",
    "**bold** _em_ ~~strike~~ [link](https://evil.example) ![img](https://evil.example/i.png)",
    "[ref]: https://evil.example \"title\"",
    "cc @alice @acme/admins @bob. please; fixes #123, GH-42 and acme/other#7",
    "https://evil.example/path www.evil.example mail@evil.example <https://evil.example> xmpp:a@b.example",
    "`code` ``` ```` `` x",
    "| a | b |\n|---|---|\n| c | d |",
    "$x^2$ and $$y$$ :smile: :+1:",
    "back\\slash \\| \\\\| \\`",
    "- item",
    "1. item",
    "2) item",
    "# heading",
    "> quote",
    "+ plus",
    "=== setext",
    "    indented code",
    "&amp; &lt;b&gt; &#60;i&#62;",
    "line one\n\n# heading\n\n<div>block</div>\n\n---",
    'get_env("X", "</details><h3>x</h3><img src=x>")',
]

TABLE = "| h |\n|---|\n| {} |"


def one_line(s: str) -> str:
    return " ".join(s.split())


def assert_inert(rendered, tags: list[str], expected_text: str):
    assert rendered.tags == tags, rendered.html
    assert rendered.links == [], rendered.html
    assert rendered.mentions == [] and rendered.references == [], rendered.html
    assert expected_text in visible(rendered.text), rendered.html


@pytest.mark.parametrize("hostile", HOSTILE)
def test_inline_text_renders_as_itself_in_paragraphs_list_items_and_cells(hostile):
    expected = one_line(hostile)
    assert_inert(github(md.text(hostile)), ["p"], expected)
    assert_inert(github(f"- {md.text(hostile)}\n- second"), ["ul", "li", "li"], expected)
    assert_inert(github(TABLE.format(md.text(hostile))), ["table", "thead", "tr", "th", "tbody", "tr", "td"],
                 expected)


@pytest.mark.parametrize("hostile", HOSTILE)
def test_code_spans_hold_any_text_in_paragraphs_and_cells(hostile):
    expected = hostile.replace("\n", " ")
    rendered = github(f"unit {md.code(hostile)} planned")
    assert_inert(rendered, ["p", "code"], expected)
    cell = github(TABLE.format(md.code(hostile, table=True)))
    assert_inert(cell, ["table", "thead", "tr", "th", "tbody", "tr", "td", "code"], expected)


@pytest.mark.parametrize("hostile", HOSTILE)
def test_summaries_in_raw_html_show_the_text(hostile):
    doc = md.details(md.html_text(hostile) + ": plan", md.block("output"))
    rendered = github(doc)
    assert_inert(rendered, ["details", "summary", "pre", "code"], one_line(hostile) + ": plan")


@pytest.mark.parametrize("hostile", HOSTILE)
def test_fenced_blocks_hold_any_output_verbatim(hostile):
    output = f"{hostile}\n```\n````\nafter the fences\n~~~\n</details>"
    rendered = github(md.details("unit", md.block(output)) + "\nafter the details")
    assert rendered.tags == ["details", "summary", "pre", "code", "p"], rendered.html
    assert rendered.links == [] and rendered.mentions == [] and rendered.references == []
    assert output in rendered.text


def test_ordinary_paths_and_messages_stay_readable_in_the_markdown_itself():
    for plain in ("prod/us-east-1/app", "accounts.yml:13: account 'noemail': email is missing",
                  'live/root.hcl:3: get_env("TF_VAR_region") has no default', "null_resource.item (count 2)"):
        assert md.text(plain) == plain and md.html_text(plain) == plain
    assert md.code("prod/us-east-1/app") == "`prod/us-east-1/app`"
    assert md.code("prod/us-east-1/app", table=True) == "`prod/us-east-1/app`"
    assert md.text("_envcommon/app.hcl") == "\\_envcommon/app.hcl"  # an underscore that could open emphasis


def test_escapes_in_the_markdown_text():
    assert md.text("<img src=x>") == "&lt;img src=x&gt;"
    assert md.text("a|b") == "a\\|b"
    assert md.text("*x* _y_ [z](u) ~s~ $m$") == "\\*x\\* \\_y\\_ \\[z\\](u) \\~s\\~ \\$m\\$"
    assert md.text("snake_case __init__") == "snake_case \\_\\_init\\_\\_"
    assert md.text("@alice and #12") == "@\u200dalice and #\u200d12"
    assert md.text("https://evil.example www.evil.example mailto:a") == \
        "https\\://evil.example www\\.evil.example mailto\\:a"
    assert md.text("- a") == "\\- a" and md.text("1. a") == "1\\. a" and md.text("# h") == "\\# h"
    assert md.text("two\nlines") == "two lines"
    assert md.html_text('<b a="1">') == '&lt;b a="1"&gt;'
    assert md.html_text("_x_ | `y`") == "&#95;x&#95; &#124; &#96;y&#96;"


def test_code_fences_are_longer_than_any_backtick_run():
    assert md.code("a`b") == "``a`b``"
    assert md.code("`x`") == "`` `x` ``"
    assert md.code("a``b`") == "``` a``b` ```"
    assert md.code("a|b", table=True) == "`a\\|b`"
    assert md.block("plain") == "```\nplain\n```"
    assert md.block("x\n`````\ny") == "``````\nx\n`````\ny\n``````"


def test_our_links_keep_their_url_and_escape_their_label():
    rendered = github(md.link("Dagster run", "http://ui.example/runs/a b(c)"))
    assert rendered.links == ["http://ui.example/runs/a%20b%28c%29"] and visible(rendered.text).strip() == "Dagster run"
