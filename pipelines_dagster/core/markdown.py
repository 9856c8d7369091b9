"""Markdown for GitHub from untrusted text: unit paths, account names, warnings quoting HCL, error messages,
Terraform output. Whatever the text holds, it renders as that text: no HTML, no markup, no links, no mentions.

GitHub renders with cmark-gfm (tables, autolinks for URLs, `www.` and e-mail addresses), then links `@user` and
`#123` in the HTML's text outside code. So, per context:

- `text`: inline text (paragraphs, list items, table cells): `&`, `<` and `>` become entities, markdown's
  significant punctuation is backslash-escaped (pipes too: a cell never splits), line breaks become spaces, and a
  block marker at the start (`- `, `1. `, `# `) is escaped;
- `code`: an inline code span whose fence is longer than any run of backticks inside, so no backtick ends it;
- `block`: a fenced code block, fenced likewise (CommonMark: a closing fence is at least as long as the opening);
- `html_text`: text inside raw HTML (`<summary>`, which cmark-gfm passes through without markdown: a backslash
  would show), the same characters as entities.

Mentions, issue references and e-mail autolinks are broken with a zero-width joiner after the `@`, `#` or `GH-`
(invisible, and GitHub's patterns need a letter or digit there); URLs and `www.` lose their autolink through an
escaped `:` before `//` (or after `mailto`/`xmpp`) and `.` after `www`. Only what could act is escaped, so paths,
file:line references and snake_case names read as they are. Text inside code needs none of it: GitHub neither
links nor mentions there.
"""

import re
from urllib.parse import quote

ZERO_WIDTH_JOINER = "\u200d"

_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
# Markdown-significant wherever they stand: emphasis, code, links and images, tables, strikethrough, GitHub's math.
_ALWAYS = frozenset("\\`*[]|~$")
_CANDIDATES = re.compile(r"[&<>\\`*\[\]|~$_#:.]")  # the characters _acts may escape
_SPACE = re.compile(r"\s+")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
_LINKABLE = re.compile(r"(?i)([@#]|\bGH-)(?=[a-z0-9])")  # @user, @org/team, user@example.com, #123, GH-123
_ORDERED_MARKER = re.compile(r"^(\d{1,9})([.)])")
_BACKTICKS = re.compile(r"`+")
_LINE_ENDING = re.compile(r"\r\n|\r|\n")


def _plain(value) -> str:
    """The value as text without control characters (NUL and the like), None as empty."""
    return _CONTROL.sub("\ufffd", "" if value is None else str(value))


def _one_line(value) -> str:
    return _SPACE.sub(" ", _plain(value)).strip()


def _unlink(s: str) -> str:
    return _LINKABLE.sub(r"\1" + ZERO_WIDTH_JOINER, s)


def _acts(s: str, i: int) -> bool:
    """Whether the character at `i` could start markup or an autolink (and so needs escaping)."""
    ch = s[i]
    if ch in _ALWAYS:
        return True
    if ch == "_":  # emphasis, except between two letters or digits (snake_case), where CommonMark ignores it
        return not (0 < i < len(s) - 1 and s[i - 1].isalnum() and s[i + 1].isalnum())
    if ch == "#":  # a heading at the start; references elsewhere are broken by _unlink
        return i == 0
    if ch == ":":  # an autolink's scheme
        return s.startswith("//", i + 1) or s[:i].lower().endswith(("mailto", "xmpp"))
    if ch == ".":  # www.example.com
        return s[max(0, i - 3):i].lower() == "www" and (i == 3 or not s[i - 4].isalnum())
    return False


def _escape(value, mark) -> str:
    s = _unlink(_one_line(value))

    def one(m: re.Match) -> str:
        ch = m.group()
        return _ENTITIES.get(ch) or (mark(ch) if _acts(s, m.start()) else ch)

    return _CANDIDATES.sub(one, s)


def text(value) -> str:
    """Inline text that renders as itself, on one line (safe in paragraphs, list items and table cells)."""
    escaped = _escape(value, lambda ch: "\\" + ch)
    if escaped[:1] in ("-", "+", "="):  # list item or setext marker at the start of a list item
        return "\\" + escaped
    return _ORDERED_MARKER.sub(r"\1\\\2", escaped)


def code(value, *, table: bool = False) -> str:
    """An inline code span holding `value` (line endings as spaces). `table=True` escapes pipes, as GFM tables need even
    inside code."""
    s = _LINE_ENDING.sub(" ", _plain(value))  # as CommonMark does inside code spans; no blank line can end it
    if not s:
        return ""
    fence = "`" * (max((len(run) for run in _BACKTICKS.findall(s)), default=0) + 1)
    # CommonMark strips one space on each side when both are there: pad when the text starts or ends with a
    # backtick (it would join the fence) or with a space (it would be stripped)
    pad = " " if s[0] in "` " or s[-1] in "` " else ""
    if table:
        s = s.replace("|", "\\|")
    return f"{fence}{pad}{s}{pad}{fence}"


def block(value) -> str:
    """A fenced code block holding `value` verbatim."""
    s = _plain(value).replace("\r\n", "\n").replace("\r", "\n").strip("\n")
    fence = "`" * max(3, max((len(run) for run in _BACKTICKS.findall(s)), default=0) + 1)
    return f"{fence}\n{s}\n{fence}"


def html_text(value) -> str:
    """Text inside raw HTML such as `<summary>`: entities for HTML's special characters and for markdown's."""
    return _escape(value, lambda ch: f"&#{ord(ch)};")


def link(label, url: str) -> str:
    """A link to one of our own pages (the Dagster run): the label escaped, the URL percent-encoded where
    markdown would end it."""
    return f"[{text(label)}]({quote(url, safe=':/?#@!$&*+,;=%~-._')})"


def details(summary_html: str, body: str) -> str:
    """A collapsed section: `summary_html` already escaped (html_text), `body` markdown. The blank lines end the
    raw HTML, so the body is rendered as markdown."""
    return f"<details><summary>{summary_html}</summary>\n\n{body}\n\n</details>\n"
