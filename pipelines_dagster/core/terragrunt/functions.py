"""The functions of Terraform and Terragrunt that static evaluation knows.

FUNCTIONS are Terraform's pure functions, called with known arguments (LENIENT ones also with unknown ones);
TREE_FUNCTIONS look at where they are evaluated and at the tree: Terragrunt's path functions,
read_terragrunt_config(), find_in_parent_folders(), and the file readers (whose contents are not evaluated).
Regular expressions run on RE2, in time linear in pattern and text.
"""

import posixpath
import re
from collections.abc import Callable
from typing import Any

from .paths import ROOT, TERRAGRUNT_FILE, rel_dir, relpath, resolve_path, to_abs
from .values import MAX_VALUE_SIZE, EvalError, Unknown, shorten, to_string

MAX_REGEX_WORK = 20_000_000  # RE2 program size x text length (RE2 is linear in both)

# what a function's failure raises: the call's value becomes an Unknown saying why
FUNCTION_ERRORS = (TypeError, ValueError, IndexError, KeyError, ArithmeticError, AttributeError, StopIteration)


def failure(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _too_large(size: int) -> None:
    if size > MAX_VALUE_SIZE:
        raise ValueError(f"the result would be {size:,} characters (the limit is {MAX_VALUE_SIZE:,})")


def _format(fmt: str, *args) -> str:
    out, i, arg_i = [], 0, 0
    while i < len(fmt):
        ch = fmt[i]
        if ch == "%" and i + 1 < len(fmt):
            verb = fmt[i + 1]
            if verb == "%":
                out.append("%")
            elif verb in "sdvq":
                value = args[arg_i]
                arg_i += 1
                text = to_string(value)
                if isinstance(text, Unknown):
                    raise ValueError(text.reason)
                out.append(f'"{text}"' if verb == "q" else text)
            else:
                raise ValueError(f"format verb %{verb}")
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def _merge(*maps):
    out = {}
    for m in maps:
        if not isinstance(m, dict):
            raise TypeError("merge() takes maps")
        out.update(m)
    return out


def _flatten(items) -> list:
    """Elements of nested lists, in order (iteratively: values are at most MAX_VALUE_DEPTH deep anyway)."""
    out = []
    stack = [iter(items)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def _join(sep: str, *lists) -> str:
    items: list[str] = []
    for x in _flatten(list(lists)):
        item = to_string(x)
        if isinstance(item, Unknown):
            raise ValueError(item.reason)
        items.append(item)
    _too_large(sum(map(len, items)) + len(sep) * max(len(items) - 1, 0))
    return sep.join(items)


def _re2(pattern: str, text: str):
    """Terraform's regular expressions are RE2's: compiled by RE2, whose matching time is linear."""
    import re2

    options = re2.Options()
    options.log_errors = False
    try:
        compiled = re2.compile(pattern, options)
    except re2.error as exc:
        message = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise ValueError(f"invalid regular expression {shorten(pattern)}: {message}") from None
    if compiled.programsize * max(len(text), 1) > MAX_REGEX_WORK:
        raise ValueError(f"regular expression {shorten(pattern)} on {len(text):,} characters is too costly to "
                         "evaluate")
    return compiled


def _regex(pattern: str, text: str):
    """Terraform's regex(): the match, a list of its groups, or a map of its named groups."""
    compiled = _re2(pattern, text)
    match = compiled.search(text)
    if match is None:
        raise ValueError(f"pattern {shorten(pattern)} does not match")
    if compiled.groupindex:
        return match.groupdict()
    if compiled.groups:
        return list(match.groups())
    return match.group(0)


_TEMPLATE_REFERENCE = re.compile(r"\$(?:\$|\{(\w+)\}|(\w+))")  # Go's Regexp.Expand: $$, ${name}, $name, $1


def _replace(s: str, old: str, new: str) -> str:
    """Terraform's replace(): a substring, or a regular expression between slashes with $1 / ${name} in `new`."""
    if not (old.startswith("/") and old.endswith("/") and len(old) > 1):
        count = s.count(old) if old else len(s) + 1
        _too_large(len(s) + count * (len(new) - len(old)))
        return s.replace(old, new)
    compiled = _re2(old[1:-1], s)
    written = [0]

    def expand(match) -> str:
        def group(ref) -> str:
            if ref.group(0) == "$$":
                return "$"
            name = ref.group(1) or ref.group(2)
            try:
                return match.group(int(name) if name.isdigit() else name) or ""
            except (IndexError, KeyError):  # Go expands a group that does not exist to nothing
                return ""
        text = _TEMPLATE_REFERENCE.sub(group, new)
        written[0] += len(text)
        if len(s) + written[0] > MAX_VALUE_SIZE:
            raise ValueError(f"the result would be longer than {MAX_VALUE_SIZE:,} characters")
        return text
    return compiled.sub(expand, s)


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "dirname": lambda p: posixpath.dirname(p.rstrip("/")) if p.rstrip("/") else "/",
    "basename": lambda p: posixpath.basename(p.rstrip("/")),
    "abspath": posixpath.normpath,
    "format": _format,
    "join": _join,
    "concat": lambda *lists: [x for lst in lists for x in lst],
    "flatten": _flatten,
    "merge": _merge,
    "lookup": lambda m, k, *default: m[k] if k in m or not default else default[0],
    "coalesce": lambda *a: next(x for x in a if x not in (None, "")),
    "lower": str.lower,
    "upper": str.upper,
    "trimspace": str.strip,
    "trimprefix": lambda s, p: s[len(p):] if s.startswith(p) else s,
    "trimsuffix": lambda s, p: s[:-len(p)] if p and s.endswith(p) else s,
    "trim": lambda s, chars: s.strip(chars),
    "replace": _replace,
    "regex": _regex,
    "substr": lambda s, offset, length: s[offset:] if length == -1 else s[offset:offset + length],
    "compact": lambda items: [x for x in items if x not in ("", None)],
    "reverse": lambda items: list(reversed(items)),
    "slice": lambda items, start, end: items[start:end],
    "contains": lambda items, value: value in items,
    "keys": lambda m: sorted(m),
    "values": lambda m: [m[k] for k in sorted(m)],
    "split": lambda sep, s: s.split(sep),
    "element": lambda lst, i: lst[int(i) % len(lst)],
    "length": len,
    "tostring": to_string,
    "startswith": lambda s, p: s.startswith(p),
    "endswith": lambda s, p: s.endswith(p),
    "strcontains": lambda s, p: p in s,
    "tolist": list,
    "toset": lambda v: sorted(set(v)),
    "tomap": dict,
}
LENIENT = frozenset({"merge", "concat", "lookup", "tolist", "toset", "tomap", "flatten"})
# functions whose result can be as large as all their arguments together (the others' results are bounded by one
# argument's size, or checked before they are built: join, replace)
COMBINING = frozenset({"concat", "merge", "format"})


# ---- functions that look at the scope they are evaluated in and at the tree: called as fn(ev, scope, args), where
# `ev` is the Interpreter, with unknown arguments too


def _scope_fn(body):
    def wrapper(ev, scope, args: list):
        if any(isinstance(a, Unknown) for a in args):
            return next(a for a in args if isinstance(a, Unknown))
        return body(ev, scope, args)
    return wrapper


def _find_in_parent_folders(ev, scope, args: list):
    if any(isinstance(a, Unknown) for a in args):
        return next(a for a in args if isinstance(a, Unknown))
    wanted = args[0] if args and args[0] else TERRAGRUNT_FILE
    current = rel_dir(scope.config_path)
    while current:
        current = rel_dir(current)
        try:
            candidate = resolve_path(current, wanted)
        except EvalError:
            break
        if ev.inputs.file(candidate) is not None:
            return to_abs(candidate)
        if not current:
            break
    if len(args) > 1:
        return args[1]
    raise EvalError(f"find_in_parent_folders({wanted!r}): no {wanted} in the parent folders of "
                    f"{scope.config_path}")


def _include_dir(scope, args: list) -> str:
    selected = scope.selected_include(args)
    return rel_dir(selected) if selected is not None else rel_dir(scope.config_path)


def _read_config(ev, scope, args: list):
    if not args or not isinstance(args[0], str):
        return Unknown("read_terragrunt_config() path")
    target = ev.inputs.terragrunt_config(resolve_path(scope.config_dir, args[0]))
    config = ev.read_config(target)
    if config is None:
        return args[1] if len(args) > 1 else Unknown(f"{target} does not exist")
    return config


def _file_fn(ev, scope, args: list):
    return Unknown("file contents are not evaluated")


def _fileexists(ev, scope, args: list):
    return ev.inputs.file(resolve_path(scope.config_dir, args[0])) is not None


def _get_env(ev, scope, args: list):
    name = args[0] if args else "?"
    return Unknown(f"get_env({name!r}) is only known at run time")


TREE_FUNCTIONS = {
    "find_in_parent_folders": _find_in_parent_folders,
    "get_terragrunt_dir": _scope_fn(lambda ev, scope, args: to_abs(rel_dir(scope.config_path))),
    "get_original_terragrunt_dir": _scope_fn(lambda ev, scope, args: to_abs(rel_dir(scope.config_path))),
    "get_parent_terragrunt_dir": _scope_fn(lambda ev, scope, args: to_abs(_include_dir(scope, args))),
    "path_relative_to_include": _scope_fn(
        lambda ev, scope, args: relpath(rel_dir(scope.config_path), _include_dir(scope, args))),
    "path_relative_from_include": _scope_fn(
        lambda ev, scope, args: relpath(_include_dir(scope, args), rel_dir(scope.config_path))),
    "get_repo_root": _scope_fn(lambda ev, scope, args: ROOT),
    "get_path_to_repo_root": _scope_fn(lambda ev, scope, args: relpath("", rel_dir(scope.config_path))),
    "get_path_from_repo_root": _scope_fn(lambda ev, scope, args: relpath(rel_dir(scope.config_path), "")),
    "read_terragrunt_config": _scope_fn(_read_config),
    "file": _file_fn, "templatefile": _file_fn, "filebase64": _file_fn, "sops_decrypt_file": _file_fn,
    "read_tfvars_file": _file_fn,
    "fileexists": _scope_fn(_fileexists),
    "get_env": _get_env,
    "yamldecode": lambda ev, scope, args: Unknown("decoded file contents are not evaluated"),
    "jsondecode": lambda ev, scope, args: Unknown("decoded file contents are not evaluated"),
}
