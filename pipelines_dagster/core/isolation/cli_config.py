"""The Terraform CLI configuration of later commands: the deployment's, without its credentials."""

import json
import re
from collections.abc import Iterator

# What the CLI configuration of commands after init keeps (matched as Terraform does, ignoring case): no
# `credentials`, `credentials_helper`, nor any setting this list does not know.
CLI_CONFIG_KEPT = frozenset({"provider_installation", "disable_checkpoint", "disable_checkpoint_signature", "host",
                             "providers"})

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_HEREDOC = re.compile(r"<<-?([A-Za-z_][A-Za-z0-9_-]*)[ \t]*\r?\n")
_SCALAR = re.compile(r"[^\s,\]}#]+")


class _Syntax(ValueError):
    pass


def _skip_blank(text: str, i: int) -> int:
    """Past whitespace and comments (`#`, `//`, `/* */`)."""
    while i < len(text):
        if text[i] in " \t\r\n":
            i += 1
        elif text.startswith(("#", "//"), i):
            end = text.find("\n", i)
            i = len(text) if end < 0 else end + 1
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise _Syntax("an unterminated comment")
            i = end + 2
        else:
            break
    return i


def _string_end(text: str, i: int) -> int:
    """Past the string starting at `i` (HCL1: `${...}` inside may hold quotes)."""
    depth, i = 0, i + 1
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if text.startswith("${", i):
            depth, i = depth + 1, i + 2
            continue
        if depth and c == "}":
            depth -= 1
        elif c == '"':
            if not depth:
                return i + 1
            i = _string_end(text, i)
            continue
        elif c == "\n" and not depth:
            break
        i += 1
    raise _Syntax("an unterminated string")


def _heredoc_end(text: str, i: int) -> int:
    match = _HEREDOC.match(text, i)
    if match is None:
        raise _Syntax("a malformed heredoc")
    indented, i = match.group().startswith("<<-"), match.end()
    while i < len(text):
        end = text.find("\n", i)
        end = len(text) if end < 0 else end
        line = text[i:end].rstrip("\r")
        if (line.strip() if indented else line) == match.group(1):
            return end
        i = end + 1
    raise _Syntax("an unterminated heredoc")


def _value_end(text: str, i: int) -> int:
    """Past the value (a string, heredoc, block, list or scalar) starting at `i`."""
    if text.startswith('"', i):
        return _string_end(text, i)
    if text.startswith("<<", i):
        return _heredoc_end(text, i)
    if not text.startswith(("{", "["), i):
        match = _SCALAR.match(text, i)
        if match is None:
            raise _Syntax("a missing value")
        return match.end()
    closing: list[str] = []
    while i < len(text):
        c = text[i]
        if c in "{[":
            closing.append("}" if c == "{" else "]")
            i += 1
        elif c in "}]":
            if not closing or closing.pop() != c:
                raise _Syntax(f"an unbalanced {c!r}")
            i += 1
            if not closing:
                return i
        elif c == '"':
            i = _string_end(text, i)
        elif text.startswith("<<", i):
            i = _heredoc_end(text, i)
        elif text.startswith(("#", "//", "/*"), i):
            i = _skip_blank(text, i)
        else:
            i += 1
    raise _Syntax("an unterminated block")


def _top_level_items(text: str) -> Iterator[tuple[str, int, int]]:
    """(key, start, end) of every top-level item of an HCL1 file: `key = value`, `key "label"... { ... }`."""
    i = _skip_blank(text, 0)
    while i < len(text):
        start = i
        if text.startswith('"', i):
            i = _string_end(text, i)
            key = text[start + 1:i - 1]
        else:
            word = _WORD.match(text, i)
            if word is None:
                raise _Syntax(f"an unexpected {text[i]!r}")
            key, i = word.group(), word.end()
        i = _skip_blank(text, i)
        while True:  # labels
            if text.startswith('"', i):
                i = _skip_blank(text, _string_end(text, i))
            elif (label := _WORD.match(text, i)) is not None:
                i = _skip_blank(text, label.end())
            else:
                break
        if text.startswith("=", i):
            i = _skip_blank(text, i + 1)
        elif not text.startswith("{", i):
            raise _Syntax(f"no value for {key!r}")
        end = _value_end(text, i)
        yield key, start, end
        i = _skip_blank(text, end)
        if text.startswith(",", i):
            i = _skip_blank(text, i + 1)


def cli_config_without_credentials(text: str) -> str:
    """A Terraform CLI configuration (HCL1, or JSON) with only its CLI_CONFIG_KEPT settings, each as written.

    The file is the deployment's own, so a careful scan of its top-level items is enough: strings (with HCL1's
    nested interpolation), heredocs, comments and brackets are followed exactly, and anything else is an error
    (ValueError), never a guess."""
    if text.lstrip().startswith("{"):
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("cannot read it: not a JSON object")
        return json.dumps({k: v for k, v in data.items() if k.lower() in CLI_CONFIG_KEPT}, indent=2) + "\n"
    try:
        kept = [text[start:end] for key, start, end in _top_level_items(text) if key.lower() in CLI_CONFIG_KEPT]
    except _Syntax as exc:
        raise ValueError(f"cannot read it: {exc}") from None
    return "".join(f"{item}\n" for item in kept)


