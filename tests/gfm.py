"""Rendering markdown as GitHub does, to check what hostile text turns into.

GitHub renders comments and issues with cmark-gfm (the `cmarkgfm` bindings are GitHub's own fork of cmark, with
the table, strikethrough, autolink and tagfilter extensions), keeps the raw HTML its sanitizer allows (details,
summary, img, h3, a, ...: rendered here unsafe, so nothing is hidden), and then links, in the text outside code,
pre and links, `@user` / `@org/team` mentions and `#123` / `GH-123` issue references. `render` does the first
part; `Rendered` finds what the second part would link.
"""

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

import cmarkgfm
from cmarkgfm.cmark import Options

# GitHub's mention and reference patterns (html-pipeline's MentionFilter and issue references), as a superset:
# what they need right after the '@', '#' or 'GH-' is a letter or a digit.
MENTION = re.compile(r"@[A-Za-z0-9]")
REFERENCE = re.compile(r"(?i)(#|\bGH-)[0-9]")


def render(markdown: str) -> str:
    return cmarkgfm.github_flavored_markdown_to_html(markdown, options=Options.CMARK_OPT_UNSAFE)


@dataclass
class Rendered:
    html: str
    tags: list[str] = field(default_factory=list)            # start tags, in order
    links: list[str] = field(default_factory=list)           # href and src values
    linkable_text: list[str] = field(default_factory=list)   # text GitHub scans for mentions and references
    text: str = ""                                           # all text, entities decoded

    @property
    def mentions(self) -> list[str]:
        return [m.group() for t in self.linkable_text for m in MENTION.finditer(t)]

    @property
    def references(self) -> list[str]:
        return [m.group() for t in self.linkable_text for m in REFERENCE.finditer(t)]


class _Collector(HTMLParser):
    SKIP = {"code", "pre", "a"}

    def __init__(self, out: Rendered):
        super().__init__(convert_charrefs=True)
        self.out, self.skip_depth, self.parts = out, 0, []

    def handle_starttag(self, tag, attrs):
        self.out.tags.append(tag)
        self.out.links += [v for k, v in attrs if k in ("href", "src") and v is not None]
        if tag in self.SKIP:
            self.skip_depth += 1

    def handle_endtag(self, tag):
        if tag in self.SKIP and self.skip_depth:
            self.skip_depth -= 1

    def handle_data(self, data):
        self.parts.append(data)
        if not self.skip_depth:
            self.out.linkable_text.append(data)


def github(markdown: str) -> Rendered:
    out = Rendered(render(markdown))
    collector = _Collector(out)
    collector.feed(out.html)
    collector.close()
    out.text = "".join(collector.parts)
    return out


def visible(text: str) -> str:
    """Rendered text as a reader sees it: zero-width joiners are invisible."""
    return text.replace("\u200d", "")
